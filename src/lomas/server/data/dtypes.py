"""The types the server holds a dataset in (pandas, Arrow, polars, SQL), derived from its metadata.

The data loaders (CSV, Parquet, PostgreSQL) and the dummy generator both go through these functions, so
a query sees the same types on dummy and on private data.
"""

from __future__ import annotations

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from lomas.core.metadata import (
    CATEGORICAL_COLUMNS,
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


_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(), "Int32": pa.int32(), "Int64": pa.int64(), "float32": pa.float32(),
    "float64": pa.float64(), "boolean": pa.bool_(), DATETIME_DTYPE: pa.timestamp("ns"),
}  # fmt: skip
_POLARS_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(), "Int32": pl.Int32(), "Int64": pl.Int64(), "float32": pl.Float32(),
    "float64": pl.Float64(), "boolean": pl.Boolean(), DATETIME_DTYPE: pl.Datetime("ns"),
}  # fmt: skip
# The same types in SQL, valid in DuckDB and PostgreSQL alike.
_SQL_TYPES: dict[str, str] = {
    "string": "TEXT", "Int32": "INTEGER", "Int64": "BIGINT", "float32": "REAL",
    "float64": "DOUBLE PRECISION", "boolean": "BOOLEAN", DATETIME_DTYPE: "TIMESTAMP",
}  # fmt: skip


def arrow_schema(metadata: Metadata) -> pa.Schema:
    """The Arrow schema of the dataset held in memory, in metadata order."""
    return pa.schema([(name, _ARROW_TYPES[dtype]) for name, dtype in pandas_dtypes(metadata).items()])


def polars_schema(metadata: Metadata) -> pl.Schema:
    """The polars schema of the dataset, as every `DataSource.lazy()` gives it."""
    return pl.Schema({name: _POLARS_TYPES[dtype] for name, dtype in pandas_dtypes(metadata).items()})


def quoted(identifier: str) -> str:
    """An SQL identifier, quoted (DuckDB and PostgreSQL alike)."""
    return '"' + identifier.replace('"', '""') + '"'


def typed_columns(metadata: Metadata, text_booleans: bool = False) -> str:
    """The select list that gives every metadata column its SQL type, for the `df` view over a file or
    a table; `text_booleans` writes booleans as `true`/`false` (PostgreSQL's CSV says `t`/`f`)."""
    items = []
    for name, dtype in pandas_dtypes(metadata).items():
        typed = f"CAST({quoted(name)} AS {_SQL_TYPES[dtype]})"
        if text_booleans and dtype == "boolean":
            typed = f"CAST({typed} AS TEXT)"
        items.append(f"{typed} AS {quoted(name)}")
    return ", ".join(items)


def _sql_literal(value: str | int) -> str:
    return str(int(value)) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"


def _public_key_columns(metadata: Metadata) -> dict[str, list[str] | list[int]]:
    return {
        name: column.categories
        for name, column in metadata.columns.items()
        if isinstance(column, CATEGORICAL_COLUMNS) and metadata.has_public_keys([name])
    }


def declared_rows(metadata: Metadata) -> str | None:
    """The SQL condition that keeps only rows whose values in public-key columns are declared (not null),
    or None when no column has public keys.

    `Metadata.has_public_keys` makes the declared categories of a non-nullable categorical column public,
    and SmartNoise-SQL and OpenDP release group keys of such columns without thresholding: a row holding
    another value or a null (a table that changed after its registration check) would be released
    exactly. Sources serve only the declared rows.
    """
    conditions = [
        f"{quoted(name)} IN ({', '.join(_sql_literal(value) for value in categories)})"
        for name, categories in _public_key_columns(metadata).items()
    ]
    return " AND ".join(conditions) or None


def typed_select(
    metadata: Metadata, source: str, text_booleans: bool = False, declared_only: bool = True
) -> str:
    """The SELECT that serves `source` (a table or a file scan) as the table `df`: the metadata's columns
    with their types (`typed_columns`), and declared rows only (`declared_rows`) unless the data is
    being checked against its metadata."""
    select = f"SELECT {typed_columns(metadata, text_booleans)} FROM {source}"
    condition = declared_rows(metadata) if declared_only else None
    return select if condition is None else f"SELECT * FROM ({select}) AS typed WHERE {condition}"


def declared_table(table: pa.Table, metadata: Metadata) -> pa.Table:
    """`table` with the rows of `declared_rows(metadata)` only (the same rule on Arrow data); the table
    itself, not a copy, when every row is declared."""
    keep = None
    for name, categories in _public_key_columns(metadata).items():
        values = table.column(name)
        allowed = pc.fill_null(pc.is_in(values, value_set=pa.array(categories, type=values.type)), False)
        keep = allowed if keep is None else pc.and_(keep, allowed)
    if keep is None or pc.all(keep).as_py():
        return table
    return table.filter(keep)


def datetime_columns(metadata: Metadata) -> list[str]:
    """Names of the datetime columns (they travel as strings in JSON and CSV)."""
    return [name for name, column in metadata.columns.items() if isinstance(column, DatetimeMetadata)]


def to_datetime(series: pd.Series) -> pd.Series:
    """Naive UTC datetimes (utc=True accepts naive and offset-aware values alike).

    ISO 8601 text may mix forms (dates only, offsets); other text must keep one inferable format.
    """
    try:
        parsed = pd.to_datetime(series, utc=True, format="ISO8601")
    except ValueError:
        parsed = pd.to_datetime(series, utc=True)
    return parsed.dt.tz_convert(None).astype(DATETIME_DTYPE)


def _cast(series: pd.Series, dtype: str) -> pd.Series:
    return to_datetime(series) if dtype == DATETIME_DTYPE else series.astype(dtype)


def coerce_frame(df: pd.DataFrame, metadata: Metadata) -> pd.DataFrame:
    """Restrict `df` to the metadata columns, in metadata order, cast to `pandas_dtypes(metadata)`.

    Raises ValueError naming the missing or un-castable columns. The message deliberately leaves
    out the casting library's own error, which may quote private values.
    """
    dtypes = pandas_dtypes(metadata)
    missing = [name for name in dtypes if name not in df.columns]
    if missing:
        raise ValueError(f"columns missing from the data: {', '.join(missing)}.")
    cast: dict[str, pd.Series] = {}
    failed: list[str] = []
    for name, dtype in dtypes.items():
        try:
            cast[name] = _cast(df[name], dtype)
        except (TypeError, ValueError, OverflowError):
            failed.append(f"{name} (to {dtype})")
    if failed:
        raise ValueError(f"columns that cannot be cast to their metadata type: {', '.join(failed)}.")
    return pd.DataFrame(cast, index=df.index)
