"""`lomas-admin`: users, datasets, grants, archives and collection files of a Lomas store.

Thin: parse the command line, call the AdminStore or `lomas.admin.collections`, print the result.
Every StoreError (a request that cannot be carried out) is printed as one clear message on stderr
with exit code 2, never as a traceback.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from alembic.util import CommandError
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from typer.core import TyperGroup

from lomas.admin import collections
from lomas.core.metadata import CATEGORICAL_COLUMNS, AnyColumn
from lomas.server.config import Settings, load_settings
from lomas.server.data.access import access_document, parse_access, where
from lomas.server.data.errors import DataUnavailableError
from lomas.server.data.secrets import load_secrets
from lomas.server.data.sources import DataContext
from lomas.server.ledger import Budget, exact
from lomas.server.store.db import make_engine, session_factory, upgrade
from lomas.server.store.models import QueryStatus
from lomas.server.store.service import AdminStore, ArchiveRecord, GrantRecord, NotFoundError, StoreError

USER_ERROR_EXIT = 2


class _AdminGroup(TyperGroup):
    """Turns the errors a user can fix into a message and exit code 2 (no traceback)."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer vendors its click)
        try:
            return super().invoke(ctx)
        except StoreError as error:
            _console(stderr=True).print(f"Error: {error}", markup=False, highlight=False)
            raise typer.Exit(code=USER_ERROR_EXIT) from None


app = typer.Typer(
    name="lomas-admin",
    cls=_AdminGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="Administer a Lomas store: users, datasets, budget grants, query archives, 0.4 collection files.",
)
users_app = typer.Typer(no_args_is_help=True, help="Researchers, and whether they may query.")
datasets_app = typer.Typer(
    no_args_is_help=True, help="Private datasets: where the data is, and its public metadata."
)
grants_app = typer.Typer(no_args_is_help=True, help="Budgets (epsilon, delta) of users on datasets.")
archives_app = typer.Typer(no_args_is_help=True, help="Queries run on private data, with their cost.")
import_app = typer.Typer(
    no_args_is_help=True, help="Bulk import of Lomas 0.4 collection YAML files (idempotent)."
)
export_app = typer.Typer(no_args_is_help=True, help="Export to Lomas 0.4 collection YAML files.")
for _sub_app, _name in (
    (users_app, "users"),
    (datasets_app, "datasets"),
    (grants_app, "grants"),
    (archives_app, "archives"),
    (import_app, "import"),
    (export_app, "export"),
):
    app.add_typer(_sub_app, name=_name)


# -- the store ----------------------------------------------------------------------------------
@dataclass
class _StoreOptions:
    """The global options; the store is opened (and migrated) on first use, so --help needs none, and
    the settings and secrets are read only by the commands that read data."""

    store_url: str | None
    config: Path | None
    data_dir: Path | None
    secrets: Path | None = None
    store: AdminStore | None = field(default=None)
    data_context: DataContext | None = field(default=None)


def _settings(options: _StoreOptions) -> Settings:
    """The server's settings: the same config file, data dir and LOMAS_* variables as the server."""
    try:
        return load_settings(options.config, data_dir=options.data_dir)
    except (FileNotFoundError, ValueError, yaml.YAMLError) as error:
        raise StoreError(f"Cannot read the settings: {error}") from error


def _store_url(options: _StoreOptions) -> str:
    """--store-url, or the URL the server would use."""
    return options.store_url or _settings(options).store_url


def _data_context(ctx: typer.Context) -> collections.ContextFactory:
    """What reading data needs (the server's secrets and data settings), read on first use."""
    options = ctx.find_object(_StoreOptions)
    assert options is not None, "the root callback sets the options"

    def context() -> DataContext:
        if options.data_context is None:
            settings = _settings(options)
            secrets_file = options.secrets or settings.secrets_file
            try:
                secrets = load_secrets(secrets_file)
            except ValueError as error:  # its messages name files and fields, never a value
                raise StoreError(f"Cannot read the server secrets: {error}") from None
            options.data_context = DataContext.from_settings(settings, secrets)
        return options.data_context

    return context


def _open_store(url: str) -> tuple[Engine, AdminStore]:
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


