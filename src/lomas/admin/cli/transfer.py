"""`lomas-admin import` and `lomas-admin export`: Lomas 0.4 collection YAML files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lomas.admin import collections
from lomas.admin.cli.output import paragraphs, say, warn
from lomas.admin.cli.store import data_context, store_of

import_app = typer.Typer(
    no_args_is_help=True, help="Bulk import of Lomas 0.4 collection YAML files (idempotent)."
)
export_app = typer.Typer(no_args_is_help=True, help="Export to Lomas 0.4 collection YAML files.")

ExistingFile = Annotated[Path, typer.Argument(help="YAML file.", exists=True, dir_okay=False, readable=True)]
OutputFile = Annotated[Path, typer.Argument(help="YAML file to write (overwritten).", dir_okay=False)]


def _report_changes(changes: list[str], source: Path) -> None:
    for change in changes:
        say(change)
    say(
        f"{len(changes)} change(s) from {source}."
        if changes
        else f"Nothing to change: the store already matches {source}."
    )


@import_app.command(
    "users",
    help=paragraphs(
        "Create or update users and grants from a 0.4 user_collection.yaml.",
        "The whole file is checked first; if anything is wrong, every problem is listed with its location "
        "and nothing is written. Importing the same file again changes nothing. Users and grants that are "
        "not in the file are left as they are; a grant listed in the file restores a revoked one.",
        collections.SPENT_BUDGET_RULE,
    ),
)
def import_users(ctx: typer.Context, file: ExistingFile) -> None:
    _report_changes(collections.import_users(store_of(ctx), file), file)


@import_app.command(
    "datasets",
    help=paragraphs(
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
    result = collections.import_datasets(store_of(ctx), file, data_context(ctx), check=check)
    _report_changes(result.changes, file)
    warn(result.warnings)


@export_app.command("users")
def export_users(ctx: typer.Context, file: OutputFile) -> None:
    """Write users and active grants (with spent budgets) as a 0.4 user_collection.yaml."""
    count = collections.export_users(store_of(ctx), file)
    say(f"Wrote {count} user(s) to {file}.")


@export_app.command(
    "datasets",
    help=paragraphs(
        "Write datasets as a 0.4 dataset_collection.yaml, each metadata in <dataset>_metadata.yaml beside it.",
        "Local files are written as PATH_DB and S3 objects as S3_DB (with credentials_name; keys stay in "
        "the server secrets). Data that the 0.4 forms cannot describe (HTTP files, PostgreSQL tables, S3 "
        "objects without an endpoint URL or with a region, files served by scan) is written as a Lomas "
        "access document (kind: ...): `import datasets` reads it back, a 0.4 server cannot.",
    ),
)
def export_datasets(ctx: typer.Context, file: OutputFile) -> None:
    count = collections.export_datasets(store_of(ctx), file)
    say(f"Wrote {count} dataset(s) to {file}.")
