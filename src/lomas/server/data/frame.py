"""A dataset held in memory, ready for the engines (pandas, and DuckDB over the same memory)."""

from __future__ import annotations

import threading

import duckdb
import pandas as pd

TABLE_NAME = "df"


class DataFrameSource:
    """One loaded dataset (private or dummy). Engines read it; none may modify it."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.nbytes = int(frame.memory_usage(deep=True).sum())
        self._duckdb = duckdb.connect(config={"enable_external_access": False, "lock_configuration": True})
        self._cursors = threading.local()

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
