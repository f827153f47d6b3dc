"""Where a dataset's data lives: the `access` document stored with each dataset.

The document names its `kind` and holds no secret: credentials are referenced by name and looked up in
the server's secrets (`lomas.server.data.secrets`) when the data is read.

    {"kind": "local", "path": "/data/penguins.parquet", "format": "parquet", "serve": "memory"}
    {"kind": "http", "url": "https://example.org/penguins.csv", "credentials": "portal"}
    {"kind": "s3", "endpoint_url": "https://s3.example.org", "bucket": "b", "key": "k.parquet",
     "credentials": "minio"}
    {"kind": "postgresql", "connection": "warehouse", "table": "public.penguins"}

File kinds (local, http, s3) hold CSV or Parquet; HTTP and S3 files are downloaded once per dataset
version into the server's download directory. `serve` says how a file is queried:

- `memory` (default): loaded once into memory (Arrow), kept in the dataset cache;
- `scan` (Parquet only): never loaded; SmartNoise-SQL queries scan the file, so a dataset larger than
  memory still answers. Libraries that need the whole table in memory (OpenDP, DiffPrivLib,
  SmartNoise-Synth) are refused on it.

PostgreSQL tables run SmartNoise-SQL queries inside the database; other libraries load the table.

The Lomas 0.4 forms `{"database_type": "PATH_DB", "path": ...}` and `{"database_type": "S3_DB",
"endpoint_url", "bucket", "key", "credentials_name"}` are accepted; 0.4 inline S3 keys are refused,
because the admin store must never hold a secret.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

FileFormat = Literal["csv", "parquet"]
Serve = Literal["memory", "scan"]

SecretName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=100)]
INLINE_S3_KEYS = (
    "S3 keys cannot be stored with a dataset: put them in the server secrets file under "
    "s3.<name> (or LOMAS_SECRETS__S3__<NAME>__ACCESS_KEY_ID/__SECRET_ACCESS_KEY) and reference them "
    "with credentials_name."
)
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


class _Access(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FileAccess(_Access):
    format: FileFormat | None = Field(default=None, description="Default: from the file name's suffix.")
    serve: Serve = "memory"

    @property
    def name(self) -> str:
        """The file's name, which tells its format when `format` is not given."""
        raise NotImplementedError

    @property
    def file_format(self) -> FileFormat:
        if self.format is not None:
            return self.format
        return "parquet" if self.name.lower().endswith((".parquet", ".pq")) else "csv"

    @model_validator(mode="after")
    def _scan_reads_parquet(self) -> _FileAccess:
        if self.serve == "scan" and self.file_format != "parquet":
            raise ValueError("serve: scan reads Parquet files only; serve CSV files from memory.")
        return self


class LocalAccess(_FileAccess):
    """A file on the server's own file system."""

    kind: Literal["local"] = "local"
    path: Annotated[str, Field(min_length=1)]

    @property
    def name(self) -> str:
        return self.path


class HttpAccess(_FileAccess):
    """A file downloaded over HTTP(S); `credentials` names headers (a token) in the server secrets."""

    kind: Literal["http"] = "http"
    url: str
    credentials: SecretName | None = None

    @property
    def name(self) -> str:
        return urlsplit(self.url).path

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        """An http(s) URL with a host and without a user or password (they would be stored and shown)."""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host.")
        if parts.username or parts.password:
            raise ValueError("must not hold a user or password: reference credentials in the server secrets.")
        return value


class S3Access(_FileAccess):
    """An object in an S3 bucket; `credentials` names keys in the server secrets (none: anonymous)."""

    kind: Literal["s3"] = "s3"
    endpoint_url: str | None = Field(default=None, description="Default: AWS.")
    bucket: Annotated[str, Field(min_length=1)]
    key: Annotated[str, Field(min_length=1)]
    region: str | None = None
    credentials: SecretName | None = None

    @property
    def name(self) -> str:
        return self.key

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else HttpAccess._http_url(value)

    @model_validator(mode="before")
    @classmethod
    def _from_lomas_04(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("database_type") == "S3_DB":
            if value.get("access_key_id") or value.get("secret_access_key"):
                raise ValueError(INLINE_S3_KEYS)
            renamed = {"credentials_name": "credentials"}
            skipped = {"database_type", "access_key_id", "secret_access_key"}
            value = {renamed.get(k, k): v for k, v in value.items() if k not in skipped} | {"kind": "s3"}
        return value


class PostgresAccess(_Access):
    """A table or view of a PostgreSQL database; `connection` names its URL in the server secrets."""

    kind: Literal["postgresql"] = "postgresql"
    connection: SecretName
    table: str = Field(description="`table` or `schema.table` (unquoted identifiers).")

    @field_validator("table")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _TABLE.match(value):
            raise ValueError("table must be `name` or `schema.name` with letters, digits and underscores.")
        return value


Access = Annotated[LocalAccess | HttpAccess | S3Access | PostgresAccess, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[Access] = TypeAdapter(Access)


def _normalised(document: Any) -> Any:
    """The 0.4 forms, rewritten with a `kind`."""
    if not isinstance(document, dict) or "kind" in document:
        return document
    match document.get("database_type"):
        case "PATH_DB":
            return {k: v for k, v in document.items() if k != "database_type"} | {"kind": "local"}
        case "S3_DB":
            return S3Access.model_validate(document).model_dump()
    return document


def parse_access(document: Any) -> LocalAccess | HttpAccess | S3Access | PostgresAccess:
    """Validate an access document (raises pydantic's ValidationError with the field at fault)."""
    return _ADAPTER.validate_python(_normalised(document))


def access_document(access: LocalAccess | HttpAccess | S3Access | PostgresAccess) -> dict[str, Any]:
    """The full form stored in the admin store (defaults written out, so equal accesses compare equal)."""
    document = access.model_dump(mode="json")
    if isinstance(access, _FileAccess):
        document["format"] = access.file_format
    return document


def where(access: LocalAccess | HttpAccess | S3Access | PostgresAccess) -> str:
    """A one-line description of the location, with no secret (for lists, logs and error messages)."""
    match access:
        case LocalAccess():
            return access.path
        case HttpAccess():
            return urlsplit(access.url)._replace(query="", fragment="").geturl()  # a query may hold a token
        case S3Access():
            return f"s3://{access.bucket}/{access.key}" + (
                f" at {access.endpoint_url}" if access.endpoint_url else ""
            )
        case PostgresAccess():
            return f"postgresql table {access.table} (connection {access.connection!r})"
