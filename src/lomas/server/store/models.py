"""SQLAlchemy tables of the admin store. Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time stored in UTC; SQLite keeps no time zone, so values read back are marked UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    may_query: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    grants: Mapped[list[Grant]] = relationship(back_populates="user")


class Dataset(Base):
    """A private dataset: where its data lives (`access`) and its public metadata.

    `version` grows each time the dataset is re-registered, so cached frames and cached query
    plans of an older version are never reused.
    """

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    access: Mapped[dict[str, Any]] = mapped_column(JSON)
    metadata_doc: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    grants: Mapped[list[Grant]] = relationship(back_populates="dataset")


class Grant(Base):
    """A user's budget on a dataset, under basic sequential composition.

    Spent and reserved amounts are exact decimal sums kept as text (see `ledger.py`), so the spent
    budget is always exactly the sum of the archived costs.
    """

    __tablename__ = "grants"
    __table_args__ = (UniqueConstraint("user_id", "dataset_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    initial_epsilon: Mapped[float] = mapped_column(Float)
    initial_delta: Mapped[float] = mapped_column(Float)
    spent_epsilon: Mapped[str] = mapped_column(String(128), default="0")
    spent_delta: Mapped[str] = mapped_column(String(128), default="0")
    reserved_epsilon: Mapped[str] = mapped_column(String(128), default="0")
    reserved_delta: Mapped[str] = mapped_column(String(128), default="0")
    lock_version: Mapped[int] = mapped_column(Integer, default=0)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(back_populates="grants")
    dataset: Mapped[Dataset] = relationship(back_populates="grants")


class QueryStatus(StrEnum):
    RESERVED = "reserved"  # budget held, execution under way
    CHARGED = "charged"  # private data was (or may have been) touched: the cost is spent
    RELEASED = "released"  # private data was never read: the reservation was given back


class Query(Base):
    """One query against private data: its budget reservation, its charge, and its archive entry."""

    __tablename__ = "queries"
    __table_args__ = (
        Index("ix_queries_user_dataset", "user_id", "dataset_id", "status"),
        Index("ix_queries_status_expires", "status", "expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    library: Mapped[str] = mapped_column(String(32))
    client_input: Mapped[dict[str, Any]] = mapped_column(JSON)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

    user: Mapped[User] = relationship()
    dataset: Mapped[Dataset] = relationship()


class Job(Base):
    """A query run in the background. Its owner polls `GET /status/{id}` from any server replica."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_user", "user_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    library: Mapped[str] = mapped_column(String(32))
    dummy: Mapped[bool] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))  # a JobStatus
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Token(Base):
    """An API token of a user. Only the SHA-256 of the token is stored: the token itself is shown once."""

    __tablename__ = "tokens"
    __table_args__ = (Index("ix_tokens_user", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(256), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)  # None: never
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    user: Mapped[User] = relationship()
