"""Loaded datasets, kept in memory between requests (least recently used evicted past a limit).

Keyed by dataset name and version, so re-registering a dataset makes the next request load the new
data. Concurrent requests for the same cold dataset wait for one load.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from lomas.server.data.frame import DataFrameSource
from lomas.server.store.service import DatasetRecord

Loader = Callable[[DatasetRecord], DataFrameSource]


class DatasetCache:
    def __init__(self, loader: Loader, max_bytes: int | None = None) -> None:
        self._loader = loader
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int], DataFrameSource] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}

    def get(self, dataset: DatasetRecord) -> DataFrameSource:
        key = (dataset.name, dataset.version)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._entries:
                    return self._entries[key]
            source = self._loader(dataset)
            with self._lock:
                self._drop_older_versions(dataset.name)
                self._entries[key] = source
                self._evict()
                self._loading.pop(key, None)
            return source

    def _drop_older_versions(self, name: str) -> None:
        for key in [key for key in self._entries if key[0] == name]:
            del self._entries[key]

    def _evict(self) -> None:
        if self._max_bytes is None:
            return
        while len(self._entries) > 1 and sum(s.nbytes for s in self._entries.values()) > self._max_bytes:
            self._entries.popitem(last=False)
