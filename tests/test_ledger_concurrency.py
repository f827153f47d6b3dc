"""Budgets under concurrency (DESIGN.md section 2, point 3), on SQLite and on PostgreSQL.

- Many threads of one process reserve and charge against one grant at the same instant.
- Several real server processes share one store and receive concurrent HTTP queries.
- Processes die while holding a reservation, or in the middle of the reserve or charge transaction.
- Several processes bring one empty store up to date at the same instant (replicas starting).

In every case a user sees: exactly as many queries succeed as the budget affords, the spent budget is
exactly the sum of the archived costs and never exceeds the initial budget, refusals are "Not enough
budget" (never a 500 or a database error), and nothing stays locked or half-written.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from conftest import LiveServer, start_server, stop_server
from lomas.core.errors import InvalidQueryError
from lomas.server.demo.seed import seed_if_empty
from lomas.server.ledger import CRASHED_EXECUTION, Ledger
from lomas.server.store.db import head_revision, make_engine, upgrade
from lomas.server.store.models import Grant, Query, QueryStatus
from lomas.server.store.service import AdminStore

INPUT = {"query_str": "SELECT COUNT(*) AS n FROM df"}
HOUR = 3600.0


def d(value: float) -> Decimal:
    return Decimal(repr(value))


def seed_grant(
    sessions: sessionmaker[Session], epsilon: float, delta: float, user: str = "alice"
) -> AdminStore:
    store = AdminStore(sessions)
    store.add_user(user)
    metadata = {
        "max_ids": 1,
        "rows": 10,
        "row_privacy": True,
        "columns": {"x": {"type": "int", "lower": 0, "upper": 9}},
    }
    store.register_dataset("DS", {"kind": "local", "path": "/nonexistent.csv", "format": "csv"}, metadata)
    store.grant(user, "DS", epsilon, delta)
    return store


def stored_grant(sessions: sessionmaker[Session]) -> Grant:
    with sessions() as session:
        [grant] = session.scalars(select(Grant)).all()
        return grant


def query_statuses(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        rows = session.scalars(select(Query.status)).all()
    return {status: rows.count(status) for status in set(rows)}


def all_at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads released together by a barrier; results or exceptions."""
    barrier = threading.Barrier(count)

    def run(i: int) -> Any:
        barrier.wait(timeout=60)
        try:
            return work(i)
        except Exception as error:  # noqa: BLE001 (collected and asserted on by the caller)
            return error

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


# -- a. threads of one process ----------------------------------------------------------------------


@pytest.mark.parametrize(("cost", "affordable"), [(0.1, 17), (0.3, 7)])
def test_concurrent_reservations_admit_exactly_what_the_budget_affords(
    sessions: sessionmaker[Session], cost: float, affordable: int
) -> None:
    initial = float(d(cost) * affordable)  # 1.7 and 2.1: sums that float arithmetic gets wrong
    store = seed_grant(sessions, initial, 1.0)
    ledger = Ledger(sessions, reservation_timeout_s=HOUR)

    def reserve_and_charge(i: int) -> str:
        reservation = ledger.reserve("alice", "DS", "smartnoise_sql", {"i": i}, cost, 1e-6)
        ledger.charge(reservation, {"i": i, "epsilon": cost})
        return "charged"

    outcomes = all_at_once(50, reserve_and_charge)

    refusals = [o for o in outcomes if o != "charged"]
    assert all(isinstance(o, InvalidQueryError) and "Not enough budget" in o.message for o in refusals), (
        refusals
    )
    assert len(outcomes) - len(refusals) == affordable
    grant = stored_grant(sessions)
    assert Decimal(grant.spent_epsilon) == d(cost) * affordable == d(initial)
    assert Decimal(grant.spent_delta) == Decimal("0.000001") * affordable
    assert (grant.reserved_epsilon, grant.reserved_delta) == ("0", "0")  # no reservation left open
    archives = store.archives("alice", "DS")
    assert len(archives) == affordable
    assert sum(d(a.epsilon) for a in archives) == Decimal(grant.spent_epsilon)
    assert query_statuses(sessions) == {QueryStatus.CHARGED: affordable}
    assert ledger.budget("alice", "DS").remaining_epsilon == 0.0


