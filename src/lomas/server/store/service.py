"""Administration of the store: users, datasets and grants. Used by the server and `lomas-admin`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from lomas.core.metadata import Metadata
from lomas.server.ledger import exact
from lomas.server.store.models import Dataset, Grant, Job, Query, QueryStatus, Token, User, utcnow


class StoreError(ValueError):
    """An administration request that cannot be carried out; the message says why."""


class NotFoundError(StoreError):
    pass


@dataclass(frozen=True)
class DatasetRecord:
    name: str
    access: dict[str, Any]
    metadata: Metadata
    version: int

    @property
    def key(self) -> str:
        """What caches of this dataset (loaded data, downloads, query plans) are keyed by: a digest of its
        name, version, access and metadata. The version alone would not do: a dataset deleted and
        registered again starts over at version 1."""
        content = json.dumps(
            [self.name, self.version, self.access, self.metadata.model_dump(mode="json")], sort_keys=True
        )
        return hashlib.sha256(content.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class GrantRecord:
    user_name: str
    dataset_name: str
    initial_epsilon: float
    initial_delta: float
    spent_epsilon: float
    spent_delta: float
    revoked: bool


@dataclass(frozen=True)
class ArchiveRecord:
    id: int
    user_name: str
    dataset_name: str
    library: str
    client_input: dict[str, Any]
    response: dict[str, Any] | None
    error: str | None
    epsilon: float
    delta: float
    status: str
    created_at: datetime


@dataclass(frozen=True)
class Access:
    """What a caller may reach: `dataset` is set only when the user holds an active grant on it."""

    user_exists: bool
    may_query: bool
    dataset: DatasetRecord | None


def validate_metadata(document: dict[str, Any]) -> Metadata:
    try:
        return Metadata.model_validate(document)
    except ValidationError as error:
        raise StoreError(f"Invalid metadata: {error}") from error


class AdminStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    @property
    def sessions(self) -> sessionmaker[Session]:
        """The store's sessions, for the services beside this one (tokens, ledger)."""
        return self._sessions

    # -- users ---------------------------------------------------------------------------------
    def add_user(self, name: str, may_query: bool = True) -> None:
        with self._sessions.begin() as session:
            if _find_user(session, name) is not None:
                raise StoreError(f"User {name!r} already exists.")
            session.add(User(name=name, may_query=may_query))

    def user_exists(self, name: str) -> bool:
        with self._sessions() as session:
            return _find_user(session, name) is not None

    def may_query(self, name: str) -> bool:
        with self._sessions() as session:
            user = _find_user(session, name)
            return user is not None and user.may_query

    def set_may_query(self, name: str, may_query: bool) -> None:
        with self._sessions.begin() as session:
            _user(session, name).may_query = may_query

    def list_users(self) -> list[str]:
        with self._sessions() as session:
            return list(session.scalars(select(User.name).order_by(User.name)))

    def delete_user(self, name: str, cascade: bool = False) -> None:
        """Delete a user and their tokens; with grants or archives only when `cascade` deletes them too."""
        with self._sessions.begin() as session:
            user = _user(session, name)
            _delete_dependents(
                session, Grant.user_id == user.id, Query.user_id == user.id, Job.user_id == user.id, cascade, f"user {name!r}"
            )
            session.execute(delete(Token).where(Token.user_id == user.id))  # their tokens die with them
            session.delete(user)

    def access(self, user_name: str, dataset_name: str) -> Access:
        """The caller's standing on a dataset, in one round trip (this runs on every request)."""
        active_grant = and_(Grant.user_id == User.id, Grant.dataset_id == Dataset.id, Grant.revoked_at.is_(None))
        with self._sessions() as session:
            row = session.execute(
                select(User.may_query, Dataset, Grant.id)
                .select_from(User)
                .outerjoin(Dataset, Dataset.name == dataset_name)
                .outerjoin(Grant, active_grant)
                .where(User.name == user_name)
            ).one_or_none()
            if row is None:
                return Access(False, False, None)
            may_query, dataset, grant_id = row
            if dataset is None or grant_id is None:
                return Access(True, may_query, None)
            return Access(True, may_query, _record(dataset))

    # -- datasets ------------------------------------------------------------------------------
    def register_dataset(
        self, name: str, access: dict[str, Any], metadata: dict[str, Any], replace: bool = False
    ) -> int:
        """Add a dataset, or with `replace` re-register it (a new version). Returns the version."""
        validated = validate_metadata(metadata)
        document = validated.model_dump(mode="json", exclude_unset=True)
        with self._sessions.begin() as session:
            dataset = _find_dataset(session, name)
            if dataset is None:
                session.add(Dataset(name=name, access=access, metadata_doc=document, version=1))
                return 1
            if not replace:
                raise StoreError(f"Dataset {name!r} already exists (re-register it with replace).")
            dataset.access, dataset.metadata_doc, dataset.version = access, document, dataset.version + 1
            return dataset.version

    def dataset(self, name: str) -> DatasetRecord:
        with self._sessions() as session:
            return _record(_dataset(session, name))

    def list_datasets(self) -> list[str]:
        with self._sessions() as session:
            return list(session.scalars(select(Dataset.name).order_by(Dataset.name)))

    def delete_dataset(self, name: str, cascade: bool = False) -> None:
        with self._sessions.begin() as session:
            dataset = _dataset(session, name)
            _delete_dependents(
                session,
                Grant.dataset_id == dataset.id,
                Query.dataset_id == dataset.id,
                Job.dataset_id == dataset.id,
                cascade,
                f"dataset {name!r}",
            )
            session.delete(dataset)

    # -- grants --------------------------------------------------------------------------------
    def grant(self, user_name: str, dataset_name: str, epsilon: float, delta: float) -> None:
        """Give a user a budget on a dataset; a revoked grant comes back with its spending intact."""
        _check_budget(epsilon, delta)
        with self._sessions.begin() as session:
            user, dataset = _user(session, user_name), _dataset(session, dataset_name)
            grant = _grant(session, user.id, dataset.id)
            if grant is not None and grant.revoked_at is None:
                raise StoreError(f"{user_name!r} already has a grant on {dataset_name!r} (set its budget instead).")
            if grant is None:
                session.add(Grant(user_id=user.id, dataset_id=dataset.id, initial_epsilon=epsilon, initial_delta=delta))
            else:
                grant.revoked_at, grant.initial_epsilon, grant.initial_delta = None, epsilon, delta

    def set_initial_budget(self, user_name: str, dataset_name: str, epsilon: float, delta: float) -> None:
        _check_budget(epsilon, delta)
        with self._sessions.begin() as session:
            grant = _required_grant(session, user_name, dataset_name)
            grant.initial_epsilon, grant.initial_delta = epsilon, delta

    def revoke(self, user_name: str, dataset_name: str) -> None:
        """Stop a user's access; what they spent stays recorded."""
        with self._sessions.begin() as session:
            grant = _required_grant(session, user_name, dataset_name)
            grant.revoked_at = utcnow()

    def grants(self, user_name: str | None = None, dataset_name: str | None = None) -> list[GrantRecord]:
        with self._sessions() as session:
            rows = session.execute(_joined(select(Grant, User.name, Dataset.name), Grant, user_name, dataset_name)).all()
            return [
                GrantRecord(
                    user,
                    dataset,
                    grant.initial_epsilon,
                    grant.initial_delta,
                    float(exact(grant.spent_epsilon)),
                    float(exact(grant.spent_delta)),
                    grant.revoked_at is not None,
                )
                for grant, user, dataset in rows
            ]

    # -- archives ------------------------------------------------------------------------------
    def archives(
        self, user_name: str | None = None, dataset_name: str | None = None, statuses: tuple[str, ...] = (QueryStatus.CHARGED,)
    ) -> list[ArchiveRecord]:
        """Archived queries, oldest first (charged ones by default: the ones that spent budget)."""
        with self._sessions() as session:
            statement = _joined(select(Query, User.name, Dataset.name), Query, user_name, dataset_name)
            rows = session.execute(statement.where(Query.status.in_(statuses)).order_by(Query.id)).all()
            return [
                ArchiveRecord(
                    q.id, user, dataset, q.library, q.client_input, q.response, q.error, q.epsilon, q.delta, q.status, q.created_at
                )
                for q, user, dataset in rows
            ]

    def count_queries(self, status: str) -> int:
        with self._sessions() as session:
            return session.scalar(select(func.count()).select_from(Query).where(Query.status == status)) or 0


