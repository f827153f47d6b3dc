"""A dataset held in memory as an Arrow table: DuckDB and polars read it without copying its numbers."""

from __future__ import annotations

import threading
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa

from lomas.core.metadata import Metadata
from lomas.server.data.base import TABLE_NAME, DataSource
from lomas.server.data.dtypes import arrow_schema, coerce_frame


def sandboxed_duckdb(threads: int, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can read no file and no network, with its settings locked."""
    config: dict[str, Any] = {"enable_external_access": False, "lock_configuration": True, "threads": threads}
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    return duckdb.connect(config=config)


def nan_to_null(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Missing floats as nulls: OpenDP's domains promise no NaN (see `polars_domain`)."""
    return frame.with_columns(pl.col(pl.Float32, pl.Float64).fill_nan(None))


def polars_form(table: pa.Table) -> tuple[pl.DataFrame, int]:
    """The table as polars holds it (numbers shared with Arrow, strings copied), and its size."""
    frame = nan_to_null(pl.from_arrow(table).lazy()).collect()  # type: ignore[union-attr]
    return frame, int(frame.estimated_size())


def pandas_form(table: pa.Table, metadata: Metadata) -> tuple[pd.DataFrame, int]:
    """The table as a pandas frame of the metadata's dtypes (a copy), and its size."""
    frame = coerce_frame(table.to_pandas(), metadata)
    return frame, int(frame.memory_usage(deep=True).sum())


class MemorySource(DataSource):
    """One loaded dataset (private or dummy). Its pandas and polars forms are made on first use."""

    def __init__(
        self, table: pa.Table, metadata: Metadata, duckdb_threads: int = 1, memory_limit: str | None = None
    ) -> None:
        super().__init__(metadata)
        self.table = table
        self._duckdb = sandboxed_duckdb(duckdb_threads, memory_limit)
        self._cursors = threading.local()

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, metadata: Metadata, duckdb_threads: int = 1) -> MemorySource:
        """A source over a frame that already has the metadata's dtypes (dummy data)."""
        table = pa.Table.from_pandas(frame, schema=arrow_schema(metadata), preserve_index=False)
        source = cls(table, metadata, duckdb_threads)
        source.memo("pandas", lambda: (frame, 0))  # the frame is counted as the table's twin
        return source

    def own_nbytes(self) -> int:
        return int(self.table.nbytes)

    def sql(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Runs on one DuckDB cursor per thread, kept: registering the table costs more than a small query."""
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._cursors, "cursor", None)
        if cursor is None:
            cursor = self._duckdb.cursor()
            cursor.register(TABLE_NAME, self.table)
            self._cursors.cursor = cursor
        result = cursor.execute(query)
        return [column[0] for column in result.description], result.fetchall()

    def lazy(self) -> pl.LazyFrame:
        return self.memo("polars", lambda: polars_form(self.table)).lazy()

    def frame(self) -> pd.DataFrame:
        return self.memo("pandas", lambda: pandas_form(self.table, self.metadata))