def _store(ctx: typer.Context) -> AdminStore:
    options = ctx.find_object(_StoreOptions)
    assert options is not None, "the root callback sets the options"
    if options.store is None:
        engine, options.store = _open_store(_store_url(options))
        ctx.find_root().call_on_close(engine.dispose)
    return options.store


@app.callback()
def _root(
    ctx: typer.Context,
    store_url: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL of the admin store, e.g. sqlite:////srv/lomas/lomas.db or "
            "postgresql://user@host/lomas. Default: the URL the server uses (from --config, "
            "--data-dir and LOMAS_* variables)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="The server's YAML settings file (default: $LOMAS_CONFIG_FILE): its store, secrets_file "
            "and data limits."
        ),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="The server's data dir (its embedded store).")] = None,
    secrets: Annotated[
        Path | None,
        typer.Option(
            help="The server's secrets YAML file (S3 keys, PostgreSQL URLs, HTTP headers that data "
            "locations name), read to check data; LOMAS_SECRETS__* variables add to it. Default: the "
            "settings' secrets_file.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    ctx.obj = _StoreOptions(store_url, config, data_dir, secrets)


# -- output -------------------------------------------------------------------------------------
def _console(stderr: bool = False) -> Console:
    """Rich output on a terminal; unwrapped plain text otherwise (pipes, files, scripts)."""
    console = Console(stderr=stderr, highlight=False)
    return console if console.is_terminal else Console(stderr=stderr, highlight=False, width=100_000)


def _say(message: str) -> None:
    _console().print(message, markup=False)


def _print_table(title: str, headers: list[str], rows: list[list[Any]], empty: str) -> None:
    """Aligned columns; on a terminal with a title and headers stacked to leave room for the values."""
    if not rows:
        _say(empty)
        return
    console = _console()
    terminal = console.is_terminal
    table = Table(title=title if terminal else None, box=None, pad_edge=False)
    for header in headers:
        table.add_column(header.replace(" ", "\n") if terminal else header, overflow="fold")
    for row in rows:
        table.add_row(*(Text(_cell(value)) for value in row))
    console.print(table)


def _paragraphs(*paragraphs: str) -> str:
    """Help text: rich keeps line breaks, so each paragraph is one line and wrapped on display."""
    return "\n\n".join(paragraphs)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return ""
    return str(value)


def _utc(moment: datetime) -> datetime:
    """Store timestamps are UTC; SQLite hands them back without their time zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- users --------------------------------------------------------------------------------------
def _require_user(store: AdminStore, name: str) -> None:
    if not store.user_exists(name):
        raise NotFoundError(f"No user named {name!r}.")


def _grant_rows(grants: list[GrantRecord], with_user: bool = True) -> tuple[list[str], list[list[Any]]]:
    headers = ["user"] * with_user + [
        "dataset",
        "initial ε",
        "initial δ",
        "spent ε",
        "spent δ",
        "remaining ε",
        "remaining δ",
        "status",
    ]
    rows: list[list[Any]] = []
    for grant in grants:
        budget = Budget(
            exact(grant.initial_epsilon),
            exact(grant.initial_delta),
            exact(grant.spent_epsilon),
            exact(grant.spent_delta),
        )
        rows.append(
            [grant.user_name] * with_user
            + [
                grant.dataset_name,
                grant.initial_epsilon,
                grant.initial_delta,
                grant.spent_epsilon,
                grant.spent_delta,
                budget.remaining_epsilon,
                budget.remaining_delta,
                "revoked" if grant.revoked else "active",
            ]
        )
    return headers, rows


@users_app.command("add")
def users_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The user name researchers identify with.")],
    no_query: Annotated[
        bool, typer.Option("--no-query", help="Create the user without the right to query.")
    ] = False,
) -> None:
    """Add a user (who may query, unless --no-query)."""
    _store(ctx).add_user(collections.check_user_name(name), may_query=not no_query)
    _say(f"Added user {name!r}" + (" (may not query)." if no_query else "."))


@users_app.command("list")
def users_list(ctx: typer.Context) -> None:
    """List the users, whether they may query, and their number of active grants."""
    store = _store(ctx)
    active: dict[str, int] = {}
    for grant in store.grants():
        active[grant.user_name] = active.get(grant.user_name, 0) + (not grant.revoked)
    rows = [[name, store.may_query(name), active.get(name, 0)] for name in store.list_users()]
    _print_table("Users", ["user", "may query", "active grants"], rows, "No users.")


@users_app.command("show")
def users_show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Show a user and their grants, with initial, spent and remaining budgets."""
    store = _store(ctx)
    _require_user(store, name)
    _say(f"User {name!r}: {'may' if store.may_query(name) else 'may NOT'} query.")
    headers, rows = _grant_rows(store.grants(user_name=name), with_user=False)
    _print_table(f"Grants of {name}", headers, rows, "No grants.")


@users_app.command("delete")
def users_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name.")],
    cascade: Annotated[
        bool,
        typer.Option(
            "--cascade",
            help="Also delete the user's grants and archived queries (their spending record is lost).",
        ),
    ] = False,
) -> None:
    """Delete a user. Refused while they have grants or archived queries, unless --cascade."""
    _store(ctx).delete_user(name, cascade=cascade)
    _say(f"Deleted user {name!r}.")


@users_app.command("set-may-query")
def users_set_may_query(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name.")],
    may_query: Annotated[bool, typer.Argument(help="true or false.", metavar="true|false")],
) -> None:
    """Allow or forbid a user to run queries (their grants stay)."""
    _store(ctx).set_may_query(name, may_query)
    _say(f"User {name!r} {'may' if may_query else 'may no longer'} query.")


# -- datasets -----------------------------------------------------------------------------------
class DataFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"


class Serve(StrEnum):
    MEMORY = "memory"
    SCAN = "scan"


# The command-line option of each field of an access document, for messages.
_ACCESS_OPTIONS = {
    "path": "--path",
    "url": "--url",
    "bucket": "--s3",
    "key": "--s3",
    "endpoint_url": "--endpoint-url",
    "region": "--region",
    "credentials": "--credentials",
    "table": "--postgresql",
    "connection": "--connection",
    "format": "--format",
    "serve": "--serve",
}


@dataclass(frozen=True)
class _Location:
    """The location options of `datasets add`, as typed."""

    path: Path | None
    url: str | None
    s3: str | None
    postgresql: str | None
    endpoint_url: str | None
    region: str | None
    credentials: str | None
    connection: str | None
    file_format: DataFormat | None
    serve: Serve | None

    def document(self) -> dict[str, Any]:
        """The access document the options describe (StoreError for options that do not go together)."""
        given = {
            option: value
            for option, value in (
                ("--path", self.path),
                ("--url", self.url),
                ("--s3", self.s3),
                ("--postgresql", self.postgresql),
            )
            if value is not None
        }
        if len(given) != 1:
            raise StoreError(
                "Give where the data is with exactly one of --path FILE, --url URL, --s3 s3://BUCKET/KEY or "
                f"--postgresql TABLE{' (not ' + ' and '.join(given) + ')' if given else ''}."
            )
        kind = next(iter(given))
        allowed = {
            "--path": {"--format", "--serve"},
            "--url": {"--format", "--serve", "--credentials"},
            "--s3": {"--format", "--serve", "--credentials", "--endpoint-url", "--region"},
            "--postgresql": {"--connection"},
        }[kind]
        extra = [
            option
            for option, value in (
                ("--format", self.file_format),
                ("--serve", self.serve),
                ("--credentials", self.credentials),
                ("--endpoint-url", self.endpoint_url),
                ("--region", self.region),
                ("--connection", self.connection),
            )
            if value is not None and option not in allowed
        ]
        if extra:
            raise StoreError(f"{', '.join(extra)} cannot be used with {kind}.")
        file_options = {
            "format": self.file_format.value if self.file_format else None,
            "serve": self.serve.value if self.serve else None,
        }
        document: dict[str, Any]
        if self.path is not None:
            document = {"kind": "local", "path": collections.local_path(self.path), **file_options}
        elif self.url is not None:
            document = {"kind": "http", "url": self.url, "credentials": self.credentials, **file_options}
        elif self.s3 is not None:
            bucket, _, key = self.s3.removeprefix("s3://").partition("/")
            if not self.s3.startswith("s3://") or not bucket or not key:
                raise StoreError(f"--s3 must be s3://BUCKET/KEY, not {self.s3!r}.")
            document = {
                "kind": "s3",
                "bucket": bucket,
                "key": key,
                "endpoint_url": self.endpoint_url,
                "region": self.region,
                "credentials": self.credentials,
                **file_options,
            }
        else:
            document = {"kind": "postgresql", "table": self.postgresql, "connection": self.connection}
        return {field: value for field, value in document.items() if value is not None}

    def access(self) -> collections.AnyAccess:
        document = self.document()
        try:
            return parse_access(document)
        except ValidationError as error:
            problems = [
                f"{_ACCESS_OPTIONS.get(problem.location, problem.location)}: {problem.message}"
                if problem.location
                else problem.message
                for problem in collections.validation_problems(error, document)
            ]
            raise StoreError(f"Invalid data location: {'; '.join(problems)}") from None


def _warn(warnings: list[str]) -> None:
    """What a data check noted without refusing (on stderr, so that scripts see it apart)."""
    for warning in warnings:
        _console(stderr=True).print(f"Warning: {warning}", markup=False, highlight=False)


@datasets_app.command(
    "add",
    help=_paragraphs(
        "Register a dataset: its public metadata, and where its data is (exactly one of --path, --url, --s3 "
        "or --postgresql).",
        "Before anything is written, the data is read as the server will read it, with the server's "
        "secrets and data settings (lomas-admin --config FILE --secrets FILE datasets add ...), and checked "
        "against the metadata: columns and types, bounds, categories, nulls and the row count. Every problem "
        "is listed and nothing is "
        "written. Skip the check with --no-check when the data is only reachable from the server.",
        "Examples: --path /data/sales.parquet; --url https://example.org/sales.csv --credentials portal; "
        "--s3 s3://bucket/sales.parquet --endpoint-url https://s3.example.org --credentials minio "
        "--serve scan; --postgresql public.sales --connection warehouse.",
        "Credentials are named, never given: S3 keys, HTTP headers and PostgreSQL URLs are defined under "
        "s3.<name>, http.<name> and postgresql.<name> in the server secrets.",
    ),
)
def datasets_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Dataset name researchers use.")],
    metadata: Annotated[Path, typer.Option("--metadata", help="Lomas metadata YAML file.", dir_okay=False)],
    path: Annotated[
        Path | None,
        typer.Option(
            "--path", help="A CSV or Parquet file on the server (stored as an absolute path).", dir_okay=False
        ),
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="An http:// or https:// URL of a CSV or Parquet file.")
    ] = None,
    s3: Annotated[
        str | None, typer.Option("--s3", help="An S3 object, s3://BUCKET/KEY, of a CSV or Parquet file.")
    ] = None,
    postgresql: Annotated[
        str | None, typer.Option("--postgresql", help="A PostgreSQL table or view, TABLE or SCHEMA.TABLE.")
    ] = None,
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="With --s3: the S3 endpoint (default: AWS).")
    ] = None,
    region: Annotated[str | None, typer.Option("--region", help="With --s3: the bucket's region.")] = None,
    credentials: Annotated[
        str | None,
        typer.Option(
            "--credentials",
            help="With --s3 or --url: the name of the keys (s3.<name>) or headers (http.<name>) in the server "
            "secrets. Default: none (anonymous).",
        ),
    ] = None,
    connection: Annotated[
        str | None,
        typer.Option(
            "--connection",
            help="With --postgresql: the name of its URL (postgresql.<name>) in the server secrets.",
        ),
    ] = None,
    file_format: Annotated[
        DataFormat | None, typer.Option("--format", help="File format (default: from the file name).")
    ] = None,
    serve: Annotated[
        Serve | None,
        typer.Option(
            "--serve",
            help="memory (default): load the file in memory; scan (Parquet only): query it where it lies, "
            "for data larger than memory (OpenDP 0.4 pipelines, DiffPrivLib and SmartNoise-Synth are then "
            "refused).",
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Re-register an existing dataset (a new version).")
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check",
            help="Read the data once to check it matches the metadata (skip when the data is only "
            "readable where the server runs).",
        ),
    ] = True,
) -> None:
    location = _Location(
        path, url, s3, postgresql, endpoint_url, region, credentials, connection, file_format, serve
    )
    access = location.access()
    context = _data_context(ctx) if check else None
    version, report = collections.add_dataset(_store(ctx), name, metadata, access, context, replace=replace)
    checked = f"checked: {report.rows} rows match the metadata" if report else "not checked"
    _say(f"Registered dataset {name!r} (version {version}): data at {where(access)} ({checked}).")
    _warn(report.warnings if report else [])


