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

from sqlalchemy import select, update
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
    def reserve(
        self, user_name: str, dataset_name: str, library: str, client_input: dict[str, Any], epsilon: float, delta: float
    ) -> Reservation:
        """Hold the cost of a query, or refuse it when the remaining budget cannot pay for it."""
        if not all(math.isfinite(value) and value >= 0 for value in (epsilon, delta)):
            raise InvalidQueryError(f"A cost must be finite and non-negative, not epsilon={epsilon}, delta={delta}.")
        with self._sessions.begin() as session:
            grant = _lock_grant(session, user_name, dataset_name)
            self._charge_expired(session, grant)
            eps, dlt = exact(epsilon), exact(delta)
            committed_eps = exact(grant.spent_epsilon) + exact(grant.reserved_epsilon)
            committed_dlt = exact(grant.spent_delta) + exact(grant.reserved_delta)
            if committed_eps + eps > exact(grant.initial_epsilon) or committed_dlt + dlt > exact(grant.initial_delta):
                remaining_eps = exact(grant.initial_epsilon) - committed_eps
                remaining_dlt = exact(grant.initial_delta) - committed_dlt
                raise InvalidQueryError(
                    "Not enough budget for this query: it costs epsilon="
                    f"{epsilon}, delta={delta} but the remaining budget is epsilon={float(remaining_eps)}, "
                    f"delta={float(remaining_dlt)}"
                    + (" (some of it is held by queries still running)." if grant.reserved_epsilon != "0" else ".")
                )
            grant.reserved_epsilon = _text(exact(grant.reserved_epsilon) + eps)
            grant.reserved_delta = _text(exact(grant.reserved_delta) + dlt)
            now = _utcnow()
            query = Query(
                user_id=grant.user_id,
                dataset_id=grant.dataset_id,
                library=library,
                client_input=client_input,
                epsilon=epsilon,
                delta=delta,
                status=QueryStatus.RESERVED,
                created_at=now,
                expires_at=now + self._timeout,
            )
            session.add(query)
            session.flush()
            return Reservation(query.id, grant.id, epsilon, delta)

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
            grant = _lock_grant_by_id(session, reservation.grant_id)
            query = session.get(Query, reservation.query_id)
            if query is None or query.status != QueryStatus.RESERVED:
                return  # already settled (an expired reservation charged by another request)
            query.status = status
            query.response = response
            query.error = error
            query.finished_at = _utcnow()
            _move(grant, query, to_spent=status == QueryStatus.CHARGED)

    def _charge_expired(self, session: Session, grant: Grant) -> None:
        """Charge the reservations of crashed executions (their private data may have been read)."""
        expired = session.scalars(
            select(Query).where(
                Query.user_id == grant.user_id,
                Query.dataset_id == grant.dataset_id,
                Query.status == QueryStatus.RESERVED,
                Query.expires_at < _utcnow(),
            )
        ).all()
        for query in expired:
            query.status = QueryStatus.CHARGED
            query.error = CRASHED_EXECUTION
            query.finished_at = _utcnow()
            _move(grant, query, to_spent=True)


def _move(grant: Grant, query: Query, *, to_spent: bool) -> None:
    eps, dlt = exact(query.epsilon), exact(query.delta)
    grant.reserved_epsilon = _text(exact(grant.reserved_epsilon) - eps)
    grant.reserved_delta = _text(exact(grant.reserved_delta) - dlt)
    if to_spent:
        grant.spent_epsilon = _text(exact(grant.spent_epsilon) + eps)
        grant.spent_delta = _text(exact(grant.spent_delta) + dlt)


def _grant_filter(user_name: str, dataset_name: str) -> Any:
    return (
        Grant.user_id == select(User.id).where(User.name == user_name).scalar_subquery(),
        Grant.dataset_id == select(Dataset.id).where(Dataset.name == dataset_name).scalar_subquery(),
        Grant.revoked_at.is_(None),
    )


def _active_grant(session: Session, user_name: str, dataset_name: str) -> Grant:
    grant = session.scalars(select(Grant).where(*_grant_filter(user_name, dataset_name))).one_or_none()
    if grant is None:
        raise UnauthorizedAccessError(f"{user_name} does not have access to {dataset_name}.")
    return grant


def _lock_grant(session: Session, user_name: str, dataset_name: str) -> Grant:
    """Lock the grant row before reading it: the first statement is a write, so SQLite takes its
    write lock at once and PostgreSQL locks the row, and no two transactions read the same totals."""
    result = session.execute(
        update(Grant)
        .where(*_grant_filter(user_name, dataset_name))
        .values(lock_version=Grant.lock_version + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise UnauthorizedAccessError(f"{user_name} does not have access to {dataset_name}.")
    return _active_grant(session, user_name, dataset_name)


def _lock_grant_by_id(session: Session, grant_id: int) -> Grant:
    session.execute(
        update(Grant)
        .where(Grant.id == grant_id)
        .values(lock_version=Grant.lock_version + 1)
        .execution_options(synchronize_session=False)
    )
    grant = session.get(Grant, grant_id, populate_existing=True)
    assert grant is not None, "a reserved grant is never deleted while its reservation is open"
    return grant
