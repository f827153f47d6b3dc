"""A Parquet file queried where it lies, never loaded whole: a dataset may be larger than memory.

SmartNoise-SQL's queries run on DuckDB over a view that reads only the columns and row groups a query
needs, casting them to the metadata's types on the fly. The other libraries need the data in memory:
OpenDP's polars plans would be the natural fit, but the OpenDP 0.14 library is built without Parquet
scans (its polars reads only CSV scans and in-memory frames).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb

from lomas.core.metadata import Metadata
from lomas.server.data.base import TABLE_NAME, DataSource
from lomas.server.data.dtypes import typed_select
from lomas.server.data.loading import parquet_schema


class ScanSource(DataSource):
    holds_frame = False

    def __init__(
        self,
        path: Path,
        metadata: Metadata,
        duckdb_threads: int = 1,
        memory_limit: str | None = None,
        declared_only: bool = True,
    ) -> None:
        super().__init__(metadata)
        self._declared_only = declared_only
        parquet_schema(path, metadata)  # the columns and their types, checked before any query
        self.path = path.resolve()
        self._duckdb = self._connect(duckdb_threads, memory_limit)
        self._cursors = threading.local()

    def _connect(self, threads: int, memory_limit: str | None) -> duckdb.DuckDBPyConnection:
        """DuckDB may read this one file and nothing else (no other file, no network), settings locked."""
        connection = duckdb.connect(
            config={"threads": threads, **({"memory_limit": memory_limit} if memory_limit else {})}
        )
        location = str(self.path).replace("'", "''")
        connection.execute(f"SET allowed_paths = ['{location}']")
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
        scan = f"read_parquet('{location}')"
        connection.execute(
            f"CREATE VIEW {TABLE_NAME} AS {typed_select(self.metadata, scan, declared_only=self._declared_only)}"
        )
        return connection

    def check_available(self) -> None:
        """The file is still there with its columns (its footer is read: about a millisecond)."""
        parquet_schema(self.path, self.metadata)

    def sql(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._cursors, "cursor", None)
        if cursor is None:
            cursor = self._duckdb.cursor()
            self._cursors.cursor = cursor
        result = cursor.execute(query)
        return [column[0] for column in result.description], result.fetchall()
