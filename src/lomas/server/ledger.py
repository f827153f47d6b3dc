"""The budget ledger: basic sequential composition of (epsilon, delta) per user and dataset.

A query's cost is reserved before any private data is read, in one transaction that checks the
remaining budget and holds the cost (safe under concurrent requests and several server processes on
one database). Afterwards the reservation is either charged (private data was touched, whether or
not execution then succeeded) together with the archive entry, or released (private data was never
read). A reservation whose execution crashed expires and is charged, because its data may have
been read; it never blocks the user beyond its own cost.

Amounts are summed as exact decimals (`Decimal(repr(x))`, kept as text), so that the spent budget is
exactly the sum of the archived costs, and ten queries of 0.1 exactly spend a budget of 1.0.
"""

from __future__ import annotations

import decimal
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from lomas.core.errors import InvalidQueryError, UnauthorizedAccessError
from lomas.server.store.models import Dataset, Grant, Query, QueryStatus, User

_EXACT = decimal.Context(prec=200)
CRASHED_EXECUTION = "The execution did not complete (the server stopped); its cost was charged."


def exact(value: float | str) -> Decimal:
    """The decimal a float prints as (0.1 is 0.1), or a stored decimal string."""
    return Decimal(repr(float(value))) if isinstance(value, float) else Decimal(value)


def _text(value: Decimal) -> str:
    return format(value.normalize(_EXACT), "f")


@dataclass(frozen=True)
class Budget:
    """A grant's budget, exact; the float properties are what the 0.4 protocol reports."""

    exact_initial_epsilon: Decimal
    exact_initial_delta: Decimal
    exact_spent_epsilon: Decimal
    exact_spent_delta: Decimal

    @property
    def initial_epsilon(self) -> float:
        return float(self.exact_initial_epsilon)

    @property
    def initial_delta(self) -> float:
        return float(self.exact_initial_delta)

    @property
    def spent_epsilon(self) -> float:
        return float(self.exact_spent_epsilon)

    @property
    def spent_delta(self) -> float:
        return float(self.exact_spent_delta)

    @property
    def remaining_epsilon(self) -> float:
        return float(self.exact_initial_epsilon - self.exact_spent_epsilon)

    @property
    def remaining_delta(self) -> float:
        return float(self.exact_initial_delta - self.exact_spent_delta)


@dataclass(frozen=True)
class Reservation:
    query_id: int
    grant_id: int
    epsilon: float
    delta: float


