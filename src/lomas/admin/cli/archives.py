"""`lomas-admin archives`: queries run on private data, with their cost."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from lomas.admin.cli.grants import check_filters
from lomas.admin.cli.output import print_table, utc
from lomas.admin.cli.store import store_of
from lomas.server.store.models import QueryStatus
from lomas.server.store.service import ArchiveRecord

archives_app = typer.Typer(no_args_is_help=True, help="Queries run on private data, with their cost.")


def _archive_entry(record: ArchiveRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "time": utc(record.created_at).isoformat(),
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
    store = store_of(ctx)
    check_filters(store, user, dataset)
    entries = [
        _archive_entry(record) for record in store.archives(user, dataset, statuses=tuple(QueryStatus))
    ]
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    keys = ["id", "time", "user", "dataset", "library", "epsilon", "delta", "status", "error"]
    headers = ["id", "time (UTC)", "user", "dataset", "library", "ε", "δ", "status", "error"]
    rows = [[entry[key] for key in keys] for entry in entries]
    print_table("Archived queries", headers, rows, "No queries.")