@datasets_app.command(
    "check",
    help=_paragraphs(
        "Check that registered datasets can still be read and still match their metadata (default: every "
        "dataset): columns and types, bounds, categories, nulls and the row count.",
        "The data is read as the server reads it, with the server's secrets and data settings (lomas-admin "
        "--config FILE --secrets FILE datasets check ...). Exit code 2 if any dataset fails.",
    ),
)
def datasets_check(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Dataset names (default: all).")] = None,
) -> None:
    store = _store(ctx)
    names = names or store.list_datasets()
    records = [store.dataset(name) for name in names]  # an unknown name fails before any data is read
    if not records:
        _say("No datasets.")
        return
    context = _data_context(ctx)()  # unreadable settings or secrets fail once, not once per dataset
    failed: list[str] = []
    for record in records:
        try:
            access = collections.stored_access(record.access)
            report = collections.check_dataset(access, record.metadata, context)
        except (StoreError, DataUnavailableError) as error:
            failed.append(record.name)
            _say(f"{record.name}: cannot be read: {error}")
            continue
        if report.problems:
            failed.append(record.name)
            _say(f"{record.name}: the data at {where(access)} does not match its metadata:")
            for problem in report.problems:
                _say(f"  - {problem}")
        else:
            _say(f"{record.name}: OK, the data at {where(access)} matches its metadata ({report.rows} rows).")
        for warning in report.warnings:
            _say(f"  warning: {warning}")
    if failed:
        raise StoreError(f"{len(failed)} of {len(records)} dataset(s) failed the check: {', '.join(failed)}.")


