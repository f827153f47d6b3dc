"""Dummy datasets generated from public metadata alone (DESIGN.md 2.7: they cost nothing).

This is not DP noise, so numpy's generator is fine: the same seed gives the same frame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lomas.core.metadata import (
    AnyColumn,
    BooleanMetadata,
    DatetimeMetadata,
    FloatMetadata,
    IntCategoricalMetadata,
    IntMetadata,
    Metadata,
    Precision,
    StrCategoricalMetadata,
    StrMetadata,
)
from lomas.server.data.dtypes import column_dtype

NULL_FRACTION = 0.1
STRING_LENGTH = 8
_LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
_NS_PER_SECOND = 10**9


def _random_strings(rng: np.random.Generator, nb_rows: int) -> np.ndarray:
    codes = rng.choice(_LETTERS, size=(nb_rows, STRING_LENGTH))
    return codes.view(f"S{STRING_LENGTH}").ravel().astype(f"U{STRING_LENGTH}")


def _float32_bounds(column: FloatMetadata) -> tuple[np.float32, np.float32]:
    """The outermost float32 values inside [lower, upper] (the bounds may fall between float32s)."""
    lower, upper = np.float32(column.lower), np.float32(column.upper)
    # Compare as Python floats: numpy 2 would compare a float32 with a Python float in float32.
    if float(lower) < column.lower:
        lower = np.nextafter(lower, np.float32(np.inf))
    if float(upper) > column.upper:
        upper = np.nextafter(upper, np.float32(-np.inf))
    return lower, upper


def _uniform_floats(rng: np.random.Generator, column: FloatMetadata, nb_rows: int) -> np.ndarray:
    u = rng.random(nb_rows)
    # Unlike `lower + u * (upper - lower)`, the convex combination cannot overflow for finite bounds;
    # rounding may still step just outside them, hence the clip.
    values = (1.0 - u) * column.lower + u * column.upper
    if column.precision == Precision.SINGLE:
        return np.clip(values.astype(np.float32), *_float32_bounds(column))
    return np.clip(values, column.lower, column.upper)


def _uniform_datetimes(rng: np.random.Generator, column: DatetimeMetadata, nb_rows: int) -> np.ndarray:
    """Whole seconds within the bounds, as naive UTC like the data loader holds datetimes."""
    # Timestamp.value is nanoseconds since the epoch (UTC for aware bounds, as-is for naive ones).
    lower_s = -(-pd.Timestamp(column.lower).value // _NS_PER_SECOND)
    upper_s = pd.Timestamp(column.upper).value // _NS_PER_SECOND
    return rng.integers(lower_s, upper_s, size=nb_rows, endpoint=True).astype("datetime64[s]")


def _column_values(rng: np.random.Generator, column: AnyColumn, nb_rows: int) -> np.ndarray:
    match column:
        case StrMetadata():
            return _random_strings(rng, nb_rows)
        case StrCategoricalMetadata() | IntCategoricalMetadata():
            return np.asarray(column.categories)[rng.integers(column.cardinality, size=nb_rows)]
        case IntMetadata():
            return rng.integers(column.lower, column.upper, size=nb_rows, endpoint=True)
        case FloatMetadata():
            return _uniform_floats(rng, column, nb_rows)
        case BooleanMetadata():
            return rng.random(nb_rows) < 0.5
        case DatetimeMetadata():
            return _uniform_datetimes(rng, column, nb_rows)
    raise TypeError(f"Unknown column metadata type: {type(column).__name__}")


def _dummy_column(rng: np.random.Generator, column: AnyColumn, nb_rows: int) -> pd.Series:
    series = pd.Series(_column_values(rng, column, nb_rows)).astype(column_dtype(column))
    if column.nullable:
        series = series.mask(rng.random(nb_rows) < NULL_FRACTION)
    return series


def make_dummy_frame(metadata: Metadata, nb_rows: int, seed: int) -> pd.DataFrame:
    """A frame of `nb_rows` random rows honouring the metadata's types, bounds, categories and nulls.

    Columns come in metadata order with dtypes `pandas_dtypes(metadata)`; about 10% of the values of
    nullable columns are missing, non-nullable columns have none.
    """
    rng = np.random.default_rng(seed)
    columns = metadata.columns.items()
    return pd.DataFrame({name: _dummy_column(rng, column, nb_rows) for name, column in columns})
