"""What every engine reads a dataset through, wherever the data lives.

A source answers SQL on a table named `df` (SmartNoise-SQL) and, unless it only scans, gives the whole
table as a polars LazyFrame (OpenDP polars) and as a pandas frame (OpenDP 0.4 pipelines, DiffPrivLib,
SmartNoise-Synth). Every form has the column types of the metadata (`lomas.server.data.dtypes`).
Engines only read a source: one source serves every thread at once.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import pandas as pd
import polars as pl

from lomas.core.metadata import Metadata

TABLE_NAME = "df"
T = TypeVar("T")


class FrameUnavailableError(RuntimeError):
    """The source only scans its data; the query service refuses such queries before they run."""


class DataSource(ABC):
    # False: the data is scanned where it lives and never loaded whole (a dataset larger than memory).
    holds_frame: ClassVar[bool] = True

    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata
        self._memos: dict[str, tuple[Any, int]] = {}
        self._memo_lock = threading.Lock()
        self._memo_locks: dict[str, threading.Lock] = {}

    @property
    def nbytes(self) -> int:
        """Memory held for this dataset: its own data and every form made from it (`memo`)."""
        with self._memo_lock:  # another thread may be adding a form
            return self.own_nbytes() + sum(size for _, size in self._memos.values())

    def own_nbytes(self) -> int:
        return 0

    def memo(self, key: str, build: Callable[[], tuple[T, int]]) -> T:
        """A value made once from this dataset and kept as long as it is (with its size in bytes, which
        counts towards the dataset cache's memory limit). Concurrent first calls build it once."""
        with self._memo_lock:
            key_lock = self._memo_locks.setdefault(key, threading.Lock())
        with key_lock:  # one lock per form: making one form may use another (CSV text from the frame)
            if key not in self._memos:
                built = build()
                with self._memo_lock:
                    self._memos[key] = built
            value: T = self._memos[key][0]
            return value

    def close(self) -> None:
        """Give back what the source holds outside this process (database connections)."""

    def check_available(self) -> None:
        """Raise `DataUnavailableError` if the data cannot be reached right now (before a query runs)."""

    @abstractmethod
    def sql(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of a read-only SQL query on the table `df`."""

    def lazy(self) -> pl.LazyFrame:
        """The whole data as a polars LazyFrame of `polars_schema(metadata)`, NaN read as null."""
        raise FrameUnavailableError("this dataset is only scanned")

    def frame(self) -> pd.DataFrame:
        """The whole data as a pandas frame of `pandas_dtypes(metadata)`."""
        raise FrameUnavailableError("this dataset is only scanned")
