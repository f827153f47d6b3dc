"""The Lomas 0.4 collection files: `user_collection.yaml` and `dataset_collection.yaml`.

Administrators of Lomas 0.4 kept users, budgets and datasets in these YAML files; `lomas-admin import`
and `lomas-admin export` read and write them, so they are a shared file format, not an implementation
detail. The models are stricter than 0.4 where a mistake would silently change a budget: unknown
fields, negative or infinite budgets, delta above 1 and names listed twice are refused.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

_T = TypeVar("_T")


def check_name(value: str) -> str:
    """User and dataset names: not empty, no surrounding spaces (callers send names trimmed)."""
    if not value or value != value.strip():
        raise ValueError("a name must not be empty nor start or end with spaces")
    return value


Name = Annotated[str, AfterValidator(check_name)]
Epsilon = Annotated[float, Field(ge=0)]
Delta = Annotated[float, Field(ge=0, le=1)]


class DatabaseType(StrEnum):
    """Where a 0.4 dataset (or its metadata) is stored."""

    PATH = "PATH_DB"
    S3 = "S3_DB"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _no_duplicates(items: Sequence[_T], key: Callable[[_T], str], what: str, where: str) -> Sequence[_T]:
    """Refuse a list that names the same thing twice, saying at which positions."""
    positions: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        positions[key(item)].append(index)
    repeated = [
        f"{what} {name!r} appears more than once ({', '.join(f'{where}[{i}]' for i in found)})"
        for name, found in positions.items()
        if len(found) > 1
    ]
    if repeated:
        raise ValueError("; ".join(repeated))
    return items


# -- users ---------------------------------------------------------------------------------------
class DatasetOfUser(_Strict):
    """A user's budget on one dataset. Spent amounts default to 0 (a fresh grant)."""

    dataset_name: Name
    initial_epsilon: Epsilon
    initial_delta: Delta
    total_spent_epsilon: Epsilon = 0.0
    total_spent_delta: Delta = 0.0


class CollectionUser(_Strict):
    """One user of a user collection."""

    user_name: Name
    may_query: bool
    datasets_list: list[DatasetOfUser] = []

    @field_validator("datasets_list")
    @classmethod
    def _datasets_once(cls, value: list[DatasetOfUser]) -> list[DatasetOfUser]:
        return list(_no_duplicates(value, lambda item: item.dataset_name, "dataset_name", "datasets_list"))


class UserCollection(_Strict):
    """`user_collection.yaml`: `{users: [...]}`."""

    users: list[CollectionUser]

    @field_validator("users")
    @classmethod
    def _users_once(cls, value: list[CollectionUser]) -> list[CollectionUser]:
        return list(_no_duplicates(value, lambda user: user.user_name, "user_name", "users"))


# -- datasets ------------------------------------------------------------------------------------
class PathAccess(_Strict):
    """A file on the server's file system (`path` may be relative to the collection file)."""

    database_type: Literal[DatabaseType.PATH]
    path: Annotated[str, Field(min_length=1)]
    format: Literal["csv", "parquet"] | None = Field(
        default=None,
        description="Lomas extension, written only when the file name does not tell the format "
        "(0.4 servers ignore it).",
    )


class S3Access(_Strict):
    """An object in an S3 bucket (0.4 form; credentials are looked up by `credentials_name`)."""

    database_type: Literal[DatabaseType.S3]
    endpoint_url: str
    bucket: str
    key: str
    access_key_id: str | None = None
    secret_access_key: str | None = None
    credentials_name: str | None = None


AnyAccess = Annotated[PathAccess | S3Access, Field(discriminator="database_type")]


class DatasetInfo(_Strict):
    """One dataset of a dataset collection: where its data and its metadata YAML are."""

    dataset_name: Name
    dataset_access: AnyAccess
    metadata_access: AnyAccess


class DatasetsCollection(_Strict):
    """`dataset_collection.yaml`: `{datasets: [...]}`."""

    datasets: list[DatasetInfo]

    @field_validator("datasets")
    @classmethod
    def _datasets_once(cls, value: list[DatasetInfo]) -> list[DatasetInfo]:
        return list(_no_duplicates(value, lambda item: item.dataset_name, "dataset_name", "datasets"))
