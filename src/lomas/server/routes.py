"""HTTP routes of the Lomas 0.4 protocol. Thin: identify the caller, then call a service.

Handlers are plain functions, which FastAPI runs in its thread pool, except the query handlers: they
hand the work to the thread pool, or to the job workers for long runs and `Prefer: respond-async`. DP
work and store access never block the event loop.
"""


import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse

from lomas import __version__
from lomas.core.errors import INTERNAL_SERVER_ERROR, DPLibrary, ErrorModel
from lomas.core.frames import frame_to_tight
from lomas.core.requests import LIBRARY_REQUESTS, DummyDatasetRequest, LibraryRequests, LomasRequest
from lomas.core.responses import (
    ArchivedQuery,
    CostResponse,
    DummyDatasetResponse,
    InitialBudgetResponse,
    JobResponse,
    PreviousQueriesResponse,
    QueryResponse,
    RemainingBudgetResponse,
    SpentBudgetResponse,
    StateResponse,
)
from lomas.server.auth import identify
from lomas.server.data.dtypes import datetime_columns

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorModel, "description": description}
    for code, description in [
        (400, "Invalid query (for example not enough budget)"),
        (401, "Caller not identified"),
        (403, "No access to this dataset"),
        (422, "Malformed request or library error"),
        (500, INTERNAL_SERVER_ERROR),
    ]
}


# Dependencies that do no I/O are coroutines, so FastAPI does not send each of them to the thread pool.
async def services(request: Request) -> Any:
    return request.app.state.services


async def caller(request: Request) -> str:
    """Only a presented token costs a store look-up (in the thread pool); the rest does no I/O."""
    svc = request.app.state.services
    return await identify(request, svc.settings.auth.open_mode, svc.tokens)


Services = Annotated[Any, Depends(services)]
Caller = Annotated[str, Depends(caller)]
PreferHeader = Annotated[
    str | None, Header(description="`respond-async` runs the query as a job: 202, then `GET /status/{job_id}`.")
]


def protocol_router() -> APIRouter:
    router = APIRouter(responses=_ERRORS)

    @router.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/state")

    @router.get("/state", tags=["state"])
    def state(request: Request) -> StateResponse:
        return StateResponse(
            requested_by=request.headers.get("user-name"), state={"LIVE": True, "version": __version__}
        )

    @router.post("/get_dataset_metadata", tags=["dataset"])
    def get_dataset_metadata(body: LomasRequest, user: Caller, svc: Services) -> dict[str, Any]:
        dataset = svc.queries.authorized_dataset(user, body.dataset_name)
        return dataset.metadata.model_dump(mode="json", exclude_none=True)

    @router.post("/get_dummy_dataset", tags=["dataset"])
    def get_dummy_dataset(body: DummyDatasetRequest, user: Caller, svc: Services) -> DummyDatasetResponse:
        dataset = svc.queries.authorized_dataset(user, body.dataset_name)
        frame = svc.queries.dummy_frame(dataset, body.dummy_nb_rows, body.dummy_seed)
        return DummyDatasetResponse(
            dtypes={name: str(dtype) for name, dtype in frame.dtypes.items()},
            datetime_columns=datetime_columns(dataset.metadata),
            dummy_df=frame_to_tight(frame),
        )

    @router.post("/get_initial_budget", tags=["budget"])
    def get_initial_budget(body: LomasRequest, user: Caller, svc: Services) -> InitialBudgetResponse:
        budget = svc.queries.ledger.budget(user, body.dataset_name)
        return InitialBudgetResponse(initial_epsilon=budget.initial_epsilon, initial_delta=budget.initial_delta)

    @router.post("/get_total_spent_budget", tags=["budget"])
    def get_total_spent_budget(body: LomasRequest, user: Caller, svc: Services) -> SpentBudgetResponse:
        budget = svc.queries.ledger.budget(user, body.dataset_name)
        return SpentBudgetResponse(total_spent_epsilon=budget.spent_epsilon, total_spent_delta=budget.spent_delta)

    @router.post("/get_remaining_budget", tags=["budget"])
    def get_remaining_budget(body: LomasRequest, user: Caller, svc: Services) -> RemainingBudgetResponse:
        budget = svc.queries.ledger.budget(user, body.dataset_name)
        return RemainingBudgetResponse(
            remaining_epsilon=budget.remaining_epsilon, remaining_delta=budget.remaining_delta
        )

    @router.post("/get_previous_queries", tags=["budget"])
    def get_previous_queries(body: LomasRequest, user: Caller, svc: Services) -> PreviousQueriesResponse:
        svc.queries.authorized_dataset(user, body.dataset_name)
        return PreviousQueriesResponse(
            previous_queries=[
                ArchivedQuery(
                    user_name=entry.user_name,
                    dataset_name=entry.dataset_name,
                    dp_librairy=entry.library,
                    client_input=entry.client_input,
                    response=entry.response if entry.response is not None else {"error": entry.error},
                    timestamp=entry.created_at.timestamp(),
                )
                for entry in svc.store.archives(user, body.dataset_name)
            ]
        )

    @router.get("/status/{job_id}", tags=["jobs"])
    def job_status(job_id: str, user: Caller, svc: Services) -> JobResponse:
        """A background job of the caller's: its state, then its answer or its error."""
        return svc.jobs.status(user, job_id)

    for library, requests in LIBRARY_REQUESTS.items():
        _library_routes(router, library, requests)
    return router


def _library_routes(router: APIRouter, library: DPLibrary, requests: LibraryRequests) -> None:
    """The three routes every DP library has: query, dummy query and cost estimate."""

    def query_handler(model: type[LomasRequest], dummy: bool) -> Callable[..., Awaitable[Any]]:
        async def handler(
            body: model, user: Caller, svc: Services, prefer: PreferHeader = None  # type: ignore[valid-type]
        ) -> Any:
            engine = svc.engines[library]
            prepare = svc.queries.prepare_dummy_query if dummy else svc.queries.prepare_query
            as_job = prefer is not None and "respond-async" in prefer.lower()
            if not (as_job or engine.runs_long):  # the common case: one trip to the thread pool
                return await run_in_threadpool(lambda: prepare(user, body, engine).run())
            prepared = await run_in_threadpool(prepare, user, body, engine)
            if as_job:
                job = await run_in_threadpool(svc.jobs.submit, user, engine.library, dummy, prepared)
                location = {"Location": f"/status/{job.job_id}"}
                return JSONResponse(job.model_dump(mode="json"), status_code=202, headers=location)
            return await asyncio.wrap_future(svc.jobs.execute(user, prepared))

        return handler

    def estimate_cost(
        body: requests.cost, user: Caller, svc: Services  # type: ignore[name-defined]
    ) -> CostResponse:
        return svc.queries.cost(user, body, svc.engines[library])

    query_routes = (
        (f"/{library}_query", requests.query, False),
        (f"/dummy_{library}_query", requests.dummy_query, True),
    )
    for path, model, dummy in query_routes:
        router.add_api_route(
            path,
            query_handler(model, dummy),
            methods=["POST"],
            tags=[library],
            name=path.lstrip("/"),
            response_model=QueryResponse,
            responses={202: {"model": JobResponse, "description": "Accepted as a job (`Prefer: respond-async`)"}},
        )
    router.add_api_route(
        f"/estimate_{library}_cost", estimate_cost, methods=["POST"], tags=[library], name=f"estimate_{library}_cost"
    )
