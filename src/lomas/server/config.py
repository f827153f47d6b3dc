"""Server settings: defaults < YAML config file < `LOMAS_*` environment variables < command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

CONFIG_FILE_ENV = "LOMAS_CONFIG_FILE"


class AuthSettings(BaseModel):
    """How callers are identified."""

    open_mode: bool = Field(
        default=False,
        description="Trust the unauthenticated 0.4 `user-name` header. Only for demos and trusted networks.",
    )


class LimitSettings(BaseModel):
    """Ceilings on what one request may ask for."""

    max_dummy_rows: int = Field(default=100_000, gt=0)
    max_query_length: int = Field(default=10_000, gt=0)


class OpenDPSettings(BaseModel):
    """The OpenDP engine. Library features are switched on here, never by a request."""


class DiffPrivLibSettings(BaseModel):
    """The DiffPrivLib engine."""


class SmartnoiseSynthSettings(BaseModel):
    """The SmartNoise-Synth engine."""


class JobSettings(BaseModel):
    """Background jobs: queries a client asks to run asynchronously (`Prefer: respond-async`)."""

    workers: int = Field(default=2, gt=0, description="Jobs that run at the same time in one server process.")


class Settings(BaseSettings):
    """Everything the server reads at start-up."""

    model_config = SettingsConfigDict(env_prefix="LOMAS_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./lomas-data")
    admin_db_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the admin store; default: SQLite in the data dir."
    )
    demo: bool = False
    workers: int = Field(default=1, gt=0, description="Server processes (uvicorn workers).")
    threads: int = Field(default=8, gt=0, description="Threads that run DP work off the event loop.")
    reservation_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="A budget reservation older than this belongs to a crashed execution and is charged.",
    )
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    jobs: JobSettings = JobSettings()
    opendp: OpenDPSettings = OpenDPSettings()
    diffprivlib: DiffPrivLibSettings = DiffPrivLibSettings()
    smartnoise_synth: SmartnoiseSynthSettings = SmartnoiseSynthSettings()

    @property
    def store_url(self) -> str:
        if self.admin_db_url:
            return self.admin_db_url
        return f"sqlite:///{(self.data_dir / 'lomas.db').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings, with `overrides` (the command line) taking precedence over everything."""
    if config_file is not None:
        if not config_file.is_file():
            raise FileNotFoundError(f"Config file not found: {config_file}")
        os.environ[CONFIG_FILE_ENV] = str(config_file)
    return Settings(**{key: value for key, value in overrides.items() if value is not None})
