"""Reading a CSV or Parquet file into an Arrow table with the metadata's column types.

Errors name the file and the columns at fault, never a value: the messages reach administrators' logs
and the admin CLI, and the casting libraries' own messages quote private values.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lomas.core.metadata import Metadata
from lomas.server.data.access import FileFormat
from lomas.server.data.dtypes import arrow_schema, coerce_frame, declared_table, to_datetime
from lomas.server.data.errors import DataUnavailableError

logger = logging.getLogger(__name__)


def read_table(
    path: Path,
    file_format: FileFormat,
    metadata: Metadata,
    max_bytes: int | None = None,
    max_rows: int | None = None,
) -> pa.Table:
    """The metadata's columns of the file, in metadata order, cast to `arrow_schema(metadata)`.

    A Parquet file larger than `max_bytes` uncompressed or with more than `max_rows` rows (a CSV file
    larger than `max_bytes`) is refused before it is read: a small compressed file may expand to gigabytes.
    """
    if not path.is_file():
        raise DataUnavailableError(f"Data file not found: {path}")
    try:
        if file_format == "parquet":
            return _cast(_read_parquet(path, metadata, max_bytes, max_rows), metadata, path)
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise _too_large(path, path.stat().st_size, max_bytes)
        return _read_csv(path, metadata)
    except (OSError, pa.ArrowException) as error:
        raise DataUnavailableError(f"Cannot read {path} as {file_format}: {type(error).__name__}") from None


def parquet_schema(path: Path, metadata: Metadata) -> pa.Schema:
    """The file's own schema, checked to have every metadata column in a type that converts to the
    metadata's on every value (`_widens`): a scan converts while a query runs, and a conversion failing on
    some rows only would tell, through the query's WHERE, whether such a row exists."""
    if not path.is_file():
        raise DataUnavailableError(f"Data file not found: {path}")
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        raise DataUnavailableError(f"Cannot read {path} as parquet: {type(error).__name__}") from None
    _check_columns(schema.names, metadata, path)
    failed = [
        f"{field.name} ({schema.field(field.name).type} to {field.type})"
        for field in arrow_schema(metadata)
        if not _widens(schema.field(field.name).type, field.type)
    ]
    if failed:
        raise DataUnavailableError(
            f"{path} does not match its metadata: columns whose type does not always convert to their "
            f"metadata type: {', '.join(failed)}. A scanned Parquet file stores each column in its metadata "
            "type or a narrower one of the same kind (for example int32 for an int64 column)."
        )
    return schema


_INTEGERS = {
    pa.int32(): (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16()),
    pa.int64(): (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32()),
}


