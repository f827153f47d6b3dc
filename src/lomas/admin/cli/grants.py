"""`lomas-admin grants`: budgets (epsilon, delta) of users on datasets."""

from __future__ import annotations

from typing import Annotated

import typer

from lomas.admin.cli.output import print_table, say
from lomas.admin.cli.store import store_of
from lomas.admin.cli.users import grant_rows, require_user
from lomas.server.store.service import AdminStore

grants_app = typer.Typer(no_args_is_help=True, help="Budgets (epsilon, delta) of users on datasets.")

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
    store_of(ctx).grant(user, dataset, epsilon, delta)
    say(f"Granted {user!r} a budget of epsilon={epsilon!r}, delta={delta!r} on {dataset!r}.")


@grants_app.command("revoke")
def grants_revoke(ctx: typer.Context, user: UserArgument, dataset: DatasetArgument) -> None:
    """Stop a user's access to a dataset; what they spent stays recorded."""
    store_of(ctx).revoke(user, dataset)
    say(f"Revoked {user!r}'s access to {dataset!r}.")


@grants_app.command("set-budget")
def grants_set_budget(
    ctx: typer.Context,
    user: UserArgument,
    dataset: DatasetArgument,
    epsilon: EpsilonOption,
    delta: DeltaOption,
) -> None:
    """Change the initial budget of a grant (spending is unchanged)."""
    store_of(ctx).set_initial_budget(user, dataset, epsilon, delta)
    say(f"The budget of {user!r} on {dataset!r} is now epsilon={epsilon!r}, delta={delta!r}.")


@grants_app.command("list")
def grants_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's grants.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Only grants on this dataset.")] = None,
) -> None:
    """List grants with initial, spent and remaining budgets."""
    store = store_of(ctx)
    check_filters(store, user, dataset)
    headers, rows = grant_rows(store.grants(user_name=user, dataset_name=dataset))
    print_table("Grants", headers, rows, "No grants.")


def check_filters(store: AdminStore, user: str | None, dataset: str | None) -> None:
    """A filter on a misspelt name would print an empty list; say the name is unknown instead."""
    if user is not None:
        require_user(store, user)
    if dataset is not None:
        store.dataset(dataset)
