"""The way a query travels (DESIGN.md section 3), for every engine.

identify -> load dataset and grant -> engine.plan -> engine.cost -> ledger.reserve -> data ->
engine.run -> ledger.charge (+ archive) -> response. Dummy queries run on dummy data with no ledger;
cost requests stop after `cost`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lomas.core.errors import (
    ExternalLibraryError,
    InternalServerError,
    InvalidQueryError,
    LomasError,
    UnauthorizedAccessError,
)
from lomas.core.requests import DummyMixin, LomasRequest
from lomas.core.responses import CostResponse, QueryResponse
from lomas.server.data.access import parse_access
from lomas.server.data.cache import DatasetCache
from lomas.server.data.errors import DataUnavailableError, PlanningRefusedError, UnreachableError
from lomas.server.data.memory import MemorySource
from lomas.server.dummy import make_dummy_frame
from lomas.server.engines.base import Engine
from lomas.server.ledger import Ledger
from lomas.server.store.service import AdminStore, DatasetRecord

logger = logging.getLogger(__name__)

FAILED_ON_PRIVATE_DATA = (
    "The query failed while running on the private data. Its cost was charged, because private data "
    "was read. Try it on the dummy dataset first to find the problem."
)
DATA_UNAVAILABLE = "The dataset cannot be read right now; no budget was spent. Please contact the administrator."


class QueryService:
    def __init__(
        self, store: AdminStore, ledger: Ledger, cache: DatasetCache, max_dummy_rows: int
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.cache = cache
        self.max_dummy_rows = max_dummy_rows

    # -- access ----------------------------------------------------------------------------------
    def authorized_dataset(self, user_name: str, dataset_name: str, *, to_query: bool = False) -> DatasetRecord:
        """The dataset, if the caller is a known user with an active grant on it (and may query)."""
        access = self.store.access(user_name, dataset_name)
        if not access.user_exists:
            raise UnauthorizedAccessError(
                f"User {user_name} does not exist. Please, verify the client object initialisation."
            )
        if access.dataset is None:
            raise UnauthorizedAccessError(f"{user_name} does not have access to {dataset_name}.")
        if to_query and not access.may_query:
            raise UnauthorizedAccessError(f"{user_name} is not allowed to query at the moment.")
        return access.dataset

    def dummy_frame(self, dataset: DatasetRecord, nb_rows: int, seed: int) -> pd.DataFrame:
        if nb_rows > self.max_dummy_rows:
            raise InvalidQueryError(f"dummy_nb_rows is {nb_rows}; the limit is {self.max_dummy_rows} rows.")
        return make_dummy_frame(dataset.metadata, nb_rows, seed)

    # -- the three kinds of query ------------------------------------------------------------------
    def cost(self, user_name: str, request: LomasRequest, engine: Engine[Any, Any]) -> CostResponse:
        dataset = self.authorized_dataset(user_name, request.dataset_name)
        cost = engine.cost(engine.plan(request, dataset))
        return CostResponse(epsilon=cost.epsilon, delta=cost.delta)

    def dummy_query(self, user_name: str, request: LomasRequest, engine: Engine[Any, Any]) -> QueryResponse:
        return self.prepare_dummy_query(user_name, request, engine).run()

    def query(self, user_name: str, request: LomasRequest, engine: Engine[Any, Any]) -> QueryResponse:
        return self.prepare_query(user_name, request, engine).run()

    # -- preparation (everything that can refuse a request) and execution, which a job may defer ------
    def prepare_dummy_query(
        self, user_name: str, request: LomasRequest, engine: Engine[Any, Any]
    ) -> PreparedQuery:
        assert isinstance(request, DummyMixin)
        dataset = self.authorized_dataset(user_name, request.dataset_name)
        plan = engine.plan(request, dataset)
        cost = engine.cost(plan)
        data = MemorySource.from_frame(
            self.dummy_frame(dataset, request.dummy_nb_rows, request.dummy_seed), dataset.metadata
        )

        def run() -> QueryResponse:
            try:
                result = engine.run(plan, data)
            except LomasError:
                raise
            except Exception as error:  # dummy data is public: the library's message may be shown
                message = f"Error executing query on the dummy dataset: {error}"
                raise ExternalLibraryError(engine.library, message) from error
            return QueryResponse(epsilon=cost.epsilon, delta=cost.delta, requested_by=user_name, result=result)

        return PreparedQuery(dataset.name, run, abandon=lambda: None)

    def prepare_query(self, user_name: str, request: LomasRequest, engine: Engine[Any, Any]) -> PreparedQuery:
        """Check the request, price it and reserve its cost; the returned query reads the private data."""
        dataset = self.authorized_dataset(user_name, request.dataset_name, to_query=True)
        plan = engine.plan(request, dataset)
        cost = engine.cost(plan)
        if engine.needs_frame(plan) and _only_scanned(dataset):
            raise InvalidQueryError(
                f"{dataset.name} is scanned where it is stored (it may be larger than memory): only "
                "SmartNoise-SQL queries can run on it. Dummy queries of every library still work."
            )
        client_input = request.model_dump(mode="json")
        reservation = self.ledger.reserve(
            user_name, dataset.name, engine.library, client_input, cost.epsilon, cost.delta
        )

        def run() -> QueryResponse:
            try:
                data = self.cache.get(dataset)
                data.check_available()
            except DataUnavailableError:
                logger.exception("dataset %s unavailable", dataset.name)
                self.ledger.release(reservation)
                raise InternalServerError(DATA_UNAVAILABLE) from None
            except BaseException:
                self.ledger.release(reservation)
                raise
            # From here on private data may be read: the cost is charged whatever happens, unless the data's
            # server could not even be reached.
            try:
                result = engine.run(plan, data)
                response = QueryResponse(
                    epsilon=cost.epsilon, delta=cost.delta, requested_by=user_name, result=result
                )
            except UnreachableError:
                logger.exception("dataset %s unreachable", dataset.name)
                self.ledger.release(reservation)
                raise InternalServerError(DATA_UNAVAILABLE) from None
            except PlanningRefusedError as error:
                self.ledger.release(reservation)
                raise InvalidQueryError(f"{error} No budget was spent.") from None
            except BaseException as error:
                logger.error(
                    "query on %s failed after reading private data (%s)", dataset.name, type(error).__name__
                )
                self.ledger.charge(reservation, None, error=FAILED_ON_PRIVATE_DATA)
                raise ExternalLibraryError(engine.library, FAILED_ON_PRIVATE_DATA) from None
            self.ledger.charge(reservation, response.model_dump(mode="json"))
            return response

        return PreparedQuery(dataset.name, run, abandon=lambda: self.ledger.release(reservation))


def _only_scanned(dataset: DatasetRecord) -> bool:
    return getattr(parse_access(dataset.access), "serve", "memory") == "scan"


@dataclass(frozen=True)
class PreparedQuery:
    """A query that passed every check (and whose cost is reserved): `run` executes it once;
    `abandon` gives the reservation back when it will never run (a job cancelled at shutdown)."""

    dataset_name: str
    run: Callable[[], QueryResponse]
    abandon: Callable[[], None]
