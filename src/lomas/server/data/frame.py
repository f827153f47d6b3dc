"""A dataset held in memory, ready for the engines (pandas, DuckDB over the same memory, and polars)."""

from __future__ import annotations

import threading

import duckdb
import pandas as pd
import polars as pl

TABLE_NAME = "df"


class DataFrameSource:
    """One loaded dataset (private or dummy). Engines read it; none may modify it."""

    def __init__(self, frame: pd.DataFrame, duckdb_threads: int = 1) -> None:
        self.frame = frame
        self.nbytes = int(frame.memory_usage(deep=True).sum())
        self._duckdb = duckdb.connect(
            config={"enable_external_access": False, "lock_configuration": True, "threads": duckdb_threads}
        )
        self._cursors = threading.local()
        self._polars: pl.DataFrame | None = None
        self._polars_lock = threading.Lock()

    def sql(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB cursor that sees only this frame, as table `df`, and no file or network.

        One cursor per thread, kept: opening one and registering the frame costs more than a small query.
        """
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._cursors, "cursor", None)
        if cursor is None:
            cursor = self._duckdb.cursor()
            cursor.register(TABLE_NAME, self.frame)
            self._cursors.cursor = cursor
        return cursor

    def polars(self) -> pl.DataFrame:
        """The same data as a polars DataFrame, with every missing value (NaN, NA, NaT) as a null.

        Built on first use and kept: converting a large frame costs far more than a query. Like `frame`,
        engines only read it (through `.lazy()`), so every thread may query the same one.
        """
        with self._polars_lock:
            if self._polars is None:
                self._polars = pl.from_pandas(self.frame, nan_to_null=True)
            return self._polars
