"""A dataset held in memory, ready for the engines (pandas, and DuckDB over the same memory)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pandas as pd

TABLE_NAME = "df"


class DataFrameSource:
    """One loaded dataset (private or dummy). Engines read it; none may modify it."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.nbytes = int(frame.memory_usage(deep=True).sum())
        self._duckdb = duckdb.connect(config={"enable_external_access": False, "lock_configuration": True})

    @contextmanager
    def sql(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB cursor that sees only this frame, as table `df`, and no file or network."""
        cursor = self._duckdb.cursor()
        try:
            cursor.register(TABLE_NAME, self.frame)
            yield cursor
        finally:
            cursor.close()
