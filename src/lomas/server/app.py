"""The FastAPI application: wiring of settings, store, ledger, data cache and engines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from lomas import __version__
from lomas.core.errors import DPLibrary, InternalServerError, InvalidQueryError, LomasError
from lomas.server.config import Settings
from lomas.server.data.access import parse_access
from lomas.server.data.cache import DatasetCache
from lomas.server.data.secrets import load_secrets
from lomas.server.data.sources import DataContext, open_source
from lomas.server.engines.base import Engine
from lomas.server.engines.diffprivlib import DiffPrivLibEngine
from lomas.server.engines.opendp import OpenDPEngine
from lomas.server.engines.smartnoise_sql import SmartnoiseSQLEngine
from lomas.server.engines.smartnoise_synth import SmartnoiseSynthEngine
from lomas.server.jobs import JobRunner
from lomas.server.ledger import Ledger
from lomas.server.oidc import OIDCValidator
from lomas.server.queries import QueryService
from lomas.server.routes import protocol_router
from lomas.server.store.db import make_engine, session_factory
from lomas.server.store.service import AdminStore
from lomas.server.store.tokens import TokenStore

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a request handler needs, built once per process."""

    settings: Settings
    store: AdminStore
    tokens: TokenStore
    queries: QueryService
    engines: dict[DPLibrary, Engine[Any, Any]]
    jobs: JobRunner


def build_services(settings: Settings) -> Services:
    sessions = session_factory(make_engine(settings.store_url))
    store = AdminStore(sessions)
    ledger = Ledger(sessions, settings.reservation_timeout_s)
    context = DataContext.from_settings(settings, load_secrets(settings.secrets_file))
    cache = DatasetCache(
        lambda dataset: open_source(
            dataset.key, parse_access(dataset.access), dataset.metadata, context
        ),
        settings.data.cache_max_bytes,
    )
    return Services(
        settings=settings,
        store=store,
        tokens=TokenStore(sessions),
        queries=QueryService(store, ledger, cache, settings.limits.max_dummy_rows),
        jobs=JobRunner(sessions, settings.jobs.workers, settings.jobs.max_per_user),
        engines={
            DPLibrary.SMARTNOISE_SQL: SmartnoiseSQLEngine(settings.limits.max_query_length),
            DPLibrary.OPENDP: OpenDPEngine(settings.opendp),
            DPLibrary.DIFFPRIVLIB: DiffPrivLibEngine(settings.diffprivlib),
            DPLibrary.SMARTNOISE_SYNTH: SmartnoiseSynthEngine(settings.smartnoise_synth),
        },
    )


async def _lomas_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, LomasError)
    return JSONResponse(
        error.to_model().model_dump(mode="json"), status_code=error.status_code, headers=error.headers
    )


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'] if part != 'body') or 'body'}: {problem['msg']}"
        for problem in error.errors()
    )
    body = InvalidQueryError(f"Invalid request: {problems}").to_model().model_dump(mode="json")
    return JSONResponse(body, status_code=422)


async def _unexpected_error(_request: Request, error: Exception) -> JSONResponse:
    logger.error("unhandled %s", type(error).__name__, exc_info=error)
    return JSONResponse(InternalServerError().to_model().model_dump(mode="json"), status_code=500)


def create_app(settings: Settings) -> FastAPI:
    services = build_services(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        yield
        await asyncio.to_thread(services.jobs.shutdown)

    app = FastAPI(
        title="Lomas",
        version=__version__,
        description="Differentially private queries on datasets that never leave their owner's server.",
        lifespan=lifespan,
    )
    app.state.services = services
    oidc = settings.auth.oidc
    app.state.oidc = OIDCValidator(oidc, services.store.user_exists) if oidc is not None else None
    app.add_exception_handler(LomasError, _lomas_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.include_router(protocol_router())
    if oidc is not None:
        logger.info("OIDC: accepting JWT access tokens of %s for audience %s", oidc.issuer, oidc.audience)
    if settings.auth.open_mode:
        logger.warning(
            "Open mode: callers are identified by the unauthenticated 'user-name' header. "
            "Anyone who reaches this server can act as any user."
        )
    return app
