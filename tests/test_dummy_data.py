"""Dummy data from metadata alone, and the dtypes shared with the data loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from lomas.core.metadata import Metadata
from lomas.server.data.dtypes import coerce_frame, datetime_columns, pandas_dtypes
from lomas.server.dummy import make_dummy_frame

METADATA = Metadata.model_validate(
    {
        "max_ids": 1,
        "rows": 1000,
        "row_privacy": True,
        "columns": {
            "name": {"type": "string"},
            "nickname": {"type": "string", "nullable": True},
            "colour": {"type": "string", "cardinality": 3, "categories": ["red", "green", "blue"]},
            "size": {"type": "string", "cardinality": 2, "categories": ["S", "L"], "nullable": True},
            "age": {"type": "int", "precision": 32, "lower": 18, "upper": 20},
            "income": {"type": "int", "lower": -1000, "upper": 10**12, "nullable": True},
            "level": {"type": "int", "precision": 32, "cardinality": 3, "categories": [1, 5, 9]},
            "zone": {"type": "int", "cardinality": 2, "categories": [100, 200], "nullable": True},
            "ratio": {"type": "float", "precision": 32, "lower": 0.0, "upper": 0.1},
            # Holds one float32 (0.099999994); rounding to float32 lands on either side of it.
            "narrow": {"type": "float", "precision": 32, "lower": 0.09999999, "upper": 0.1},
            "score": {"type": "float", "lower": -2.5, "upper": 7.25, "nullable": True},
            # Without clipping, float64 rounding of the convex combination leaves this single value.
            "point": {"type": "float", "lower": 1e-300, "upper": 1e-300},
            "active": {"type": "boolean"},
            "verified": {"type": "boolean", "nullable": True},
            "born": {"type": "datetime", "lower": "1990-01-01T00:00:00.5", "upper": "1990-01-01T00:00:05"},
            "seen": {"type": "datetime", "lower": "2020-01-01", "upper": "2024-12-31", "nullable": True},
        },
    }
)
NULLABLE = [name for name, column in METADATA.columns.items() if column.nullable]
NOT_NULLABLE = [name for name, column in METADATA.columns.items() if not column.nullable]
BIG = 10_000
SINGLE_VALUED = ["narrow", "point"]


@pytest.fixture(scope="module")
def big_frame() -> pd.DataFrame:
    return make_dummy_frame(METADATA, BIG, seed=7)


def test_pandas_dtypes_of_every_column_type() -> None:
    assert pandas_dtypes(METADATA) == {
        "name": "string",
        "nickname": "string",
        "colour": "string",
        "size": "string",
        "age": "Int32",
        "income": "Int64",
        "level": "Int32",
        "zone": "Int64",
        "ratio": "float32",
        "narrow": "float32",
        "score": "float64",
        "point": "float64",
        "active": "boolean",
        "verified": "boolean",
        "born": "datetime64[ns]",
        "seen": "datetime64[ns]",
    }
    assert datetime_columns(METADATA) == ["born", "seen"]


@pytest.mark.parametrize("nb_rows", [1, 3, 1234])
def test_row_count_columns_and_dtypes(nb_rows: int) -> None:
    frame = make_dummy_frame(METADATA, nb_rows, seed=1)
    assert len(frame) == nb_rows
    assert list(frame.columns) == list(METADATA.columns)
    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == pandas_dtypes(METADATA)


def test_nullable_columns_have_about_ten_percent_missing(big_frame: pd.DataFrame) -> None:
    missing = big_frame.isna().mean()
    for name in NULLABLE:
        assert 0.07 < missing[name] < 0.13, name
    for name in NOT_NULLABLE:
        assert missing[name] == 0, name


def test_categorical_columns_are_uniform_over_their_categories(big_frame: pd.DataFrame) -> None:
    for name in ["colour", "size", "level", "zone"]:
        categories = METADATA.columns[name].categories
        counts = big_frame[name].value_counts(dropna=True)
        assert set(counts.index) == set(categories), name
        expected = counts.sum() / len(categories)
        assert (abs(counts - expected) < 0.1 * expected).all(), name


def test_int_columns_cover_inclusive_bounds(big_frame: pd.DataFrame) -> None:
    assert set(big_frame["age"]) == {18, 19, 20}
    income = big_frame["income"].dropna()
    assert income.min() >= -1000 and income.max() <= 10**12
    assert income.max() > 10**11  # spread over the whole range, not stuck near a bound


def test_float_columns_within_bounds(big_frame: pd.DataFrame) -> None:
    ratio = big_frame["ratio"]
    # float32 rounding of 0.1 exceeds the float64 bound 0.1: values must still stay inside.
    assert (ratio >= 0.0).all() and (ratio.astype("float64") <= 0.1).all()
    narrow = big_frame["narrow"].astype("float64")
    assert ((narrow >= 0.09999999) & (narrow <= 0.1)).all()
    score = big_frame["score"].dropna()
    assert score.min() >= -2.5 and score.max() <= 7.25
    assert score.min() < -2.0 and score.max() > 6.75
    assert score.nunique() > BIG * 0.8  # continuous, not rounded
    assert (big_frame["point"] == 1e-300).all()


def test_string_columns_are_short_random_strings(big_frame: pd.DataFrame) -> None:
    names = big_frame["name"]
    assert names.str.len().between(1, 16).all()
    assert names.str.fullmatch(r"[a-z]+").all()
    assert names.nunique() > BIG * 0.99


def test_boolean_columns_take_both_values(big_frame: pd.DataFrame) -> None:
    assert 0.45 < big_frame["active"].mean() < 0.55
    assert set(big_frame["verified"].dropna()) == {True, False}


def test_datetime_columns_within_bounds_at_second_resolution(big_frame: pd.DataFrame) -> None:
    # Whole seconds inside [00:00:00.5, 00:00:05]: 00:00:00 is below the lower bound.
    assert set(big_frame["born"]) == set(pd.date_range("1990-01-01 00:00:01", periods=5, freq="s"))
    seen = big_frame["seen"].dropna()
    assert seen.min() >= pd.Timestamp("2020-01-01") and seen.max() <= pd.Timestamp("2024-12-31")
    assert seen.min() < pd.Timestamp("2020-03-01") and seen.max() > pd.Timestamp("2024-10-01")


def test_aware_datetime_bounds_give_naive_utc() -> None:
    metadata = Metadata.model_validate(
        {
            "max_ids": 1,
            "rows": 1,
            "row_privacy": True,
            "columns": {
                "t": {
                    "type": "datetime",
                    "lower": "2020-01-01T02:00:00+02:00",
                    "upper": "2020-01-01T00:00:10Z",
                }
            },
        }
    )
    times = make_dummy_frame(metadata, 1000, seed=0)["t"]
    assert set(times) == set(pd.date_range("2020-01-01", periods=11, freq="s"))


def test_same_seed_same_frame_other_seed_other_frame() -> None:
    first = make_dummy_frame(METADATA, 500, seed=42)
    assert_frame_equal(first, make_dummy_frame(METADATA, 500, seed=42))
    other = make_dummy_frame(METADATA, 500, seed=43)
    for name in METADATA.columns:
        if name not in SINGLE_VALUED:
            assert not first[name].equals(other[name]), name


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_written_and_reloaded_dummy_frame_coerces_back_identically(tmp_path: Path, suffix: str) -> None:
    """The data loader's path (file -> coerce_frame) gives the dummy generator's dtypes and values."""
    frame = make_dummy_frame(METADATA, 2000, seed=3)
    path = tmp_path / f"data.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
        reloaded = pd.read_csv(path)
    else:
        frame.to_parquet(path)
        reloaded = pd.read_parquet(path)
    assert_frame_equal(coerce_frame(reloaded, METADATA), frame)


def test_coerce_frame_restricts_orders_and_casts() -> None:
    metadata = Metadata.model_validate(
        {
            "max_ids": 1,
            "rows": 2,
            "row_privacy": True,
            "columns": {
                "when": {"type": "datetime", "lower": "2000-01-01", "upper": "2030-01-01"},
                "n": {"type": "int", "precision": 32, "lower": 0, "upper": 10, "nullable": True},
                "flag": {"type": "boolean", "nullable": True},
                "x": {"type": "float", "precision": 32, "lower": 0, "upper": 1},
            },
        }
    )
    raw = pd.DataFrame(
        {
            "extra": ["dropped", "too"],
            "x": ["0.5", "1"],  # numbers as text
            "flag": [True, None],
            "n": [3.0, np.nan],
            "when": ["2021-05-01T12:00:00+02:00", "2021-05-02"],
        }
    )
    coerced = coerce_frame(raw, metadata)
    expected = pd.DataFrame(
        {
            "when": pd.to_datetime(["2021-05-01 10:00:00", "2021-05-02 00:00:00"]),
            "n": pd.array([3, None], dtype="Int32"),
            "flag": pd.array([True, None], dtype="boolean"),
            "x": np.array([0.5, 1.0], dtype="float32"),
        }
    )
    assert_frame_equal(coerced, expected)


def test_coerce_frame_reads_non_iso_dates_of_one_format() -> None:
    metadata = Metadata.model_validate(
        {
            "max_ids": 1,
            "rows": 2,
            "row_privacy": True,
            "columns": {"when": {"type": "datetime", "lower": "2000-01-01", "upper": "2030-01-01"}},
        }
    )
    coerced = coerce_frame(pd.DataFrame({"when": ["05/01/2021 10:30", "12/31/2021 23:00"]}), metadata)
    assert coerced["when"].tolist() == [pd.Timestamp("2021-05-01 10:30"), pd.Timestamp("2021-12-31 23:00")]


def test_coerce_frame_names_missing_columns() -> None:
    frame = make_dummy_frame(METADATA, 5, seed=0).drop(columns=["age", "seen"])
    with pytest.raises(ValueError, match="missing") as error:
        coerce_frame(frame, METADATA)
    assert "age" in str(error.value) and "seen" in str(error.value)
    assert "colour" not in str(error.value)


@pytest.mark.parametrize(
    ("column", "bad_value"),
    [
        ("age", "secret-4711"),
        ("age", 2.5),
        ("age", 2**40),  # beyond Int32
        ("score", "secret-4711"),
        ("active", "secret-4711"),
        ("born", "secret-4711"),
    ],
)
def test_coerce_frame_names_uncastable_column_without_quoting_values(column: str, bad_value: object) -> None:
    frame = make_dummy_frame(METADATA, 5, seed=0).astype(object)
    frame.loc[2, column] = bad_value
    with pytest.raises(ValueError, match="cannot be cast") as error:
        coerce_frame(frame, METADATA)
    message = str(error.value)
    assert column in message
    assert str(bad_value) not in message  # private values must not leak through error messages
    other_columns = [name for name in METADATA.columns if name != column]
    assert not any(f"{name} (" in message for name in other_columns)