@datasets_app.command("list")
def datasets_list(ctx: typer.Context) -> None:
    """List the datasets with their version, rows, columns and where their data is."""
    store = _store(ctx)
    rows = []
    for name in store.list_datasets():
        record = store.dataset(name)
        rows.append(
            [
                name,
                record.version,
                record.metadata.rows,
                len(record.metadata.columns),
                *_kind_and_location(record.access),
            ]
        )
    _print_table("Datasets", ["dataset", "version", "rows", "columns", "kind", "data"], rows, "No datasets.")


# Lomas access documents hold no secret; these guard documents written by other tools (or 0.4) that may.
_SECRET_KEY = re.compile("secret|password|token|access_key", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(//[^/@:\s]*):[^/@\s]*@")


def _shown_access_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return "***"
    return _URL_PASSWORD.sub(r"\1:***@", value) if isinstance(value, str) else value


def _kind_and_location(document: dict[str, Any]) -> tuple[str, str]:
    """A stored access's kind and `where()`, or why Lomas cannot read it (never a secret)."""
    try:
        access = collections.stored_access(document)
    except StoreError as error:
        return "?", str(error)
    return access.kind, where(access)


@datasets_app.command("show")
def datasets_show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Dataset name.")]) -> None:
    """Show where a dataset's data is, and a summary of its metadata."""
    record = _store(ctx).dataset(name)
    meta = record.metadata
    try:
        document = access_document(collections.stored_access(record.access))
    except StoreError:
        document = record.access
    summary: list[list[Any]] = [["version", record.version], ["data", _kind_and_location(record.access)[1]]]
    summary += [[f"access.{key}", _shown_access_value(key, value)] for key, value in document.items()]
    summary += [
        ["max_ids", meta.max_ids],
        ["rows", meta.rows],
        ["row_privacy", meta.row_privacy],
        ["censor_dims", meta.censor_dims],
    ]
    _print_table(f"Dataset {name}", ["field", "value"], summary, "")
    columns = [[column, _column_type(spec), _column_details(spec)] for column, spec in meta.columns.items()]
    _print_table("Columns", ["column", "type", "details"], columns, "No columns.")


def _column_type(column: AnyColumn) -> str:
    kind = str(column.type)
    return f"{kind} (categorical)" if isinstance(column, CATEGORICAL_COLUMNS) else kind


def _column_details(column: AnyColumn, max_categories: int = 6) -> str:
    details = column.model_dump(mode="json", exclude={"type"}, exclude_defaults=True, exclude_none=True)
    categories = details.pop("categories", None)
    parts = [f"{key}={value}" for key, value in details.items()]
    if categories is not None:
        shown = ", ".join(map(str, categories[:max_categories])) + (
            ", ..." if len(categories) > max_categories else ""
        )
        parts.append(f"categories=[{shown}]")
    return " ".join(parts)


@datasets_app.command(
    "delete",
    help="Delete a dataset (its data file is not touched). Refused while it has grants or archived queries, "
    "unless --cascade.",
)
def datasets_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    cascade: Annotated[
        bool,
        typer.Option(
            "--cascade", help="Also delete its grants and archived queries (their spending record is lost)."
        ),
    ] = False,
) -> None:
    _store(ctx).delete_dataset(name, cascade=cascade)
    _say(f"Deleted dataset {name!r}.")


# -- grants -------------------------------------------------------------------------------------
EpsilonOption = Annotated[float, typer.Option("--epsilon", help="Initial epsilon budget (>= 0).")]
DeltaOption = Annotated[float, typer.Option("--delta", help="Initial delta budget (0 to 1).")]
UserArgument = Annotated[str, typer.Argument(help="User name.")]
DatasetArgument = Annotated[str, typer.Argument(help="Dataset name.")]


@grants_app.command("add")
def grants_add(
    ctx: typer.Context,
    user: UserArgument,
    dataset: DatasetArgument,
    epsilon: EpsilonOption,
    delta: DeltaOption,
) -> None:
    """Give a user a budget on a dataset (a revoked grant comes back with its spending intact)."""
    _store(ctx).grant(user, dataset, epsilon, delta)
    _say(f"Granted {user!r} a budget of epsilon={epsilon!r}, delta={delta!r} on {dataset!r}.")


@grants_app.command("revoke")
def grants_revoke(ctx: typer.Context, user: UserArgument, dataset: DatasetArgument) -> None:
    """Stop a user's access to a dataset; what they spent stays recorded."""
    _store(ctx).revoke(user, dataset)
    _say(f"Revoked {user!r}'s access to {dataset!r}.")


@grants_app.command("set-budget")
def grants_set_budget(
    ctx: typer.Context,
    user: UserArgument,
    dataset: DatasetArgument,
    epsilon: EpsilonOption,
    delta: DeltaOption,
) -> None:
    """Change the initial budget of a grant (spending is unchanged)."""
    _store(ctx).set_initial_budget(user, dataset, epsilon, delta)
    _say(f"The budget of {user!r} on {dataset!r} is now epsilon={epsilon!r}, delta={delta!r}.")


@grants_app.command("list")
def grants_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's grants.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Only grants on this dataset.")] = None,
) -> None:
    """List grants with initial, spent and remaining budgets."""
    store = _store(ctx)
    _check_filters(store, user, dataset)
    headers, rows = _grant_rows(store.grants(user_name=user, dataset_name=dataset))
    _print_table("Grants", headers, rows, "No grants.")