def test_concurrent_reserve_and_release_never_lose_a_release(sessions: sessionmaker[Session]) -> None:
    """Half the queries give their reservation back: the budget ends exactly where the charges put it."""
    seed_grant(sessions, 100.0, 1.0)
    ledger = Ledger(sessions, reservation_timeout_s=HOUR)

    def work(i: int) -> None:
        reservation = ledger.reserve("alice", "DS", "smartnoise_sql", {"i": i}, 0.1, 1e-7)
        if i % 2:
            ledger.release(reservation)
        else:
            ledger.charge(reservation, {"i": i})

    assert all_at_once(40, work) == [None] * 40
    grant = stored_grant(sessions)
    assert (Decimal(grant.spent_epsilon), Decimal(grant.spent_delta)) == (Decimal(2), Decimal("0.000002"))
    assert (grant.reserved_epsilon, grant.reserved_delta) == ("0", "0")
    assert query_statuses(sessions) == {QueryStatus.CHARGED: 20, QueryStatus.RELEASED: 20}


# -- b. several server processes on one store -------------------------------------------------------

COUNT_BODY = {
    "dataset_name": "PENGUIN",
    "query_str": "SELECT COUNT(*) AS n FROM df",
    "epsilon": 0.5,
    "delta": 1e-5,
    "mechanisms": {},
    "postprocess": True,
}
ANTARTICA = {"user-name": "Dr. Antartica"}


@pytest.fixture()
def three_servers(store_url: str, tmp_path: Path) -> Iterator[list[LiveServer]]:
    """Three server processes (one data dir, one store), the store seeded with the demo content."""
    data_dir = tmp_path / "shared"
    engine = make_engine(store_url)
    upgrade(engine)
    assert seed_if_empty(engine, data_dir)
    engine.dispose()
    env = {"LOMAS_ADMIN_DB_URL": store_url, "LOMAS_AUTH__OPEN_MODE": "true"}
    with ThreadPoolExecutor(max_workers=3) as pool:
        starting = [pool.submit(start_server, data_dir, env=env) for _ in range(3)]
        servers = [future.result() for future in starting]
    try:
        yield servers
    finally:
        for server in servers:
            stop_server(server)


def test_several_servers_on_one_store_never_overspend(three_servers: list[LiveServer]) -> None:
    clients = [httpx.Client(base_url=server.url, headers=ANTARTICA, timeout=120) for server in three_servers]
    try:
        initial = clients[0].post("/get_initial_budget", json={"dataset_name": "PENGUIN"}).json()
        assert initial == {"initial_epsilon": 10.0, "initial_delta": 0.005}
        cost = clients[1].post("/estimate_smartnoise_sql_cost", json=COUNT_BODY).json()
        assert cost["epsilon"] == 0.5

        responses = all_at_once(50, lambda i: clients[i % 3].post("/smartnoise_sql_query", json=COUNT_BODY))
        assert not [r for r in responses if isinstance(r, Exception)]
        ok = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert {(r.status_code, r.json()["type"]) for r in refused} <= {(400, "InvalidQueryException")}, [
            (r.status_code, r.text) for r in refused
        ]
        assert all(r.json()["message"].startswith("Not enough budget") for r in refused)
        assert len(ok) == 20  # the whole budget can be used, and not one query more
        assert {(r.json()["epsilon"], r.json()["delta"]) for r in ok} == {(cost["epsilon"], cost["delta"])}

        # Every server reports the same, exact, totals.
        for client in clients:
            spent = client.post("/get_total_spent_budget", json={"dataset_name": "PENGUIN"}).json()
            assert d(spent["total_spent_epsilon"]) == len(ok) * d(cost["epsilon"]) == Decimal(10)
            assert spent["total_spent_epsilon"] <= initial["initial_epsilon"]
            assert spent["total_spent_delta"] == float(len(ok) * d(cost["delta"]))
            assert spent["total_spent_delta"] <= initial["initial_delta"]
            remaining = client.post("/get_remaining_budget", json={"dataset_name": "PENGUIN"}).json()
            assert remaining["remaining_epsilon"] == 0.0
        history = (
            clients[2]
            .post("/get_previous_queries", json={"dataset_name": "PENGUIN"})
            .json()["previous_queries"]
        )
        assert len(history) == len(ok)
        assert sum(d(entry["response"]["epsilon"]) for entry in history) == Decimal(10)
        assert sorted(entry["response"]["result"]["df"]["data"][0][0] for entry in history) == sorted(
            r.json()["result"]["df"]["data"][0][0] for r in ok
        )
        after = clients[0].post("/smartnoise_sql_query", json=COUNT_BODY)
        assert after.status_code == 400 and after.json()["message"].startswith("Not enough budget")
    finally:
        for client in clients:
            client.close()
    for server in three_servers:
        assert "Traceback" not in server.log(), server.log()


