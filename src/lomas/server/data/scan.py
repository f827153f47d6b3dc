"""A Parquet file queried where it lies, never loaded whole: a dataset may be larger than memory.

SmartNoise-SQL's queries run on DuckDB over a view that reads only the columns and row groups a query
needs, casting them to the metadata's types on the fly. The other libraries need the data in memory:
OpenDP's polars plans would be the natural fit, but the OpenDP 0.14 library is built without Parquet
scans (its polars reads only CSV scans and in-memory frames).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import duckdb

from lomas.core.metadata import Metadata
from lomas.server.data.base import TABLE_NAME, DataSource
from lomas.server.data.dtypes import declared_rows, typed_select
from lomas.server.data.loading import parquet_schema

logger = logging.getLogger(__name__)


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
        self._lock = threading.Lock()
        self._stamp = self._define_view()

    def _connect(self, threads: int, memory_limit: str | None) -> duckdb.DuckDBPyConnection:
        """DuckDB may read this one file and nothing else (no other file, no network), settings locked."""
        connection = duckdb.connect(
            config={"threads": threads, **({"memory_limit": memory_limit} if memory_limit else {})}
        )
        connection.execute(f"SET allowed_paths = [{self._location}]")
        connection.execute("SET enable_external_access = false")
        connection.execute("SET lock_configuration = true")
        return connection

    @property
    def _location(self) -> str:
        return "'" + str(self.path).replace("'", "''") + "'"

    def _define_view(self) -> tuple[int, int]:
        """(Re)define the view `df` for the file as it is now, and return the file's size and time.

        Rows with undeclared public keys (`declared_rows`) are looked for once per version of the file:
        only a file that holds some gets the filter, which costs every query a pass over those columns.
        """
        status = self.path.stat()
        scan = f"read_parquet({self._location})"
        filtered = False
        condition = declared_rows(self.metadata) if self._declared_only else None
        if condition is not None:
            typed = typed_select(self.metadata, scan, declared_only=False)
            [(undeclared,)] = self._duckdb.execute(
                f"SELECT COUNT(*) FROM ({typed}) AS typed WHERE ({condition}) IS NOT TRUE"
            ).fetchall()
            if undeclared:
                logger.warning(
                    "%s: %d rows hold undeclared categories and are left out; fix the data or the metadata",
                    self.path,
                    undeclared,
                )
            filtered = undeclared > 0
        view = typed_select(self.metadata, scan, declared_only=filtered)
        self._duckdb.execute(f"CREATE OR REPLACE VIEW {TABLE_NAME} AS {view}")
        return status.st_size, status.st_mtime_ns

    def check_available(self) -> None:
        """The file is still there with its columns (its footer is read: about a millisecond); a file
        replaced since it was opened is checked again before it is queried."""
        parquet_schema(self.path, self.metadata)
        status = self.path.stat()
        with self._lock:
            if (status.st_size, status.st_mtime_ns) != self._stamp:
                self._stamp = self._define_view()

    def sql(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._cursors, "cursor", None)
        if cursor is None:
            cursor = self._duckdb.cursor()
            self._cursors.cursor = cursor
        result = cursor.execute(query)
        return [column[0] for column in result.description], result.fetchall()