def _check_filters(store: AdminStore, user: str | None, dataset: str | None) -> None:
    """A filter on a misspelt name would print an empty list; say the name is unknown instead."""
    if user is not None:
        _require_user(store, user)
    if dataset is not None:
        store.dataset(dataset)


# -- archives -----------------------------------------------------------------------------------
def _archive_entry(record: ArchiveRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "time": _utc(record.created_at).isoformat(),
        "user": record.user_name,
        "dataset": record.dataset_name,
        "library": record.library,
        "epsilon": record.epsilon,
        "delta": record.delta,
        "status": record.status,
        "error": record.error,
        "client_input": record.client_input,
    }


@archives_app.command("list")
def archives_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's queries.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Only queries on this dataset.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (with each query's client input).")
    ] = False,
) -> None:
    """List queries on private data, oldest first: charged, released (never read data) and running."""
    store = _store(ctx)
    _check_filters(store, user, dataset)
    entries = [
        _archive_entry(record) for record in store.archives(user, dataset, statuses=tuple(QueryStatus))
    ]
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    keys = ["id", "time", "user", "dataset", "library", "epsilon", "delta", "status", "error"]
    headers = ["id", "time (UTC)", "user", "dataset", "library", "ε", "δ", "status", "error"]
    rows = [[entry[key] for key in keys] for entry in entries]
    _print_table("Archived queries", headers, rows, "No queries.")


