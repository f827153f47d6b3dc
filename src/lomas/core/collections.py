"""The Lomas 0.4 collection files: `user_collection.yaml` and `dataset_collection.yaml`.

Administrators of Lomas 0.4 kept users, budgets and datasets in these YAML files; `lomas-admin import`
and `lomas-admin export` read and write them, so they are a shared file format, not an implementation
detail. The models are stricter than 0.4 where a mistake would silently change a budget: unknown
fields, negative or infinite budgets, delta above 1 and names listed twice are refused.

Lomas extension: a `dataset_access` may also be a Lomas access document (`kind: local | http | s3 |
postgresql`, see `lomas.server.data.access`), for data that the 0.4 forms cannot describe (HTTP files,
PostgreSQL tables, S3 objects without an endpoint URL or with a region, Parquet files served by scan).
`lomas-admin export` writes the 0.4 form whenever it says everything, so only such datasets make a file
that 0.4 servers cannot read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

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
    """An object in an S3 bucket (0.4 form; credentials are looked up by `credentials_name`).

    0.4 also allowed the keys inline (`access_key_id`, `secret_access_key`); they are parsed so that
    `lomas-admin import` can point at them and refuse them: keys belong in the server secrets.
    """

    database_type: Literal[DatabaseType.S3]
    endpoint_url: str
    bucket: str
    key: str
    access_key_id: str | None = None
    secret_access_key: str | None = None
    credentials_name: str | None = None


AnyAccess = Annotated[PathAccess | S3Access, Field(discriminator="database_type")]

LOMAS_ACCESS_TAG = "lomas"


class LomasAccess(BaseModel):
    """Lomas extension: a Lomas access document, kept as written here; `lomas-admin import` validates it
    against `lomas.server.data.access`, which knows each kind's fields."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: Literal["local", "http", "s3", "postgresql"]


def _dataset_access_tag(value: Any) -> str | None:
    """A document with a `kind` is a Lomas access; otherwise its `database_type` says which 0.4 form."""
    if isinstance(value, dict):
        if "kind" in value:
            return LOMAS_ACCESS_TAG
        found = value.get("database_type")
        return found if isinstance(found, str) else None
    if isinstance(value, LomasAccess):
        return LOMAS_ACCESS_TAG
    found = getattr(value, "database_type", None)
    return str(found) if found is not None else None


DatasetAccess = Annotated[
    Annotated[PathAccess, Tag(DatabaseType.PATH)]
    | Annotated[S3Access, Tag(DatabaseType.S3)]
    | Annotated[LomasAccess, Tag(LOMAS_ACCESS_TAG)],
    Discriminator(
        _dataset_access_tag,
        custom_error_type="invalid_dataset_access",
        custom_error_message="Input should be a 0.4 access (database_type: PATH_DB or S3_DB) or a Lomas "
        "access (kind: local, http, s3 or postgresql)",
    ),
]


class DatasetInfo(_Strict):
    """One dataset of a dataset collection: where its data and its metadata YAML are."""

    dataset_name: Name
    dataset_access: DatasetAccess
    metadata_access: AnyAccess


class DatasetsCollection(_Strict):
    """`dataset_collection.yaml`: `{datasets: [...]}`."""

    datasets: list[DatasetInfo]

    @field_validator("datasets")
    @classmethod
    def _datasets_once(cls, value: list[DatasetInfo]) -> list[DatasetInfo]:
        return list(_no_duplicates(value, lambda item: item.dataset_name, "dataset_name", "datasets"))
