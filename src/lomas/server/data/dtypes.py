"""The pandas dtypes the server holds a dataset in, derived from its metadata.

The data loader (CSV, Parquet, ...) and the dummy generator both go through these functions, so a
query sees the same dtypes on dummy and on private data.
"""

from __future__ import annotations

import pandas as pd

from lomas.core.metadata import (
    AnyColumn,
    BooleanMetadata,
    DatetimeMetadata,
    FloatMetadata,
    IntCategoricalMetadata,
    IntMetadata,
    Metadata,
    StrCategoricalMetadata,
    StrMetadata,
)

DATETIME_DTYPE = "datetime64[ns]"


def column_dtype(column: AnyColumn) -> str:
    """Pandas dtype of one column: nullable extension dtypes where numpy has no missing value."""
    match column:
        case StrMetadata() | StrCategoricalMetadata():
            return "string"
        case IntMetadata() | IntCategoricalMetadata():
            return f"Int{column.precision.value}"
        case FloatMetadata():
            return f"float{column.precision.value}"
        case BooleanMetadata():
            return "boolean"
        case DatetimeMetadata():
            return DATETIME_DTYPE
    raise TypeError(f"Unknown column metadata type: {type(column).__name__}")


def pandas_dtypes(metadata: Metadata) -> dict[str, str]:
    """Pandas dtype of every column, in metadata order."""
    return {name: column_dtype(column) for name, column in metadata.columns.items()}


def datetime_columns(metadata: Metadata) -> list[str]:
    """Names of the datetime columns (they travel as strings in JSON and CSV)."""
    return [name for name, column in metadata.columns.items() if isinstance(column, DatetimeMetadata)]


def _to_datetime(series: pd.Series) -> pd.Series:
    """Naive UTC datetimes (utc=True accepts naive and offset-aware values alike).

    ISO 8601 text may mix forms (dates only, offsets); other text must keep one inferable format.
    """
    try:
        parsed = pd.to_datetime(series, utc=True, format="ISO8601")
    except ValueError:
        parsed = pd.to_datetime(series, utc=True)
    return parsed.dt.tz_convert(None).astype(DATETIME_DTYPE)


def _cast(series: pd.Series, dtype: str) -> pd.Series:
    return _to_datetime(series) if dtype == DATETIME_DTYPE else series.astype(dtype)


def coerce_frame(df: pd.DataFrame, metadata: Metadata) -> pd.DataFrame:
    """Restrict `df` to the metadata columns, in metadata order, cast to `pandas_dtypes(metadata)`.

    Raises ValueError naming the missing or un-castable columns. The message deliberately leaves
    out the casting library's own error, which may quote private values.
    """
    dtypes = pandas_dtypes(metadata)
    missing = [name for name in dtypes if name not in df.columns]
    if missing:
        raise ValueError(f"Columns missing from the data: {', '.join(missing)}.")
    cast: dict[str, pd.Series] = {}
    failed: list[str] = []
    for name, dtype in dtypes.items():
        try:
            cast[name] = _cast(df[name], dtype)
        except (TypeError, ValueError, OverflowError):
            failed.append(f"{name} (to {dtype})")
    if failed:
        raise ValueError(f"Columns that cannot be cast to their metadata type: {', '.join(failed)}.")
    return pd.DataFrame(cast, index=df.index)
