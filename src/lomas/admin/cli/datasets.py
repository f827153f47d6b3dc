"""`lomas-admin datasets`: private datasets, where their data is, and their public metadata."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from lomas.admin import collections
from lomas.admin.cli.location import DataFormat, Location, Serve
from lomas.admin.cli.output import paragraphs, print_table, say, warn
from lomas.admin.cli.store import data_context, store_of
from lomas.core.metadata import CATEGORICAL_COLUMNS, AnyColumn
from lomas.server.data.access import access_document, where
from lomas.server.data.errors import DataUnavailableError
from lomas.server.store.service import StoreError

datasets_app = typer.Typer(
    no_args_is_help=True, help="Private datasets: where the data is, and its public metadata."
)


@datasets_app.command(
    "add",
    help=paragraphs(
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
    location = Location(
        path, url, s3, postgresql, endpoint_url, region, credentials, connection, file_format, serve
    )
    access = location.access()
    context = data_context(ctx) if check else None
    version, report = collections.add_dataset(store_of(ctx), name, metadata, access, context, replace=replace)
    checked = f"checked: {report.rows} rows match the metadata" if report else "not checked"
    say(f"Registered dataset {name!r} (version {version}): data at {where(access)} ({checked}).")
    warn(report.warnings if report else [])


@datasets_app.command(
    "check",
    help=paragraphs(
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
    store = store_of(ctx)
    names = names or store.list_datasets()
    records = [store.dataset(name) for name in names]  # an unknown name fails before any data is read
    if not records:
        say("No datasets.")
        return
    context = data_context(ctx)()  # unreadable settings or secrets fail once, not once per dataset
    failed: list[str] = []
    for record in records:
        try:
            access = collections.stored_access(record.access)
            report = collections.check_dataset(access, record.metadata, context)
        except (StoreError, DataUnavailableError) as error:
            failed.append(record.name)
            say(f"{record.name}: cannot be read: {error}")
            continue
        if report.problems:
            failed.append(record.name)
            say(f"{record.name}: the data at {where(access)} does not match its metadata:")
            for problem in report.problems:
                say(f"  - {problem}")
        else:
            say(f"{record.name}: OK, the data at {where(access)} matches its metadata ({report.rows} rows).")
        for warning in report.warnings:
            say(f"  warning: {warning}")
    if failed:
        raise StoreError(f"{len(failed)} of {len(records)} dataset(s) failed the check: {', '.join(failed)}.")


@datasets_app.command("list")
def datasets_list(ctx: typer.Context) -> None:
    """List the datasets with their version, rows, columns and where their data is."""
    store = store_of(ctx)
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
    print_table("Datasets", ["dataset", "version", "rows", "columns", "kind", "data"], rows, "No datasets.")


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
    record = store_of(ctx).dataset(name)
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
    print_table(f"Dataset {name}", ["field", "value"], summary, "")
    columns = [[column, _column_type(spec), _column_details(spec)] for column, spec in meta.columns.items()]
    print_table("Columns", ["column", "type", "details"], columns, "No columns.")


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
    store_of(ctx).delete_dataset(name, cascade=cascade)
    say(f"Deleted dataset {name!r}.")
