"""Background jobs (`Prefer: respond-async`): 202, `GET /status/{id}` for the owner only, same charges."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sqlalchemy.orm import Session, sessionmaker

from conftest import LiveServer, start_server, stop_server
from lomas.client import Client, ExternalLibraryError, InvalidQueryError
from lomas.client.http import LomasHttp
from lomas.core.errors import DPLibrary, InternalServerError
from lomas.core.requests import SmartnoiseSQLDummyQueryRequest, SmartnoiseSQLQueryRequest
from lomas.core.responses import QueryResponse
from lomas.server.jobs import SERVER_STOPPED, JobRunner
from lomas.server.ledger import Ledger
from lomas.server.queries import PreparedQuery
from lomas.server.store.models import QueryStatus
from lomas.server.store.service import AdminStore
from test_store_and_ledger import PENGUIN_ACCESS, PENGUIN_METADATA

ASYNC = {"user-name": "Dr. Antartica", "Prefer": "respond-async"}
COUNT = {"dataset_name": "PENGUIN", "query_str": "SELECT COUNT(*) AS n FROM df", "epsilon": 1.0, "delta": 1e-5}
FAILS_ON_PRIVATE_DATA = "SELECT species, COUNT(*) AS n FROM df GROUP BY species ORDER BY island"


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(tmp_path / "server", "--demo")
    yield server
    stop_server(server)


def wait_for(server: LiveServer, job_id: str, user: str = "Dr. Antartica") -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = httpx.get(f"{server.url}/status/{job_id}", headers={"user-name": user})
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in ("complete", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def spent(server: LiveServer) -> float:
    return Client(server.url, "Dr. Antartica", "PENGUIN").get_total_spent_budget().total_spent_epsilon


def test_a_query_sent_as_a_job_is_accepted_then_answered_and_charged_once(server: LiveServer) -> None:
    response = httpx.post(f"{server.url}/smartnoise_sql_query", json=COUNT, headers=ASYNC)

    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status"] in ("pending", "running", "complete")
    assert response.headers["Location"] == f"/status/{accepted['job_id']}"
    job = wait_for(server, accepted["job_id"])
    assert (job["status"], job["status_code"], job["error"]) == ("complete", 200, None)
    result = job["result"]
    assert result["requested_by"] == "Dr. Antartica"
    assert result["result"]["res_type"] == "smartnoise_sql"
    assert result["result"]["df"]["columns"] == ["n"]
    assert spent(server) == result["epsilon"]
    [entry] = Client(server.url, "Dr. Antartica", "PENGUIN").get_previous_queries()
    assert entry.response == result


def test_only_the_owner_reads_a_job_and_others_cannot_tell_it_exists(server: LiveServer) -> None:
    job_id = httpx.post(f"{server.url}/smartnoise_sql_query", json=COUNT, headers=ASYNC).json()["job_id"]
    wait_for(server, job_id)

    for user, asked in (("Tintin", job_id), ("Dr. Antartica", "no-such-job")):
        response = httpx.get(f"{server.url}/status/{asked}", headers={"user-name": user})
        assert response.status_code == 403
        assert response.json() == {
            "type": "UnauthorizedAccessException",
            "message": f"There is no job {asked} of {user}.",
        }
    assert httpx.get(f"{server.url}/status/{job_id}").status_code == 401  # no identity at all


def test_refusals_are_immediate_not_jobs_and_charge_nothing(server: LiveServer) -> None:
    unsupported = {**COUNT, "query_str": "SELECT * FROM df"}
    over_budget = {**COUNT, "epsilon": 100.0}
    for body in (unsupported, over_budget):
        response = httpx.post(f"{server.url}/smartnoise_sql_query", json=body, headers=ASYNC)
        assert response.status_code == 400, response.text
        assert response.json()["type"] == "InvalidQueryException"
    assert spent(server) == 0


def test_a_job_failing_on_private_data_is_charged_with_the_generic_message(server: LiveServer) -> None:
    body = {**COUNT, "query_str": FAILS_ON_PRIVATE_DATA}
    job_id = httpx.post(f"{server.url}/smartnoise_sql_query", json=body, headers=ASYNC).json()["job_id"]

    job = wait_for(server, job_id)
    assert (job["status"], job["status_code"], job["result"]) == ("failed", 422, None)
    assert job["error"]["type"] == "ExternalLibraryException"
    assert "charged" in job["error"]["message"] and "island" not in job["error"]["message"]
    assert spent(server) == 1.0


def test_the_client_waits_for_jobs_and_raises_their_errors(server: LiveServer) -> None:
    http = LomasHttp(server.url, "Dr. Antartica", "PENGUIN", show_progress=False)
    dummy = SmartnoiseSQLDummyQueryRequest(**COUNT, dummy_nb_rows=50, dummy_seed=1)
    answer = http.post_job("dummy_smartnoise_sql_query", dummy)
    assert answer["result"]["df"]["columns"] == ["n"]
    assert spent(server) == 0  # dummy jobs are free

    failing = SmartnoiseSQLQueryRequest(**{**COUNT, "query_str": FAILS_ON_PRIVATE_DATA})
    with pytest.raises(ExternalLibraryError, match="charged"):
        http.post_job("smartnoise_sql_query", failing)
    with pytest.raises(InvalidQueryError, match="budget"):
        http.post_job("smartnoise_sql_query", SmartnoiseSQLQueryRequest(**{**COUNT, "epsilon": 100.0}))
    assert spent(server) == 1.0


def test_jobs_still_queued_at_shutdown_give_their_budget_back(sessions: sessionmaker[Session]) -> None:
    """One worker busy, one job queued behind it: stopping cancels the queued one and releases its budget."""
    store, ledger = AdminStore(sessions), Ledger(sessions, reservation_timeout_s=3600)
    store.add_user("alice")
    store.register_dataset("PENGUIN", PENGUIN_ACCESS, PENGUIN_METADATA)
    store.grant("alice", "PENGUIN", 1.0, 1e-3)
    runner = JobRunner(sessions, workers=1, max_per_user=2)
    release_first = threading.Event()
    started_first = threading.Event()

    def first() -> QueryResponse:
        started_first.set()
        release_first.wait(30)
        raise InternalServerError()

    reservation = ledger.reserve("alice", "PENGUIN", DPLibrary.SMARTNOISE_SQL, {}, 0.5, 0.0)
    running = runner.submit("alice", DPLibrary.SMARTNOISE_SQL, True, PreparedQuery("PENGUIN", first, lambda: None))
    assert started_first.wait(30)
    queued = runner.submit(
        "alice",
        DPLibrary.SMARTNOISE_SQL,
        False,
        PreparedQuery("PENGUIN", lambda: pytest.fail("a cancelled job ran"), lambda: ledger.release(reservation)),
    )
    assert store.count_queries(QueryStatus.RESERVED) == 1

    stopping = threading.Thread(target=runner.shutdown)
    stopping.start()
    deadline = time.monotonic() + 30  # shutdown cancels the queued job first, then waits for the running one
    while runner.status("alice", queued.job_id).status != "failed" and time.monotonic() < deadline:
        time.sleep(0.01)
    release_first.set()
    stopping.join(30)

    assert (store.count_queries(QueryStatus.RESERVED), store.count_queries(QueryStatus.RELEASED)) == (0, 1)
    assert ledger.budget("alice", "PENGUIN").spent_epsilon == 0
    cancelled = runner.status("alice", queued.job_id)
    assert (cancelled.status, cancelled.status_code) == ("failed", 500)
    assert cancelled.error is not None and cancelled.error.message == SERVER_STOPPED
    finished = runner.status("alice", running.job_id)
    assert (finished.status, finished.status_code) == ("failed", 500)


def test_one_user_cannot_hold_every_worker(sessions: sessionmaker[Session]) -> None:
    """Past jobs.max_per_user, a user's next long query is refused and its reservation given back;
    other users still get theirs queued."""
    store = AdminStore(sessions)
    for user in ("alice", "bob"):
        store.add_user(user)
    store.register_dataset("PENGUIN", PENGUIN_ACCESS, PENGUIN_METADATA)
    runner = JobRunner(sessions, workers=1, max_per_user=1)
    release = threading.Event()
    abandoned: list[str] = []

    def blocked() -> QueryResponse:
        release.wait(30)
        raise InternalServerError()

    def query(name: str) -> PreparedQuery:
        return PreparedQuery("PENGUIN", blocked, lambda: abandoned.append(name))

    first = runner.submit("alice", DPLibrary.SMARTNOISE_SYNTH, True, query("alice 1"))
    with pytest.raises(InvalidQueryError, match=r"alice already has 1 long queries .*jobs.max_per_user"):
        runner.submit("alice", DPLibrary.SMARTNOISE_SYNTH, True, query("alice 2"))
    with pytest.raises(InvalidQueryError, match="max_per_user"):
        runner.execute("alice", query("alice 3"))
    assert abandoned == ["alice 2", "alice 3"]  # refused before running: their budget is given back
    bobs = runner.submit("bob", DPLibrary.SMARTNOISE_SYNTH, True, query("bob"))
    assert runner.status("bob", bobs.job_id).status in ("pending", "running")

    release.set()
    wait_until_failed(runner, "alice", first.job_id)
    later = runner.submit("alice", DPLibrary.SMARTNOISE_SYNTH, True, query("alice 4"))  # a slot is free again
    wait_until_failed(runner, "alice", later.job_id)
    runner.shutdown()
    assert abandoned == ["alice 2", "alice 3"]


def wait_until_failed(runner: JobRunner, user: str, job_id: str) -> None:
    deadline = time.monotonic() + 30
    while runner.status(user, job_id).status != "failed":
        assert time.monotonic() < deadline, f"job {job_id} did not end"
        time.sleep(0.01)