# -- c. processes that die holding a reservation ------------------------------------------------------

CRASHING_PROCESS = textwrap.dedent(
    """
    import json, os, sys, time
    from lomas.server import ledger as ledger_module
    from lomas.server.ledger import Ledger
    from lomas.server.store.db import make_engine, session_factory

    url, timeout, epsilon, stage = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

    def hang_here(*args, **kwargs):
        print(json.dumps({"stage": stage}), flush=True)  # inside the transaction, grant row locked
        time.sleep(3600)

    if stage == "reserve":
        Ledger._charge_expired = hang_here
    ledger = Ledger(session_factory(make_engine(url)), reservation_timeout_s=timeout)
    reservation = ledger.reserve("alice", "DS", "smartnoise_sql", {"query_str": "doomed"}, epsilon, 0.0)
    if stage == "charge":
        ledger_module._LockedGrant.move = hang_here
        ledger.charge(reservation, {"never": "stored"})
    print(json.dumps({"stage": "reserved", "query_id": reservation.query_id}), flush=True)
    os._exit(0)  # no settlement, no clean-up: the process is gone
    """
)


def crashing_process(
    url: str, timeout: float, epsilon: float, stage: str
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start a process that reserves and then dies (or hangs at `stage` until killed); its first report."""
    process = subprocess.Popen(
        [sys.executable, "-c", CRASHING_PROCESS, url, str(timeout), str(epsilon), stage],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait()
        raise AssertionError(
            f"the crashing process failed early:\n{process.stderr.read() if process.stderr else ''}"
        )
    return process, json.loads(line)


def in_thread_within(seconds: float, work: Callable[[], Any]) -> Any:
    """`work()` in a thread; fails (instead of hanging the suite) if it has not returned in `seconds`."""
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(_call(work)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still blocked after {seconds}s: the store stayed locked"
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


def _call(work: Callable[[], Any]) -> Any:
    try:
        return work()
    except Exception as error:  # noqa: BLE001 (re-raised by the caller)
        return error


def test_a_reservation_left_by_a_dead_process_is_charged_after_its_timeout(
    store_url: str, sessions: sessionmaker[Session]
) -> None:
    store = seed_grant(sessions, 1.0, 1e-3)
    ledger = Ledger(sessions, reservation_timeout_s=HOUR)
    timeout = 2.0
    process, report = crashing_process(store_url, timeout, 0.6, "exit")
    assert process.wait(timeout=30) == 0 and report["stage"] == "reserved"
    with sessions() as session:
        expires_at = session.get(Query, report["query_id"]).expires_at  # type: ignore[union-attr]

    # Before the timeout: the dead reservation holds its own cost, and only that.
    spend = ledger.reserve("alice", "DS", "smartnoise_sql", INPUT, 0.3, 0.0)
    ledger.charge(spend, {"epsilon": 0.3})
    with pytest.raises(InvalidQueryError, match=r"epsilon=0\.1.*held by queries still running"):
        ledger.reserve("alice", "DS", "smartnoise_sql", INPUT, 0.3, 0.0)
    assert query_statuses(sessions)[QueryStatus.RESERVED] == 1, "charged before its timeout"

    _sleep_until(expires_at)  # the timeout is a duration: nothing to synchronise with but the clock
    last = ledger.reserve("alice", "DS", "smartnoise_sql", INPUT, 0.1, 0.0)
    ledger.charge(last, {"epsilon": 0.1})
    assert [(a.id, a.epsilon, a.error) for a in store.archives("alice")] == [
        (report["query_id"], 0.6, CRASHED_EXECUTION),
        (spend.query_id, 0.3, None),
        (last.query_id, 0.1, None),
    ]
    grant = stored_grant(sessions)
    assert (grant.spent_epsilon, grant.reserved_epsilon) == ("1", "0")


@pytest.mark.parametrize("stage", ["reserve", "charge"])
def test_a_process_killed_inside_a_ledger_transaction_leaves_nothing_locked_or_half_written(
    store_url: str, sessions: sessionmaker[Session], stage: str
) -> None:
    seed_grant(sessions, 1.0, 1e-3)
    ledger = Ledger(sessions, reservation_timeout_s=HOUR)
    process, report = crashing_process(store_url, 1e-3, 0.6, stage)
    try:
        assert report == {"stage": stage}  # it holds the grant's lock in an open transaction
    finally:
        os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL

    def reserve_and_charge() -> Any:
        reservation = ledger.reserve("alice", "DS", "smartnoise_sql", INPUT, 0.4, 0.0)
        ledger.charge(reservation, {"epsilon": 0.4})
        return reservation

    in_thread_within(20, reserve_and_charge)
    grant = stored_grant(sessions)
    archives = AdminStore(sessions).archives("alice")
    if stage == "reserve":  # killed before committing its reservation: it never existed
        assert (grant.spent_epsilon, grant.reserved_epsilon) == ("0.4", "0")
        assert [(a.epsilon, a.error) for a in archives] == [(0.4, None)]
        assert query_statuses(sessions) == {QueryStatus.CHARGED: 1}
    else:  # killed while charging: the charge was not written, the expired reservation was charged once
        assert (grant.spent_epsilon, grant.reserved_epsilon) == ("1", "0")
        assert [(a.epsilon, a.error, a.response) for a in archives] == [
            (0.6, CRASHED_EXECUTION, None),
            (0.4, None, {"epsilon": 0.4}),
        ]
        assert query_statuses(sessions) == {QueryStatus.CHARGED: 2}


def _sleep_until(moment: datetime) -> None:
    if moment.tzinfo is None:  # SQLite keeps the UTC wall time without its zone
        moment = moment.replace(tzinfo=UTC)
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.05)


# -- d. replicas starting together on an empty store -------------------------------------------------


def _upgrade_in_process(url: str, barrier: Any, results: Any) -> None:
    engine = make_engine(url)
    with engine.connect():
        pass  # connected before the race starts
    barrier.wait(timeout=60)
    try:
        upgrade(engine)
        results.put("ok")
    except Exception as error:  # noqa: BLE001 (reported to the test)
        results.put(f"{type(error).__name__}: {str(error).splitlines()[0]}")
    finally:
        engine.dispose()


def test_replicas_starting_together_bring_an_empty_store_up_to_date(store_url: str) -> None:
    """`upgrade` says it is safe from several processes at start-up: three replicas start at once."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.Queue()
    processes = [
        context.Process(target=_upgrade_in_process, args=(store_url, barrier, results)) for _ in range(3)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert outcomes == ["ok"] * 3
    engine = make_engine(store_url)
    try:
        assert {"users", "datasets", "grants", "queries"} <= set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                head_revision()
            ]
    finally:
        engine.dispose()
