"""Background jobs: a query the client asked to run asynchronously (`Prefer: respond-async`).

The request is checked, priced and its budget reserved before the job is accepted, so every refusal
is still an immediate 4xx; only the execution is deferred to a worker thread. A job's state lives in
the admin store, so its owner can poll `GET /status/{id}` on any replica. Jobs still queued when the
server stops give their reservation back (no private data was read) and are marked failed.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from lomas.core.errors import InternalServerError, InvalidQueryError, LomasError, UnauthorizedAccessError
from lomas.core.responses import JobResponse, JobStatus, QueryResponse
from lomas.server.queries import PreparedQuery
from lomas.server.store.models import Dataset, Job, User, utcnow

logger = logging.getLogger(__name__)

T = TypeVar("T")

SERVER_STOPPED = "The server stopped before this job started; nothing was charged. Please send the query again."


class JobRunner:
    def __init__(self, sessions: sessionmaker[Session], workers: int, max_per_user: int) -> None:
        self._sessions = sessions
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lomas-job")
        self._queued: dict[str, tuple[Future[Any], PreparedQuery, bool]] = {}  # key -> (future, query, is_job)
        self._active: Counter[str] = Counter()  # queued or running, per user
        self._max_per_user = max_per_user
        self._lock = threading.Lock()

    def submit(self, user_name: str, library: str, dummy: bool, query: PreparedQuery) -> JobResponse:
        """Record a pending job and hand it to a worker."""
        self._admit(user_name, query)
        job_id = str(uuid.uuid4())
        try:
            response = self._record(job_id, user_name, library, dummy, query.dataset_name)
        except BaseException:  # never queued: its slot and its reservation go back
            with self._lock:
                self._active[user_name] -= 1
            query.abandon()
            raise
        self._enqueue(user_name, job_id, query, True, self._run, job_id, query)
        return response

    def _record(self, job_id: str, user_name: str, library: str, dummy: bool, dataset_name: str) -> JobResponse:
        with self._sessions.begin() as session:
            user_id = session.scalar(select(User.id).where(User.name == user_name))
            dataset_id = session.scalar(select(Dataset.id).where(Dataset.name == dataset_name))
            job = Job(
                id=job_id,
                user_id=user_id,
                dataset_id=dataset_id,
                library=library,
                dummy=dummy,
                status=JobStatus.PENDING,
            )
            session.add(job)
            session.flush()
            return _response(job)

    def execute(self, user_name: str, query: PreparedQuery) -> Future[QueryResponse]:
        """Run a long query on the job workers for a caller that waits (the synchronous 0.4 endpoints),
        so that long trainings queue there instead of filling the request thread pool."""
        self._admit(user_name, query)
        key = str(uuid.uuid4())
        return self._enqueue(user_name, key, query, False, self._run_inline, key, query)

    def _admit(self, user_name: str, query: PreparedQuery) -> None:
        """Count the user's long queries; past the limit, give the reservation back and refuse, so that no
        one user's trainings (even free dummy ones) hold every worker."""
        with self._lock:
            admitted = self._active[user_name] < self._max_per_user
            if admitted:
                self._active[user_name] += 1
        if not admitted:
            query.abandon()
            raise InvalidQueryError(
                f"{user_name} already has {self._max_per_user} long queries queued or running on this server "
                "(jobs.max_per_user); wait for one to finish. Nothing was charged."
            )

    def _enqueue(
        self,
        user_name: str,
        key: str,
        query: PreparedQuery,
        is_job: bool,
        function: Callable[..., T],
        *args: Any,
    ) -> Future[T]:
        def counted() -> T:
            try:
                return function(*args)
            finally:
                with self._lock:
                    self._active[user_name] -= 1

        with self._lock:
            future = self._executor.submit(counted)
            self._queued[key] = (future, query, is_job)
        return future

    def status(self, user_name: str, job_id: str) -> JobResponse:
        """The job, if it belongs to the caller; another user's job looks exactly like a missing one."""
        with self._sessions() as session:
            job = session.scalars(
                select(Job).join(User, User.id == Job.user_id).where(Job.id == job_id, User.name == user_name)
            ).one_or_none()
            if job is None:
                raise UnauthorizedAccessError(f"There is no job {job_id} of {user_name}.")
            return _response(job)

    def shutdown(self) -> None:
        """Cancel queued jobs (giving their budget back), then wait for the running ones."""
        with self._lock:
            queued = list(self._queued.items())
        for key, (future, query, is_job) in queued:
            if future.cancel():
                query.abandon()
                if is_job:
                    self._finish(key, JobStatus.FAILED, 500, InternalServerError(SERVER_STOPPED).to_model())
        self._executor.shutdown(wait=True)

    def _run_inline(self, key: str, query: PreparedQuery) -> QueryResponse:
        self._started(key)
        return query.run()

    def _started(self, key: str) -> None:
        with self._lock:
            self._queued.pop(key, None)

    def _run(self, job_id: str, query: PreparedQuery) -> None:
        self._started(job_id)
        self._update(job_id, status=JobStatus.RUNNING, started_at=utcnow())
        try:
            response = query.run()
        except LomasError as error:
            self._finish(job_id, JobStatus.FAILED, error.status_code, error.to_model())
        except Exception as error:  # the job thread must record every outcome
            logger.error("job %s failed unexpectedly (%s)", job_id, type(error).__name__, exc_info=error)
            self._finish(job_id, JobStatus.FAILED, 500, InternalServerError().to_model())
        else:
            self._finish(job_id, JobStatus.COMPLETE, 200, response)

    def _finish(self, job_id: str, status: JobStatus, status_code: int, body: Any) -> None:
        self._update(
            job_id,
            status=status,
            status_code=status_code,
            result=body.model_dump(mode="json"),
            finished_at=utcnow(),
        )

    def _update(self, job_id: str, **values: Any) -> None:
        with self._sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(**values))


def _response(job: Job) -> JobResponse:
    complete = job.status == JobStatus.COMPLETE
    return JobResponse.model_validate(
        {
            "job_id": job.id,
            "status": job.status,
            "library": job.library,
            "dummy": job.dummy,
            "created_at": job.created_at,
            "finished_at": job.finished_at,
            "status_code": job.status_code,
            "result": job.result if complete else None,
            "error": None if complete else job.result,
        }
    )