def _record(dataset: Dataset) -> DatasetRecord:
    return DatasetRecord(dataset.name, dataset.access, Metadata.model_validate(dataset.metadata_doc), dataset.version)


def _check_budget(epsilon: float, delta: float) -> None:
    if not (epsilon >= 0 and delta >= 0) or epsilon == float("inf") or delta > 1:
        raise StoreError("A budget needs epsilon >= 0 and 0 <= delta <= 1.")


def _joined(statement: Any, table: Any, user_name: str | None, dataset_name: str | None) -> Any:
    statement = statement.join(User, table.user_id == User.id).join(Dataset, table.dataset_id == Dataset.id)
    if user_name is not None:
        statement = statement.where(User.name == user_name)
    if dataset_name is not None:
        statement = statement.where(Dataset.name == dataset_name)
    return statement.order_by(User.name, Dataset.name)


def _delete_dependents(
    session: Session, grant_filter: Any, query_filter: Any, job_filter: Any, cascade: bool, what: str
) -> None:
    """Refuse (or with `cascade` delete) grants and archives; background jobs go with their user or dataset."""
    session.execute(delete(Job).where(job_filter))
    grants = session.scalar(select(func.count()).select_from(Grant).where(grant_filter)) or 0
    queries = session.scalar(select(func.count()).select_from(Query).where(query_filter)) or 0
    if not (grants or queries):
        return
    if not cascade:
        raise StoreError(
            f"Cannot delete {what}: it has {grants} grant(s) and {queries} archived queries. "
            "Revoke the grants, or delete with cascade to remove them too."
        )
    running = session.scalar(
        select(func.count()).select_from(Query).where(query_filter, Query.status == QueryStatus.RESERVED)
    )
    if running:
        raise StoreError(f"Cannot delete {what}: {running} of its queries are running. Try again when they finish.")
    session.execute(delete(Query).where(query_filter))
    session.execute(delete(Grant).where(grant_filter))


def _find_user(session: Session, name: str) -> User | None:
    return session.scalars(select(User).where(User.name == name)).one_or_none()


def _user(session: Session, name: str) -> User:
    user = _find_user(session, name)
    if user is None:
        raise NotFoundError(f"No user named {name!r}.")
    return user


def _find_dataset(session: Session, name: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(Dataset.name == name)).one_or_none()


def _dataset(session: Session, name: str) -> Dataset:
    dataset = _find_dataset(session, name)
    if dataset is None:
        raise NotFoundError(f"No dataset named {name!r}.")
    return dataset


def _grant(session: Session, user_id: int, dataset_id: int) -> Grant | None:
    return session.scalars(select(Grant).where(Grant.user_id == user_id, Grant.dataset_id == dataset_id)).one_or_none()


def _required_grant(session: Session, user_name: str, dataset_name: str) -> Grant:
    user, dataset = _user(session, user_name), _dataset(session, dataset_name)
    grant = _grant(session, user.id, dataset.id)
    if grant is None:
        raise NotFoundError(f"{user_name!r} has no grant on {dataset_name!r}.")
    return grant
