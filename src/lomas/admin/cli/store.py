"""The store: the global options, the server's settings and secrets, and the admin store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer
import yaml
from alembic.util import CommandError
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from lomas.admin import collections
from lomas.server.config import Settings, load_settings
from lomas.server.data.secrets import load_secrets
from lomas.server.data.sources import DataContext
from lomas.server.store.db import make_engine, session_factory, upgrade
from lomas.server.store.service import AdminStore, StoreError


@dataclass
class StoreOptions:
    """The global options; the store is opened (and migrated) on first use, so --help needs none, and
    the settings and secrets are read only by the commands that read data."""

    store_url: str | None
    config: Path | None
    data_dir: Path | None
    secrets: Path | None = None
    store: AdminStore | None = field(default=None)
    data_context: DataContext | None = field(default=None)


def settings_of(options: StoreOptions) -> Settings:
    """The server's settings: the same config file, data dir and LOMAS_* variables as the server."""
    try:
        return load_settings(options.config, data_dir=options.data_dir)
    except (FileNotFoundError, ValueError, yaml.YAMLError) as error:
        raise StoreError(f"Cannot read the settings: {error}") from error


def store_url(options: StoreOptions) -> str:
    """--store-url, or the URL the server would use."""
    return options.store_url or settings_of(options).store_url


def data_context(ctx: typer.Context) -> collections.ContextFactory:
    """What reading data needs (the server's secrets and data settings), read on first use."""
    options = ctx.find_object(StoreOptions)
    assert options is not None, "the root callback sets the options"

    def context() -> DataContext:
        if options.data_context is None:
            settings = settings_of(options)
            secrets_file = options.secrets or settings.secrets_file
            try:
                secrets = load_secrets(secrets_file)
            except ValueError as error:  # its messages name files and fields, never a value
                raise StoreError(f"Cannot read the server secrets: {error}") from None
            options.data_context = DataContext.from_settings(settings, secrets)
        return options.data_context

    return context


def open_store(url: str) -> tuple[Engine, AdminStore]:
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError as error:
        raise StoreError(f"Invalid store URL {url!r}: {error}") from error
    try:
        engine = make_engine(url)
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(f"Cannot open the admin store at {shown}: {error}") from error
    try:
        upgrade(engine)  # the same migrations the server runs at start-up
    except (SQLAlchemyError, OSError, CommandError) as error:
        engine.dispose()
        reason = getattr(error, "orig", None) or error
        raise StoreError(f"Cannot open the admin store at {shown}: {reason}") from error
    return engine, AdminStore(session_factory(engine))


def store_of(ctx: typer.Context) -> AdminStore:
    options = ctx.find_object(StoreOptions)
    assert options is not None, "the root callback sets the options"
    if options.store is None:
        engine, options.store = open_store(store_url(options))
        ctx.find_root().call_on_close(engine.dispose)
    return options.store