def _widens(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether every value of `source` converts to `target` (text, and numbers, never fail to become text)."""
    if source == target or pa.types.is_string(target):
        return True
    if pa.types.is_timestamp(target):
        return pa.types.is_timestamp(source) or pa.types.is_date(source)
    if target in _INTEGERS:
        return source in _INTEGERS[target]
    if target == pa.float32():
        return pa.types.is_float16(source)
    if target == pa.float64():
        return pa.types.is_floating(source) or source in _INTEGERS[pa.int64()]
    return False  # booleans: only booleans


def _check_columns(names: list[str], metadata: Metadata, path: Path) -> None:
    missing = [name for name in metadata.columns if name not in names]
    if missing:
        raise DataUnavailableError(
            f"{path} does not match its metadata: columns missing from the data: {', '.join(missing)}."
        )


def _too_large(path: Path, size: int, max_bytes: int) -> DataUnavailableError:
    return DataUnavailableError(
        f"{path} holds {size} bytes of data, more than data.cache_max_bytes ({max_bytes}) allows in "
        "memory: serve it with serve: scan (Parquet), or raise the limit."
    )


def _too_many_rows(where: str, rows: int, metadata: Metadata) -> DataUnavailableError:
    return DataUnavailableError(
        f"{where} has {rows} rows, more than the {metadata.rows} its metadata declares (`rows` bounds what "
        "OpenDP and SmartNoise-Synth may assume): update the metadata."
    )


def served_table(table: pa.Table, metadata: Metadata, where: str) -> pa.Table:
    """The rows a loaded table serves: at most the metadata's `rows`, and only those whose categorical
    values are declared (`declared_rows`; the others are left out, and the log says how many)."""
    if table.num_rows > metadata.rows:
        raise _too_many_rows(where, table.num_rows, metadata)
    served = declared_table(table, metadata)
    if served.num_rows < table.num_rows:
        logger.warning(
            "%s: %d rows hold undeclared categories and are left out; fix the data or the metadata",
            where,
            table.num_rows - served.num_rows,
        )
    return served


def _read_parquet(path: Path, metadata: Metadata, max_bytes: int | None, max_rows: int | None) -> pa.Table:
    """Row group by row group: reading the whole file at once peaks at nearly twice the table's size."""
    file = pq.ParquetFile(path)
    _check_columns(file.schema_arrow.names, metadata, path)
    if max_rows is not None and file.metadata.num_rows > max_rows:
        raise _too_many_rows(str(path), file.metadata.num_rows, metadata)
    size = sum(file.metadata.row_group(index).total_byte_size for index in range(file.num_row_groups))
    if max_bytes is not None and size > max_bytes:
        raise _too_large(path, size, max_bytes)
    columns = list(metadata.columns)
    groups = [file.read_row_group(index, columns=columns) for index in range(file.num_row_groups)]
    if not groups:
        return file.schema_arrow.empty_table().select(columns)
    return pa.concat_tables(groups)


def _cast(table: pa.Table, metadata: Metadata, path: Path) -> pa.Table:
    schema = arrow_schema(metadata)
    columns: list[pa.ChunkedArray] = []
    failed: list[str] = []
    for field in schema:
        column = table.column(field.name)
        try:
            if column.type == field.type:
                columns.append(column)
            elif pa.types.is_timestamp(field.type) and pa.types.is_string(column.type):
                columns.append(pa.chunked_array([_datetimes(column.to_pandas())]))
            else:
                columns.append(pc.cast(column, field.type))
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            failed.append(f"{field.name} (to {field.type})")
    if failed:
        raise DataUnavailableError(
            f"{path} does not match its metadata: columns that cannot be cast to their metadata type: "
            f"{', '.join(failed)}."
        )
    return pa.Table.from_arrays(columns, schema=schema)


def _datetimes(series: pd.Series) -> pa.Array:
    return pa.array(to_datetime(series), type=pa.timestamp("ns"))


def _read_csv(path: Path, metadata: Metadata) -> pa.Table:
    """Arrow's CSV reader with the metadata's types; a file it cannot type goes through pandas, which
    reads more spellings (for example `1.0` in an integer column) and names the columns at fault."""
    schema = arrow_schema(metadata)
    text_first = {field.name: pa.string() for field in schema if pa.types.is_timestamp(field.type)}
    options = pa_csv.ConvertOptions(
        include_columns=list(metadata.columns),
        column_types={field.name: text_first.get(field.name, field.type) for field in schema},
        strings_can_be_null=True,
    )
    try:
        table = pa_csv.read_csv(path, convert_options=options)
    except (pa.ArrowInvalid, pa.ArrowKeyError):  # a value it cannot type, a column it does not find
        return _read_csv_with_pandas(path, metadata)
    return _cast(table, metadata, path)


def _read_csv_with_pandas(path: Path, metadata: Metadata) -> pa.Table:
    try:
        raw = pd.read_csv(path, usecols=lambda name: name in metadata.columns)
    except ValueError as error:
        raise DataUnavailableError(f"Cannot read {path} as csv: {type(error).__name__}") from None
    try:
        frame = coerce_frame(raw, metadata)  # its errors name columns, never values
    except ValueError as error:
        raise DataUnavailableError(f"{path} does not match its metadata: {error}") from None
    return pa.Table.from_pandas(frame, schema=arrow_schema(metadata), preserve_index=False)
