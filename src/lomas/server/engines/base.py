"""The contract every DP library engine fulfils.

`plan` validates a request against the public metadata and prepares it without touching data;
`cost` prices a plan from the plan alone; `run` executes a plan on a frame (private or dummy) and
returns the wire result. A new library is a new module implementing these three methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel

from lomas.core.errors import DPLibrary
from lomas.core.responses import QueryResult
from lomas.server.data.base import DataSource
from lomas.server.store.service import DatasetRecord

RequestT = TypeVar("RequestT", bound=BaseModel)
PlanT = TypeVar("PlanT")


@dataclass(frozen=True)
class Cost:
    epsilon: float
    delta: float


class Engine(ABC, Generic[RequestT, PlanT]):
    library: ClassVar[DPLibrary]
    # Runs that may take minutes (model training) execute on the job workers, never on the request threads.
    runs_long: ClassVar[bool] = False

    @abstractmethod
    def plan(self, request: RequestT, dataset: DatasetRecord) -> PlanT:
        """Validate and prepare; raise `InvalidQueryError`/`ExternalLibraryError`. Reads no data."""

    @abstractmethod
    def cost(self, plan: PlanT) -> Cost:
        """The privacy cost of running the plan, from the plan and metadata alone."""

    def needs_frame(self, plan: PlanT) -> bool:
        """Whether running the plan reads the whole table into memory (`DataSource.frame`): such plans are
        refused on datasets that are only scanned, before any budget is reserved."""
        return True

    @abstractmethod
    def run(self, plan: PlanT, data: DataSource) -> QueryResult:
        """Execute the plan on the data and return the DP result."""
