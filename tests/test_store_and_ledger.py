"""The admin store and the budget ledger, on SQLite and on PostgreSQL (fixture `store_url`).

Migrations, users, datasets and grants as an administrator sees them; reservations, charges and
releases as a researcher's budget sees them, with exact decimal arithmetic.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from lomas.core.errors import InvalidQueryError, UnauthorizedAccessError
from lomas.server.demo.catalog import demo_datasets
from lomas.server.ledger import CRASHED_EXECUTION, Ledger, Reservation
from lomas.server.store.db import head_revision, make_engine, session_factory, upgrade
from lomas.server.store.models import Base, Grant, Query, QueryStatus
from lomas.server.store.service import Access, AdminStore, NotFoundError, StoreError

PENGUIN = next(dataset for dataset in demo_datasets() if dataset.name == "PENGUIN")
PENGUIN_METADATA: dict[str, Any] = yaml.safe_load(PENGUIN.metadata_path.read_text())
PENGUIN_ACCESS = {"kind": "local", "path": str(PENGUIN.data_path), "format": "csv"}
INPUT = {"query_str": "SELECT COUNT(*) AS n FROM df"}
HOUR = 3600.0


def d(value: float) -> Decimal:
    """The exact decimal a float prints as."""
    return Decimal(repr(value))


@pytest.fixture()
def store(sessions: sessionmaker[Session]) -> AdminStore:
    return AdminStore(sessions)


@pytest.fixture()
def ledger(sessions: sessionmaker[Session]) -> Ledger:
    return Ledger(sessions, reservation_timeout_s=HOUR)


def add_grant(
    store: AdminStore,
    user: str = "alice",
    dataset: str = "PENGUIN",
    epsilon: float = 1.0,
    delta: float = 1e-3,
) -> None:
    if not store.user_exists(user):
        store.add_user(user)
    if dataset not in store.list_datasets():
        store.register_dataset(dataset, PENGUIN_ACCESS, PENGUIN_METADATA)
    store.grant(user, dataset, epsilon, delta)


def spend(
    ledger: Ledger, epsilon: float, delta: float = 0.0, user: str = "alice", dataset: str = "PENGUIN"
) -> Reservation:
    reservation = ledger.reserve(user, dataset, "smartnoise_sql", INPUT, epsilon, delta)
    ledger.charge(reservation, {"epsilon": epsilon, "delta": delta})
    return reservation


def stored_grant(sessions: sessionmaker[Session], user: str = "alice") -> Grant:
    with sessions() as session:
        grants = [g for g in session.scalars(select(Grant)) if g.user.name == user]
        assert len(grants) == 1
        return grants[0]


def statuses(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(Query.status).order_by(Query.id)))


# -- migrations -------------------------------------------------------------------------------------


def test_migrations_create_the_schema_of_the_models_and_rerun_as_a_no_op(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        upgrade(engine)
        tables = set(inspect(engine).get_table_names())
        assert {"users", "datasets", "grants", "queries", "alembic_version"} <= tables
        head = head_revision()
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT version_num FROM alembic_version")) == head
            # The migrations build exactly what the models describe (nothing left to autogenerate).
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []

        store = AdminStore(session_factory(engine))
        add_grant(store)
        upgrade(engine)  # a second start-up: nothing to do, nothing lost
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                head
            ]
        assert set(inspect(engine).get_table_names()) == tables
        assert store.list_users() == ["alice"] and store.list_datasets() == ["PENGUIN"]
        assert len(store.grants("alice")) == 1
    finally:
        engine.dispose()


# -- users ------------------------------------------------------------------------------------------


def test_users_are_added_listed_and_refused_twice(store: AdminStore) -> None:
    store.add_user("bob")
    store.add_user("alice", may_query=False)
    assert store.list_users() == ["alice", "bob"]
    assert store.user_exists("bob") and not store.user_exists("carol")
    assert store.may_query("bob") and not store.may_query("alice") and not store.may_query("carol")
    with pytest.raises(StoreError, match="'bob' already exists"):
        store.add_user("bob")
    assert store.list_users() == ["alice", "bob"]

    store.set_may_query("alice", True)
    assert store.may_query("alice")
    with pytest.raises(NotFoundError, match="carol"):
        store.set_may_query("carol", True)
    with pytest.raises(NotFoundError, match="carol"):
        store.delete_user("carol")

    store.delete_user("bob")  # no grant, no archive: no cascade needed
    assert store.list_users() == ["alice"]


# -- datasets ---------------------------------------------------------------------------------------


def test_datasets_are_registered_versioned_and_validated(store: AdminStore) -> None:
    assert store.register_dataset("PENGUIN", PENGUIN_ACCESS, PENGUIN_METADATA) == 1
    record = store.dataset("PENGUIN")
    assert (record.name, record.access, record.version) == ("PENGUIN", PENGUIN_ACCESS, 1)
    assert record.metadata.rows == 344 and "species" in record.metadata.columns

    with pytest.raises(StoreError, match="'PENGUIN' already exists"):
        store.register_dataset("PENGUIN", PENGUIN_ACCESS, PENGUIN_METADATA)
    moved = {**PENGUIN_ACCESS, "path": "/elsewhere/penguins.csv"}
    assert store.register_dataset("PENGUIN", moved, PENGUIN_METADATA, replace=True) == 2
    assert (store.dataset("PENGUIN").access, store.dataset("PENGUIN").version) == (moved, 2)

    with pytest.raises(StoreError, match="Invalid metadata"):
        store.register_dataset("BROKEN", PENGUIN_ACCESS, {"max_ids": 1, "columns": "not a mapping"})
    assert store.list_datasets() == ["PENGUIN"]
    with pytest.raises(NotFoundError, match="NOPE"):
        store.dataset("NOPE")
    with pytest.raises(NotFoundError, match="NOPE"):
        store.delete_dataset("NOPE")


# -- grants -----------------------------------------------------------------------------------------


def test_grants_need_a_known_user_and_dataset_and_a_valid_budget(store: AdminStore) -> None:
    store.add_user("alice")
    store.register_dataset("PENGUIN", PENGUIN_ACCESS, PENGUIN_METADATA)
    with pytest.raises(NotFoundError, match="carol"):
        store.grant("carol", "PENGUIN", 1.0, 1e-5)
    with pytest.raises(NotFoundError, match="NOPE"):
        store.grant("alice", "NOPE", 1.0, 1e-5)
    for epsilon, delta in [(-1.0, 0.0), (1.0, -1e-5), (1.0, 1.5), (float("nan"), 0.0), (float("inf"), 0.0)]:
        with pytest.raises(StoreError, match="epsilon >= 0"):
            store.grant("alice", "PENGUIN", epsilon, delta)
    assert store.grants() == []

    store.grant("alice", "PENGUIN", 2.5, 1e-4)
    [grant] = store.grants()
    assert (grant.user_name, grant.dataset_name, grant.initial_epsilon, grant.initial_delta) == (
        "alice",
        "PENGUIN",
        2.5,
        1e-4,
    )
    assert (grant.spent_epsilon, grant.spent_delta, grant.revoked) == (0.0, 0.0, False)
    with pytest.raises(StoreError, match="already has a grant"):
        store.grant("alice", "PENGUIN", 5.0, 1e-4)

    store.set_initial_budget("alice", "PENGUIN", 4.0, 2e-4)
    assert (store.grants()[0].initial_epsilon, store.grants()[0].initial_delta) == (4.0, 2e-4)
    with pytest.raises(StoreError, match="epsilon >= 0"):
        store.set_initial_budget("alice", "PENGUIN", -4.0, 2e-4)
    store.add_user("bob")
    with pytest.raises(NotFoundError, match="no grant"):
        store.set_initial_budget("bob", "PENGUIN", 1.0, 0.0)
    with pytest.raises(NotFoundError, match="no grant"):
        store.revoke("bob", "PENGUIN")
    assert store.grants("bob") == [] and len(store.grants(dataset_name="PENGUIN")) == 1


def test_delete_is_refused_while_grants_exist_and_cascade_removes_them(
    store: AdminStore, ledger: Ledger
) -> None:
    add_grant(store, "alice")
    add_grant(store, "bob")
    spend(ledger, 0.25, user="alice")

    with pytest.raises(StoreError, match="1 grant"):
        store.delete_user("alice")
    with pytest.raises(StoreError, match="2 grant"):
        store.delete_dataset("PENGUIN")
    assert store.list_users() == ["alice", "bob"] and store.list_datasets() == ["PENGUIN"]
    assert len(store.archives("alice")) == 1

    store.delete_user("alice", cascade=True)
    assert store.list_users() == ["bob"]
    assert [g.user_name for g in store.grants()] == ["bob"]
    assert store.archives() == []
    with pytest.raises(UnauthorizedAccessError):
        ledger.budget("alice", "PENGUIN")

    store.delete_dataset("PENGUIN", cascade=True)
    assert store.list_datasets() == [] and store.grants() == []
    assert store.list_users() == ["bob"]


def test_delete_with_cascade_waits_for_running_queries(store: AdminStore, ledger: Ledger) -> None:
    add_grant(store)
    running = ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.5, 0.0)
    with pytest.raises(StoreError, match="running"):
        store.delete_user("alice", cascade=True)
    with pytest.raises(StoreError, match="running"):
        store.delete_dataset("PENGUIN", cascade=True)
    ledger.charge(running, {"epsilon": 0.5})
    assert ledger.budget("alice", "PENGUIN").spent_epsilon == 0.5
    store.delete_user("alice", cascade=True)
    assert store.list_users() == []


def test_revoke_keeps_the_spending_and_a_new_grant_restores_it(store: AdminStore, ledger: Ledger) -> None:
    add_grant(store, epsilon=1.0, delta=1e-3)
    spend(ledger, 0.3, 1e-4)
    running = ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.2, 0.0)

    store.revoke("alice", "PENGUIN")
    [grant] = store.grants("alice")
    assert grant.revoked and (grant.spent_epsilon, grant.spent_delta) == (0.3, 1e-4)
    with pytest.raises(UnauthorizedAccessError, match="alice does not have access to PENGUIN"):
        ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.1, 0.0)
    with pytest.raises(UnauthorizedAccessError):
        ledger.budget("alice", "PENGUIN")

    # A query that was already running when access was revoked is still charged.
    ledger.charge(running, {"epsilon": 0.2})
    assert store.grants("alice")[0].spent_epsilon == 0.5

    store.grant("alice", "PENGUIN", 2.0, 1e-3)  # a new grant on the same pair: spending carried over
    budget = ledger.budget("alice", "PENGUIN")
    assert (budget.initial_epsilon, budget.spent_epsilon, budget.remaining_epsilon) == (2.0, 0.5, 1.5)
    assert budget.spent_delta == 1e-4
    spend(ledger, 1.5)
    with pytest.raises(InvalidQueryError, match="Not enough budget"):
        ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.1, 0.0)


def test_setting_the_initial_budget_changes_what_can_be_spent(store: AdminStore, ledger: Ledger) -> None:
    add_grant(store, epsilon=1.0)
    spend(ledger, 0.75)
    with pytest.raises(InvalidQueryError, match="Not enough budget"):
        ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.5, 0.0)
    store.set_initial_budget("alice", "PENGUIN", 1.25, 1e-3)
    spend(ledger, 0.5)
    assert ledger.budget("alice", "PENGUIN").remaining_epsilon == 0.0

    store.set_initial_budget("alice", "PENGUIN", 1.0, 1e-3)  # lowered below what was spent
    budget = ledger.budget("alice", "PENGUIN")
    assert (budget.spent_epsilon, budget.remaining_epsilon) == (1.25, -0.25)
    with pytest.raises(InvalidQueryError, match="Not enough budget"):
        ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 1e-9, 0.0)


def test_access_tells_who_may_reach_a_dataset(store: AdminStore) -> None:
    add_grant(store, "alice")
    store.add_user("bob")
    store.add_user("mallory", may_query=False)
    store.grant("mallory", "PENGUIN", 1.0, 0.0)
    store.register_dataset("IRIS", PENGUIN_ACCESS, PENGUIN_METADATA)

    granted = store.access("alice", "PENGUIN")
    assert (granted.user_exists, granted.may_query) == (True, True)
    assert granted.dataset is not None and (granted.dataset.name, granted.dataset.version) == ("PENGUIN", 1)
    assert granted.dataset.access == PENGUIN_ACCESS and granted.dataset.metadata.rows == 344
    assert store.access("carol", "PENGUIN") == Access(False, False, None)  # unknown user
    assert store.access("bob", "PENGUIN") == Access(True, True, None)  # no grant
    assert store.access("alice", "IRIS") == Access(True, True, None)  # no grant on this one
    assert store.access("alice", "NOPE") == Access(True, True, None)  # unknown dataset
    suspended = store.access("mallory", "PENGUIN")
    assert (suspended.user_exists, suspended.may_query, suspended.dataset is not None) == (True, False, True)

    store.revoke("alice", "PENGUIN")
    assert store.access("alice", "PENGUIN") == Access(True, True, None)
    store.grant("alice", "PENGUIN", 1.0, 0.0)
    store.register_dataset("PENGUIN", PENGUIN_ACCESS, PENGUIN_METADATA, replace=True)
    assert store.access("alice", "PENGUIN").dataset.version == 2  # type: ignore[union-attr]


# -- ledger -----------------------------------------------------------------------------------------


def test_reserve_holds_charge_spends_and_release_gives_back(
    store: AdminStore, ledger: Ledger, sessions: sessionmaker[Session]
) -> None:
    add_grant(store, epsilon=1.0, delta=1e-3)
    first = ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.3, 1e-4)
    assert ledger.budget("alice", "PENGUIN").spent_epsilon == 0.0  # held, not spent
    with pytest.raises(
        InvalidQueryError, match=r"remaining budget is epsilon=0\.7.*held by queries still running"
    ):
        ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.8, 0.0)

    ledger.charge(first, {"epsilon": 0.3, "delta": 1e-4, "result": "r1"})
    budget = ledger.budget("alice", "PENGUIN")
    assert (budget.spent_epsilon, budget.spent_delta) == (0.3, 1e-4)
    assert (budget.remaining_epsilon, budget.remaining_delta) == (0.7, 0.0009)

    second = ledger.reserve("alice", "PENGUIN", "smartnoise_sql", {"query_str": "second"}, 0.7, 9e-4)
    ledger.release(second)  # private data never read
    budget = ledger.budget("alice", "PENGUIN")
    assert (budget.spent_epsilon, budget.remaining_epsilon, budget.remaining_delta) == (0.3, 0.7, 0.0009)
    assert statuses(sessions) == [QueryStatus.CHARGED, QueryStatus.RELEASED]

    third = spend(ledger, 0.7, 9e-4)  # the released amount is usable again, to the last bit
    assert third.epsilon == 0.7
    budget = ledger.budget("alice", "PENGUIN")
    assert (budget.spent_epsilon, budget.spent_delta, budget.remaining_epsilon, budget.remaining_delta) == (
        1.0,
        1e-3,
        0.0,
        0.0,
    )

    archives = store.archives("alice", "PENGUIN")  # charged queries only, oldest first, with responses
    assert [(a.epsilon, a.delta, a.status) for a in archives] == [
        (0.3, 1e-4, "charged"),
        (0.7, 9e-4, "charged"),
    ]
    assert archives[0].response == {"epsilon": 0.3, "delta": 1e-4, "result": "r1"}
    assert archives[0].client_input == INPUT and archives[0].library == "smartnoise_sql"
    grant = stored_grant(sessions)
    assert (grant.reserved_epsilon, grant.reserved_delta) == ("0", "0")


def test_ten_charges_of_a_tenth_spend_exactly_one(
    store: AdminStore, ledger: Ledger, sessions: sessionmaker[Session]
) -> None:
    add_grant(store, epsilon=1.0, delta=1e-4)
    for _ in range(10):
        spend(ledger, 0.1, 1e-5)
    budget = ledger.budget("alice", "PENGUIN")
    assert (budget.spent_epsilon, budget.spent_delta) == (1.0, 1e-4)
    assert (budget.remaining_epsilon, budget.remaining_delta) == (0.0, 0.0)
    with pytest.raises(InvalidQueryError, match=r"remaining budget is epsilon=0\.0, delta=0\.0\.$"):
        ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.1, 1e-5)
    with pytest.raises(InvalidQueryError, match="Not enough budget"):
        ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 1e-12, 0.0)
    assert len(store.archives("alice")) == 10
    assert stored_grant(sessions).spent_epsilon == "1"


def test_spent_is_the_exact_decimal_sum_of_the_archived_costs(
    store: AdminStore, ledger: Ledger, sessions: sessionmaker[Session]
) -> None:
    add_grant(store, epsilon=10.0, delta=1e-2)
    costs = [
        (0.1, 1e-5),
        (0.2, 1.4999949999983109e-05),
        (1 / 3, 0.0),
        (0.7, 1e-7),
        (2 / 3, 3e-9),
        (1e-9, 0.0),
        (0.15, 2e-5),
    ]
    for epsilon, delta in costs:
        spend(ledger, epsilon, delta)
    grant = stored_grant(sessions)
    archives = store.archives("alice")
    assert Decimal(grant.spent_epsilon) == sum(d(a.epsilon) for a in archives) == sum(d(e) for e, _ in costs)
    assert Decimal(grant.spent_delta) == sum(d(a.delta) for a in archives) == sum(d(x) for _, x in costs)
    budget = ledger.budget("alice", "PENGUIN")
    assert budget.spent_epsilon == float(sum(d(e) for e, _ in costs))
    # The remaining budget is reported as a float: exact up to the float's rounding.
    assert budget.remaining_epsilon == pytest.approx(
        float(Decimal(10) - sum(d(e) for e, _ in costs)), rel=1e-15
    )


def test_over_budget_is_refused_with_the_remaining_budget_and_holds_nothing(
    store: AdminStore, ledger: Ledger, sessions: sessionmaker[Session]
) -> None:
    add_grant(store, epsilon=1.0, delta=1e-4)
    spend(ledger, 0.75, 2.5e-5)
    with pytest.raises(InvalidQueryError) as refused:
        ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.5, 1e-5)
    assert refused.value.message == (
        "Not enough budget for this query: it costs epsilon=0.5, delta=1e-05 "
        "but the remaining budget is epsilon=0.25, delta=7.5e-05."
    )
    with pytest.raises(InvalidQueryError, match=r"delta=7\.5e-05"):  # delta alone can refuse too
        ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.01, 1e-4)
    assert statuses(sessions) == [QueryStatus.CHARGED]  # the refused queries left no trace
    grant = stored_grant(sessions)
    assert (grant.reserved_epsilon, grant.reserved_delta) == ("0", "0")
    spend(ledger, 0.25, 7.5e-5)  # exactly what remains is allowed
    assert ledger.budget("alice", "PENGUIN").remaining_epsilon == 0.0


def test_settling_twice_is_harmless(
    store: AdminStore, ledger: Ledger, sessions: sessionmaker[Session]
) -> None:
    add_grant(store, epsilon=1.0)
    charged = spend(ledger, 0.4)
    ledger.charge(charged, {"again": True})
    ledger.release(charged)
    released = ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.3, 0.0)
    ledger.release(released)
    ledger.release(released)
    ledger.charge(released, {"late": True})

    budget = ledger.budget("alice", "PENGUIN")
    assert (budget.spent_epsilon, budget.remaining_epsilon) == (0.4, 0.6)
    assert statuses(sessions) == [QueryStatus.CHARGED, QueryStatus.RELEASED]
    grant = stored_grant(sessions)
    assert (grant.reserved_epsilon, grant.spent_epsilon) == ("0", "0.4")
    [archive] = store.archives("alice")
    assert archive.response == {"epsilon": 0.4, "delta": 0.0}
    spend(ledger, 0.6)


def test_a_crashed_reservation_is_charged_at_the_next_reserve_and_never_locks_the_user(
    store: AdminStore, ledger: Ledger, sessions: sessionmaker[Session]
) -> None:
    add_grant(store, epsilon=1.0, delta=1e-3)
    crashed_process = Ledger(sessions, reservation_timeout_s=1e-6)  # its reservation expires at once
    crashed = crashed_process.reserve(
        "alice", "PENGUIN", "smartnoise_sql", {"query_str": "crashed"}, 0.9, 1e-4
    )
    # ... the process dies here: neither charge nor release.

    after = spend(ledger, 0.1, 0.0)  # the user is not locked: 0.1 still fits once 0.9 is charged
    budget = ledger.budget("alice", "PENGUIN")
    assert (budget.spent_epsilon, budget.spent_delta, budget.remaining_epsilon) == (1.0, 1e-4, 0.0)
    archives = store.archives("alice")
    assert [(a.id, a.epsilon, a.error) for a in archives] == [
        (crashed.query_id, 0.9, CRASHED_EXECUTION),
        (after.query_id, 0.1, None),
    ]
    with pytest.raises(InvalidQueryError, match=r"remaining budget is epsilon=0\.0, delta=0\.0009\.$"):
        ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.1, 0.0)

    crashed_process.charge(crashed, {"late": True})  # a late settlement changes nothing
    crashed_process.release(crashed)
    assert ledger.budget("alice", "PENGUIN").spent_epsilon == 1.0
    grant = stored_grant(sessions)
    assert (grant.spent_epsilon, grant.reserved_epsilon, grant.reserved_delta) == ("1", "0", "0")


def test_a_running_reservation_is_not_charged_before_its_timeout(
    store: AdminStore, ledger: Ledger, sessions: sessionmaker[Session]
) -> None:
    add_grant(store, epsilon=1.0)
    running = ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.5, 0.0)
    spend(ledger, 0.25)
    assert statuses(sessions) == [QueryStatus.RESERVED, QueryStatus.CHARGED]
    with pytest.raises(InvalidQueryError, match="held by queries still running"):
        ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.5, 0.0)
    ledger.release(running)
    spend(ledger, 0.75)


def test_unknown_user_dataset_or_revoked_grant_is_unauthorized(store: AdminStore, ledger: Ledger) -> None:
    add_grant(store, "alice")
    store.add_user("bob")  # a user without a grant
    store.register_dataset("IRIS", PENGUIN_ACCESS, PENGUIN_METADATA)  # a dataset alice has no grant on
    cases = [("carol", "PENGUIN"), ("alice", "NOPE"), ("bob", "PENGUIN"), ("alice", "IRIS")]
    for user, dataset in cases:
        with pytest.raises(UnauthorizedAccessError, match=f"{user} does not have access to {dataset}"):
            ledger.reserve(user, dataset, "smartnoise_sql", INPUT, 0.1, 0.0)
        with pytest.raises(UnauthorizedAccessError):
            ledger.budget(user, dataset)
    store.revoke("alice", "PENGUIN")
    with pytest.raises(UnauthorizedAccessError, match="alice does not have access to PENGUIN"):
        ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, 0.1, 0.0)
    assert store.count_queries(QueryStatus.RESERVED) == 0 and store.archives() == []


# -- found while testing (see the report): these fail until the store / ledger are fixed ------------


@pytest.fixture()
def server_in_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The server machine's local time zone is not UTC."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_archive_timestamps_are_absolute_whatever_the_server_time_zone(
    store: AdminStore, ledger: Ledger, server_in_new_york: None
) -> None:
    """/get_previous_queries sends `created_at.timestamp()`: a naive UTC datetime is read as local time."""
    add_grant(store)
    before = time.time()
    spend(ledger, 0.1)
    [archive] = store.archives("alice")
    assert archive.created_at.utcoffset() is not None, (
        "a naive datetime: its .timestamp() depends on the server's zone"
    )
    assert before - 1 <= archive.created_at.timestamp() <= time.time() + 1


@pytest.mark.parametrize(
    ("epsilon", "delta"), [(-5.0, 0.0), (0.1, -1e-5), (float("nan"), 0.0), (0.1, float("nan"))]
)
def test_a_cost_that_is_not_a_non_negative_number_is_refused_without_touching_the_budget(
    store: AdminStore, ledger: Ledger, epsilon: float, delta: float
) -> None:
    """The ledger is the last guard of the budget: a negative cost would give budget back (a refund)."""
    add_grant(store, epsilon=1.0, delta=1e-3)
    with pytest.raises((InvalidQueryError, ValueError)):
        reservation = ledger.reserve("alice", "PENGUIN", "smartnoise_sql", INPUT, epsilon, delta)
        ledger.charge(reservation, {})
    budget = ledger.budget("alice", "PENGUIN")
    assert (budget.spent_epsilon, budget.spent_delta) == (0.0, 0.0)
    assert store.count_queries(QueryStatus.RESERVED) == 0
