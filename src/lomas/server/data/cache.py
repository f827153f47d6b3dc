"""Opened datasets, kept between requests (least recently used dropped past a memory limit).

Keyed by dataset name and `DatasetRecord.key` (its version, access and metadata), so re-registering a
dataset makes the next request open the new data. Concurrent requests for the same cold dataset wait for one load. A source's size grows when an
engine first makes its pandas or polars form, so the limit is enforced again on every request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from lomas.server.data.base import DataSource
from lomas.server.store.service import DatasetRecord

Loader = Callable[[DatasetRecord], DataSource]


class DatasetCache:
    def __init__(self, loader: Loader, max_bytes: int | None = None) -> None:
        self._loader = loader
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], DataSource] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}

    def get(self, dataset: DatasetRecord) -> DataSource:
        key = (dataset.name, dataset.key)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self._evict()
                return self._entries[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._entries:
                    return self._entries[key]
            try:
                source = self._loader(dataset)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self._drop_older_versions(dataset.name)
                self._entries[key] = source
                self._evict()
            return source

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(source.nbytes for source in self._entries.values())

    def _drop_older_versions(self, name: str) -> None:
        for key in [key for key in self._entries if key[0] == name]:
            self._entries.pop(key).close()

    def _evict(self) -> None:
        """Drop the least recently used sources until the rest fit (the most recent one always stays)."""
        if self._max_bytes is None:
            return
        while len(self._entries) > 1 and sum(s.nbytes for s in self._entries.values()) > self._max_bytes:
            self._entries.popitem(last=False)[1].close()  # queries still running on it go on
