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
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from typer.core import TyperGroup

from lomas.admin import collections
from lomas.core.metadata import CATEGORICAL_COLUMNS, AnyColumn
from lomas.server.config import load_settings
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
    """The global options; the store is opened (and migrated) on first use, so --help needs none."""

    store_url: str | None
    config: Path | None
    data_dir: Path | None
    store: AdminStore | None = field(default=None)


def _store_url(options: _StoreOptions) -> str:
    """--store-url, or the URL the server would use (same config file, data dir and LOMAS_* variables)."""
    if options.store_url:
        return options.store_url
    try:
        return load_settings(options.config, data_dir=options.data_dir).store_url
    except (FileNotFoundError, ValueError, yaml.YAMLError) as error:
        raise StoreError(f"Cannot read the settings: {error}") from error


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
    config: Annotated[Path | None, typer.Option(help="The server's YAML settings file.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="The server's data dir (its embedded store).")] = None,
) -> None:
    ctx.obj = _StoreOptions(store_url, config, data_dir)


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
            exact(grant.initial_epsilon), exact(grant.initial_delta), exact(grant.spent_epsilon), exact(grant.spent_delta)
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


@datasets_app.command("add")
def datasets_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Dataset name researchers use.")],
    metadata: Annotated[Path, typer.Option("--metadata", help="Lomas metadata YAML file.", dir_okay=False)],
    path: Annotated[
        Path, typer.Option("--path", help="Data file (stored as an absolute path).", dir_okay=False)
    ],
    file_format: Annotated[
        DataFormat | None, typer.Option("--format", help="Data file format (default: from the file name).")
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
    """Register a dataset stored in a local CSV or Parquet file."""
    fmt = file_format.value if file_format else None
    version = collections.add_dataset(_store(ctx), name, metadata, path, fmt, replace=replace, check=check)
    _say(f"Registered dataset {name!r} (version {version}).")


@datasets_app.command("list")
def datasets_list(ctx: typer.Context) -> None:
    """List the datasets with their version, rows, columns and data location."""
    store = _store(ctx)
    rows = []
    for name in store.list_datasets():
        record = store.dataset(name)
        rows.append(
            [name, record.version, record.metadata.rows, len(record.metadata.columns), _where(record.access)]
        )
    _print_table("Datasets", ["dataset", "version", "rows", "columns", "data"], rows, "No datasets.")


_SECRET_KEY = re.compile("secret|password|token", re.IGNORECASE)


def _where(access: dict[str, Any]) -> str:
    kind = access.get("kind") or access.get("database_type", "?")
    return f"{kind}: {access['path']}" if "path" in access else str(kind)


@datasets_app.command("show")
def datasets_show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Dataset name.")]) -> None:
    """Show where a dataset's data is, and a summary of its metadata."""
    record = _store(ctx).dataset(name)
    meta = record.metadata
    summary = [["version", record.version]] + [
        [f"access.{key}", "***" if _SECRET_KEY.search(key) else value] for key, value in record.access.items()
    ]
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


def _paragraphs(*paragraphs: str) -> str:
    """Help text: rich keeps line breaks, so each paragraph is one line and wrapped on display."""
    return "\n\n".join(paragraphs)


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
        "same file again changes nothing. Datasets not in the file are left as they are. S3_DB datasets "
        "are not supported yet.",
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
    _report_changes(collections.import_datasets(_store(ctx), file, check=check), file)


@export_app.command("users")
def export_users(ctx: typer.Context, file: OutputFile) -> None:
    """Write users and active grants (with spent budgets) as a 0.4 user_collection.yaml."""
    count = collections.export_users(_store(ctx), file)
    _say(f"Wrote {count} user(s) to {file}.")


@export_app.command("datasets")
def export_datasets(ctx: typer.Context, file: OutputFile) -> None:
    """Write datasets as a 0.4 dataset_collection.yaml, each metadata in <dataset>_metadata.yaml beside it."""
    count = collections.export_datasets(_store(ctx), file)
    _say(f"Wrote {count} dataset(s) to {file}.")


def main() -> None:
    app()
