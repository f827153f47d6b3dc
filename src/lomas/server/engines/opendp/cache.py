"""The two caches of the OpenDP engine: built plans by request, and what each loaded dataset is turned into.

Both are shared by every thread of the server. Building a plan, or converting a dataset, runs outside the
lock: two threads may do the same work at once, and the last one's result is kept.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from lomas.server.data.frame import DataFrameSource

PlanT = TypeVar("PlanT")
ValueT = TypeVar("ValueT")


class PlanCache(Generic[PlanT]):
    """The `size` plans used last, by key. Plans are immutable: any number of runs may share one."""

    def __init__(self, size: int) -> None:
        self._plans: OrderedDict[Hashable, PlanT] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], PlanT]) -> PlanT:
        """The cached plan of `key`, or the one `build` returns, cached."""
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                return plan
        plan = build()
        with self._lock:
            self._plans[key] = plan
            while len(self._plans) > self._size:
                self._plans.popitem(last=False)
        return plan


class PerDataset(Generic[ValueT]):
    """A value made from each loaded dataset, kept as long as the dataset is (its making is slow)."""

    def __init__(self, make: Callable[[DataFrameSource], ValueT]) -> None:
        self._make = make
        self._values: weakref.WeakKeyDictionary[DataFrameSource, ValueT] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, data: DataFrameSource) -> ValueT:
        with self._lock:
            value = self._values.get(data)
        if value is None:
            value = self._make(data)
            with self._lock:
                self._values[data] = value
        return value
