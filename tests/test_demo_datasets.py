"""The bundled demo datasets agree with their metadata, and the demo catalog is consistent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from pandas.testing import assert_frame_equal
from sklearn.datasets import load_iris

from lomas.core.metadata import (
    CATEGORICAL_COLUMNS,
    BooleanMetadata,
    DatetimeMetadata,
    FloatMetadata,
    IntCategoricalMetadata,
    IntMetadata,
    Metadata,
    StrCategoricalMetadata,
    StrMetadata,
)
from lomas.server.data.dtypes import coerce_frame, pandas_dtypes
from lomas.server.demo import make_patients
from lomas.server.demo.catalog import DemoDataset, demo_datasets, demo_grants

DATASETS = {dataset.name: dataset for dataset in demo_datasets()}


def load_metadata(dataset: DemoDataset) -> Metadata:
    return Metadata.model_validate(yaml.safe_load(dataset.metadata_path.read_text()))


def load_frame(dataset: DemoDataset) -> pd.DataFrame:
    return coerce_frame(pd.read_csv(dataset.data_path), load_metadata(dataset))


def test_catalog_lists_the_three_demo_datasets_as_csv_files() -> None:
    assert list(DATASETS) == ["PENGUIN", "IRIS", "PATIENTS"]
    for dataset in DATASETS.values():
        assert dataset.file_format == "csv"
        assert dataset.data_path.is_file() and dataset.metadata_path.is_file()
    assert DATASETS["PENGUIN"].data_path.parts[-3:] == ("palmerpenguins", "data", "penguins.csv")


@pytest.mark.parametrize("name", list(DATASETS))
def test_data_file_matches_its_metadata(name: str) -> None:
    dataset = DATASETS[name]
    metadata = load_metadata(dataset)
    raw = pd.read_csv(dataset.data_path)
    frame = coerce_frame(raw, metadata)
    assert list(raw.columns) == list(metadata.columns)  # no column left out of the metadata
    assert {col: str(dtype) for col, dtype in frame.dtypes.items()} == pandas_dtypes(metadata)
    assert metadata.rows == len(frame)
    for column_name, column in metadata.columns.items():
        values = frame[column_name]
        # Demo metadata declares nullable exactly where the data has missing values.
        assert values.isna().any() == column.nullable, column_name
        present = values.dropna()
        if isinstance(column, CATEGORICAL_COLUMNS):
            assert set(present) == set(column.categories), column_name
        elif isinstance(column, (IntMetadata, FloatMetadata, DatetimeMetadata)):
            lower, upper = column.lower, column.upper
            if isinstance(column, DatetimeMetadata):
                lower, upper = pd.Timestamp(lower), pd.Timestamp(upper)
            assert present.min() >= lower and present.max() <= upper, column_name


def test_penguin_categories_and_missing_values_are_the_real_ones() -> None:
    metadata = load_metadata(DATASETS["PENGUIN"])
    assert metadata.censor_dims is False and metadata.max_ids == 1 and metadata.row_privacy
    frame = load_frame(DATASETS["PENGUIN"])
    assert frame["sex"].value_counts(dropna=False).to_dict() == {"male": 168, "female": 165, pd.NA: 11}
    assert frame["species"].value_counts().to_dict() == {"Adelie": 152, "Gentoo": 124, "Chinstrap": 68}
    assert frame["island"].value_counts().to_dict() == {"Biscoe": 168, "Dream": 124, "Torgersen": 52}
    measures = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    assert frame[measures].isna().sum().tolist() == [2, 2, 2, 2]


def test_iris_csv_is_scikit_learn_iris() -> None:
    bunch = load_iris(as_frame=True)
    frame = load_frame(DATASETS["IRIS"])
    np.testing.assert_array_equal(frame.iloc[:, :4].to_numpy(), bunch.data.to_numpy())
    assert frame["species"].tolist() == bunch.target_names[bunch.target].tolist()
    assert load_metadata(DATASETS["IRIS"]).censor_dims is False


def test_patients_exercise_every_column_type() -> None:
    metadata = load_metadata(DATASETS["PATIENTS"])
    kinds = {type(column) for column in metadata.columns.values()}
    assert kinds == {
        StrMetadata,
        StrCategoricalMetadata,
        IntMetadata,
        IntCategoricalMetadata,
        FloatMetadata,
        BooleanMetadata,
        DatetimeMetadata,
    }
    assert metadata.censor_dims is True
    assert not any(column.private_id for column in metadata.columns.values())


def test_patients_csv_is_what_the_seeded_generator_writes() -> None:
    metadata = load_metadata(DATASETS["PATIENTS"])
    generated = make_patients.make_patients(np.random.default_rng(make_patients.SEED), make_patients.NB_ROWS)
    assert_frame_equal(load_frame(DATASETS["PATIENTS"]), coerce_frame(generated, metadata))


def test_bundled_files_are_small() -> None:
    for dataset in (DATASETS["IRIS"], DATASETS["PATIENTS"]):
        assert dataset.data_path.stat().st_size < 100_000
        assert dataset.metadata_path.stat().st_size < 10_000


def test_grants_cover_the_expected_users_and_known_datasets() -> None:
    grants = demo_grants()
    for user, dataset, epsilon, delta in grants:
        assert dataset in DATASETS, dataset
        assert epsilon > 0 and 0 <= delta < 1, user
    assert len({(user, dataset) for user, dataset, _, _ in grants}) == len(grants)
    expected = {
        ("Dr. Antartica", "PENGUIN", 10.0, 0.005),
        ("Tintin", "PENGUIN", 10.0, 0.005),
        ("Tintin", "IRIS", 10.0, 0.005),
        ("Milou", "IRIS", 1.0, 0.001),
        ("Dr. House", "PATIENTS", 5.0, 0.001),
        ("BirthdayGirl", "PATIENTS", 10.0, 0.005),
    }
    assert expected <= set(grants)