_GRANT_COLUMNS = (
    Grant.id,
    Grant.user_id,
    Grant.dataset_id,
    Grant.initial_epsilon,
    Grant.initial_delta,
    Grant.spent_epsilon,
    Grant.spent_delta,
    Grant.reserved_epsilon,
    Grant.reserved_delta,
)
_BY_NAMES = (
    Grant.user_id == select(User.id).where(User.name == bindparam("user_name")).scalar_subquery(),
    Grant.dataset_id == select(Dataset.id).where(Dataset.name == bindparam("dataset_name")).scalar_subquery(),
    Grant.revoked_at.is_(None),
)
# Statements built once: building SQLAlchemy statements costs more than SQLite takes to run them.
# Locking is a write that reads the row back, so SQLite takes its write lock at once and PostgreSQL
# locks the row: no two transactions ever read the same totals.
_NO_SYNC = {"synchronize_session": False}  # no ORM objects to keep in step: skip that work
_LOCK_BY_NAMES = (
    update(Grant)
    .where(*_BY_NAMES)
    .values(lock_version=Grant.lock_version + 1)
    .returning(*_GRANT_COLUMNS)
    .execution_options(**_NO_SYNC)
)
_LOCK_BY_ID = (
    update(Grant)
    .where(Grant.id == bindparam("b_grant_id"))
    .values(lock_version=Grant.lock_version + 1)
    .returning(*_GRANT_COLUMNS)
    .execution_options(**_NO_SYNC)
)
_SAVE_GRANT = update(Grant).where(Grant.id == bindparam("b_grant_id")).execution_options(**_NO_SYNC)
_INSERT_QUERY = insert(Query).returning(Query.id)
_SETTLE_QUERY = (
    update(Query)
    .where(Query.id == bindparam("b_query_id"), Query.status == QueryStatus.RESERVED)
    .returning(Query.epsilon, Query.delta)
    .execution_options(**_NO_SYNC)
)
_CHARGE_EXPIRED = (
    update(Query)
    .where(
        Query.user_id == bindparam("b_user_id"),
        Query.dataset_id == bindparam("b_dataset_id"),
        Query.status == QueryStatus.RESERVED,
        Query.expires_at < bindparam("now"),
    )
    .values(status=QueryStatus.CHARGED, error=CRASHED_EXECUTION, finished_at=bindparam("now"))
    .returning(Query.epsilon, Query.delta)
    .execution_options(**_NO_SYNC)
)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Ledger:
    """Reserve, charge and release budget; read budgets and archives."""

    def __init__(self, sessions: sessionmaker[Session], reservation_timeout_s: float) -> None:
        self._sessions = sessions
        self._timeout = timedelta(seconds=reservation_timeout_s)

    # -- reading -------------------------------------------------------------------------------
    def budget(self, user_name: str, dataset_name: str) -> Budget:
        with self._sessions() as session:
            grant = _active_grant(session, user_name, dataset_name)
            return Budget(
                exact(grant.initial_epsilon),
                exact(grant.initial_delta),
                exact(grant.spent_epsilon),
                exact(grant.spent_delta),
            )

    # -- writing -------------------------------------------------------------------------------
    # Core statements, not ORM units of work: these two transactions run on every query.
    def reserve(
        self, user_name: str, dataset_name: str, library: str, client_input: dict[str, Any], epsilon: float, delta: float
    ) -> Reservation:
        """Hold the cost of a query, or refuse it when the remaining budget cannot pay for it."""
        if not all(math.isfinite(value) and value >= 0 for value in (epsilon, delta)):
            raise InvalidQueryError(f"A cost must be finite and non-negative, not epsilon={epsilon}, delta={delta}.")
        with self._sessions.begin() as session:
            connection = session.connection()  # Core statements on the connection skip the ORM's execution path
            grant = _lock_grant(connection, _LOCK_BY_NAMES, user_name=user_name, dataset_name=dataset_name)
            if grant is None:
                raise UnauthorizedAccessError(f"{user_name} does not have access to {dataset_name}.")
            self._charge_expired(connection, grant)
            eps, dlt = exact(epsilon), exact(delta)
            committed_eps = grant.spent_epsilon + grant.reserved_epsilon
            committed_dlt = grant.spent_delta + grant.reserved_delta
            if committed_eps + eps > grant.initial_epsilon or committed_dlt + dlt > grant.initial_delta:
                raise InvalidQueryError(
                    f"Not enough budget for this query: it costs epsilon={epsilon}, delta={delta} but the "
                    f"remaining budget is epsilon={float(grant.initial_epsilon - committed_eps)}, "
                    f"delta={float(grant.initial_delta - committed_dlt)}"
                    + (" (some of it is held by queries still running)." if grant.reserved_epsilon else ".")
                )
            grant.reserved_epsilon += eps
            grant.reserved_delta += dlt
            grant.save(connection)
            now = _utcnow()
            query_id = connection.execute(
                _INSERT_QUERY,
                dict(
                    user_id=grant.user_id,
                    dataset_id=grant.dataset_id,
                    library=library,
                    client_input=client_input,
                    epsilon=epsilon,
                    delta=delta,
                    status=QueryStatus.RESERVED,
                    created_at=now,
                    expires_at=now + self._timeout,
                ),
            ).scalar_one()
            return Reservation(query_id, grant.id, epsilon, delta)

    def charge(self, reservation: Reservation, response: dict[str, Any] | None, error: str | None = None) -> None:
        """Spend a reservation and archive the query with its response (or its generic error)."""
        self._settle(reservation, QueryStatus.CHARGED, response, error)

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back: the query never read private data."""
        self._settle(reservation, QueryStatus.RELEASED, None, None)

    def _settle(
        self, reservation: Reservation, status: QueryStatus, response: dict[str, Any] | None, error: str | None
    ) -> None:
        with self._sessions.begin() as session:
            connection = session.connection()
            grant = _lock_grant(connection, _LOCK_BY_ID, b_grant_id=reservation.grant_id)
            assert grant is not None, "a grant with an open reservation is never deleted"
            settled = connection.execute(
                _SETTLE_QUERY.values(status=status, response=response, error=error, finished_at=_utcnow()),
                {"b_query_id": reservation.query_id},
            ).one_or_none()
            if settled is None:
                return  # already settled (an expired reservation charged by another request)
            grant.move(exact(settled.epsilon), exact(settled.delta), to_spent=status == QueryStatus.CHARGED)
            grant.save(connection)

    def _charge_expired(self, connection: Connection, grant: _LockedGrant) -> None:
        """Charge the reservations of crashed executions (their private data may have been read)."""
        expired = connection.execute(
            _CHARGE_EXPIRED, {"b_user_id": grant.user_id, "b_dataset_id": grant.dataset_id, "now": _utcnow()}
        ).all()
        for epsilon, delta in expired:
            grant.move(exact(epsilon), exact(delta), to_spent=True)


@dataclass
class _LockedGrant:
    """A grant row read under its lock, with its amounts as exact decimals."""

    id: int
    user_id: int
    dataset_id: int
    initial_epsilon: Decimal
    initial_delta: Decimal
    spent_epsilon: Decimal
    spent_delta: Decimal
    reserved_epsilon: Decimal
    reserved_delta: Decimal

    def move(self, epsilon: Decimal, delta: Decimal, *, to_spent: bool) -> None:
        """Take a settled reservation off the reserved amounts, onto the spent ones when charged."""
        self.reserved_epsilon -= epsilon
        self.reserved_delta -= delta
        if to_spent:
            self.spent_epsilon += epsilon
            self.spent_delta += delta

    def save(self, connection: Connection) -> None:
        connection.execute(
            _SAVE_GRANT,
            {
                "b_grant_id": self.id,
                "spent_epsilon": _text(self.spent_epsilon),
                "spent_delta": _text(self.spent_delta),
                "reserved_epsilon": _text(self.reserved_epsilon),
                "reserved_delta": _text(self.reserved_delta),
            },
        )


def _lock_grant(connection: Connection, statement: Any, **params: Any) -> _LockedGrant | None:
    row = connection.execute(statement, params).one_or_none()
    if row is None:
        return None
    return _LockedGrant(row.id, row.user_id, row.dataset_id, *(exact(value) for value in row[3:]))


def _active_grant(session: Session, user_name: str, dataset_name: str) -> Grant:
    grant = session.scalars(
        select(Grant).where(*_BY_NAMES), {"user_name": user_name, "dataset_name": dataset_name}
    ).one_or_none()
    if grant is None:
        raise UnauthorizedAccessError(f"{user_name} does not have access to {dataset_name}.")
    return grant
