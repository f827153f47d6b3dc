"""`lomas-admin users`: researchers, and whether they may query."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from lomas.admin import collections
from lomas.admin.cli.output import print_table, say
from lomas.admin.cli.store import store_of
from lomas.server.ledger import Budget, exact
from lomas.server.store.service import AdminStore, GrantRecord, NotFoundError

users_app = typer.Typer(no_args_is_help=True, help="Researchers, and whether they may query.")


def require_user(store: AdminStore, name: str) -> None:
    if not store.user_exists(name):
        raise NotFoundError(f"No user named {name!r}.")


def grant_rows(grants: list[GrantRecord], with_user: bool = True) -> tuple[list[str], list[list[Any]]]:
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
    store_of(ctx).add_user(collections.check_user_name(name), may_query=not no_query)
    say(f"Added user {name!r}" + (" (may not query)." if no_query else "."))


@users_app.command("list")
def users_list(ctx: typer.Context) -> None:
    """List the users, whether they may query, and their number of active grants."""
    store = store_of(ctx)
    active: dict[str, int] = {}
    for grant in store.grants():
        active[grant.user_name] = active.get(grant.user_name, 0) + (not grant.revoked)
    rows = [[name, store.may_query(name), active.get(name, 0)] for name in store.list_users()]
    print_table("Users", ["user", "may query", "active grants"], rows, "No users.")


@users_app.command("show")
def users_show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Show a user and their grants, with initial, spent and remaining budgets."""
    store = store_of(ctx)
    require_user(store, name)
    say(f"User {name!r}: {'may' if store.may_query(name) else 'may NOT'} query.")
    headers, rows = grant_rows(store.grants(user_name=name), with_user=False)
    print_table(f"Grants of {name}", headers, rows, "No grants.")


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
    store_of(ctx).delete_user(name, cascade=cascade)
    say(f"Deleted user {name!r}.")


@users_app.command("set-may-query")
def users_set_may_query(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name.")],
    may_query: Annotated[bool, typer.Argument(help="true or false.", metavar="true|false")],
) -> None:
    """Allow or forbid a user to run queries (their grants stay)."""
    store_of(ctx).set_may_query(name, may_query)
    say(f"User {name!r} {'may' if may_query else 'may no longer'} query.")
