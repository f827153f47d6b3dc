"""The plan cache of the OpenDP engine: built plans by request.

It is shared by every thread of the server. Building a plan runs outside the lock: two threads
may do the same work at once, and the last one's result is kept. (What each dataset is turned into for
the library is kept with the dataset: `DataSource.memo`.)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

PlanT = TypeVar("PlanT")


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