# -- import / export ----------------------------------------------------------------------------
ExistingFile = Annotated[Path, typer.Argument(help="YAML file.", exists=True, dir_okay=False, readable=True)]
OutputFile = Annotated[Path, typer.Argument(help="YAML file to write (overwritten).", dir_okay=False)]


def _report_changes(changes: list[str], source: Path) -> None:
    for change in changes:
        _say(change)
    _say(
        f"{len(changes)} change(s) from {source}."
        if changes
        else f"Nothing to change: the store already matches {source}."
    )


@import_app.command(
    "users",
    help=_paragraphs(
        "Create or update users and grants from a 0.4 user_collection.yaml.",
        "The whole file is checked first; if anything is wrong, every problem is listed with its location "
        "and nothing is written. Importing the same file again changes nothing. Users and grants that are "
        "not in the file are left as they are; a grant listed in the file restores a revoked one.",
        collections.SPENT_BUDGET_RULE,
    ),
)
def import_users(ctx: typer.Context, file: ExistingFile) -> None:
    _report_changes(collections.import_users(_store(ctx), file), file)


@import_app.command(
    "datasets",
    help=_paragraphs(
        "Register or update datasets from a 0.4 dataset_collection.yaml.",
        "Relative paths are resolved against the file's folder; data paths are stored absolute. The whole "
        "file is checked first (metadata files, and the data unless --no-check); if anything is wrong, "
        "every problem is listed with its location and nothing is written.",
        "A dataset whose data location or metadata changed is re-registered (a new version); importing the "
        "same file again changes nothing. Datasets not in the file are left as they are.",
        "S3_DB accesses (data or metadata) name their keys with credentials_name, looked up in the server "
        "secrets (lomas-admin --config FILE --secrets FILE import datasets ...); inline "
        "access_key_id/secret_access_key are refused. A "
        "dataset_access may also be a Lomas access document (kind: local, http, s3 or postgresql), as "
        "`export datasets` writes for data the 0.4 forms cannot describe.",
    ),
)
def import_datasets(
    ctx: typer.Context,
    file: ExistingFile,
    check: Annotated[
        bool,
        typer.Option("--check/--no-check", help="Read each dataset's data to check it matches its metadata."),
    ] = True,
) -> None:
    result = collections.import_datasets(_store(ctx), file, _data_context(ctx), check=check)
    _report_changes(result.changes, file)
    _warn(result.warnings)


@export_app.command("users")
def export_users(ctx: typer.Context, file: OutputFile) -> None:
    """Write users and active grants (with spent budgets) as a 0.4 user_collection.yaml."""
    count = collections.export_users(_store(ctx), file)
    _say(f"Wrote {count} user(s) to {file}.")


@export_app.command(
    "datasets",
    help=_paragraphs(
        "Write datasets as a 0.4 dataset_collection.yaml, each metadata in <dataset>_metadata.yaml beside it.",
        "Local files are written as PATH_DB and S3 objects as S3_DB (with credentials_name; keys stay in "
        "the server secrets). Data that the 0.4 forms cannot describe (HTTP files, PostgreSQL tables, S3 "
        "objects without an endpoint URL or with a region, files served by scan) is written as a Lomas "
        "access document (kind: ...): `import datasets` reads it back, a 0.4 server cannot.",
    ),
)
def export_datasets(ctx: typer.Context, file: OutputFile) -> None:
    count = collections.export_datasets(_store(ctx), file)
    _say(f"Wrote {count} dataset(s) to {file}.")


def main() -> None:
    app()
