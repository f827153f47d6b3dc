"""Server secrets: S3 keys, PostgreSQL URLs and HTTP headers that access documents reference by name.

Access documents live in the admin store, which administrators list, export and back up; so they hold
only a secret's *name*, and the values stay in the server's own secrets, read at start-up from an
optional YAML file (the `secrets_file` setting) and from `LOMAS_SECRETS__*` environment variables:

    s3:
      minio: {access_key_id: ..., secret_access_key: ..., region: eu-west-1}
    postgresql:
      warehouse: {url: "postgresql://reader:pw@db:5432/stats"}
    http:
      portal: {headers: {Authorization: "Bearer abc"}}

    LOMAS_SECRETS__S3__MINIO__ACCESS_KEY_ID=...  LOMAS_SECRETS__S3__MINIO__SECRET_ACCESS_KEY=...
    LOMAS_SECRETS__POSTGRESQL__WAREHOUSE__URL=...
    LOMAS_SECRETS__HTTP__PORTAL__HEADERS__AUTHORIZATION="Bearer abc"

The environment wins over the file, field by field. Environment variable names are case-insensitive,
so a secret (or header) defined there gets a lower-case name (`minio`, `authorization`); a lookup by a
name that is not defined as written falls back to its lower-case form. Values are `SecretStr`, so
`repr()`, `str()` and logs show `**********`; errors name files, sections and fields, never a value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from lomas.server.data.errors import MissingSecretError

ENV_PREFIX = "LOMAS_SECRETS__"
_T = TypeVar("_T")


class _Secret(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3Credentials(_Secret):
    """Keys of an S3 (or MinIO, Ceph...) account; `region` is used when the access document has none."""

    access_key_id: SecretStr
    secret_access_key: SecretStr
    session_token: SecretStr | None = None
    region: str | None = None


class PostgresConnection(_Secret):
    """A libpq/psycopg URL, `postgresql://user:password@host:port/database`."""

    url: SecretStr


class HttpCredentials(_Secret):
    """Headers sent with a download (typically `Authorization: Bearer ...`)."""

    headers: dict[str, SecretStr]

    @field_validator("headers")
    @classmethod
    def _sendable(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        """Refused here, naming the header only: httpx would refuse them later quoting the value."""
        for name, value in headers.items():
            text = value.get_secret_value()
            if text != text.strip() or any(ord(char) < 32 or ord(char) == 127 for char in text):
                raise ValueError(
                    f"the value of header {name!r} has leading or trailing spaces or a control character "
                    "(a YAML block scalar adds a line break)"
                )
        return headers


class Secrets(BaseSettings):
    """Every secret of the server, by kind and name. Keyword arguments (the file) < environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    s3: dict[str, S3Credentials] = {}
    postgresql: dict[str, PostgresConnection] = {}
    http: dict[str, HttpCredentials] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment first, so it overrides the file's content that `load_secrets` passes in."""
        return (env_settings, init_settings)

    def s3_credentials(self, name: str) -> S3Credentials:
        """The S3 keys called `name` (MissingSecretError says how to define them)."""
        found = _lookup(self.s3, name)
        if found is None:
            env = f"{ENV_PREFIX}S3__{name.upper()}__"
            raise MissingSecretError(
                f"No S3 credentials named {name!r} in the server secrets: add s3.{name} (access_key_id, "
                f"secret_access_key) to the secrets file (secrets_file setting) or set "
                f"{env}ACCESS_KEY_ID and {env}SECRET_ACCESS_KEY."
            )
        return found

    def postgres_url(self, name: str) -> str:
        """The connection URL called `name` (MissingSecretError says how to define it)."""
        found = _lookup(self.postgresql, name)
        if found is None:
            raise MissingSecretError(
                f"No PostgreSQL connection named {name!r} in the server secrets: add postgresql.{name}.url "
                f"to the secrets file (secrets_file setting) or set {ENV_PREFIX}POSTGRESQL__{name.upper()}__URL."
            )
        return found.url.get_secret_value()

    def http_headers(self, name: str) -> dict[str, str]:
        """The headers called `name`, with their values (MissingSecretError says how to define them)."""
        found = _lookup(self.http, name)
        if found is None:
            raise MissingSecretError(
                f"No HTTP credentials named {name!r} in the server secrets: add http.{name}.headers to the "
                f"secrets file (secrets_file setting) or set "
                f"{ENV_PREFIX}HTTP__{name.upper()}__HEADERS__<HEADER_NAME>."
            )
        return {header: value.get_secret_value() for header, value in found.headers.items()}


def _lookup(section: dict[str, _T], name: str) -> _T | None:
    """`name` as written, else lower-cased: names read from the environment are lower case."""
    if name in section:
        return section[name]
    return section.get(name.lower())


def load_secrets(path: Path | None = None) -> Secrets:
    """Read the secrets file (if any) and the environment; the environment wins.

    Raises ValueError naming the file (or the environment) and the field at fault, never a value: a
    pydantic error would print the offending input, which may be a key.
    """
    content: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValueError(f"Secrets file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
            raise ValueError(f"Cannot read the secrets file {path}: {reason}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"The secrets file {path} is not valid YAML{at}.") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(
                f"The secrets file {path} must be a mapping with sections s3, postgresql and http."
            )
        content = loaded or {}
    source = (
        f"the secrets file {path} or the {ENV_PREFIX}* environment"
        if path
        else f"the {ENV_PREFIX}* environment"
    )
    try:
        return Secrets(**content)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or '(top level)'}: {problem['msg']}"
            for problem in error.errors(include_url=False, include_input=False)
        )
        raise ValueError(f"Invalid server secrets in {source}: {problems}.") from None
    except SettingsError as error:
        # "error parsing value for field "s3" from source "EnvSettingsSource"": names the field only.
        raise ValueError(f"Invalid server secrets in {source}: {str(error).splitlines()[0]}.") from None
