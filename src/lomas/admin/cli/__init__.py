"""`lomas-admin`: users, tokens, datasets, grants, archives and collection files of a Lomas store.

Thin: parse the command line, call the AdminStore or `lomas.admin.collections`, print the result.
Every StoreError (a request that cannot be carried out) is printed as one clear message on stderr
with exit code 2, never as a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from lomas.admin.cli.archives import archives_app
from lomas.admin.cli.datasets import datasets_app
from lomas.admin.cli.grants import grants_app
from lomas.admin.cli.output import get_console
from lomas.admin.cli.store import StoreOptions
from lomas.admin.cli.tokens import tokens_app
from lomas.admin.cli.transfer import export_app, import_app
from lomas.admin.cli.users import users_app
from lomas.server.store.service import StoreError

USER_ERROR_EXIT = 2


class _AdminGroup(TyperGroup):
    """Turns the errors a user can fix into a message and exit code 2 (no traceback)."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer vendors its click)
        try:
            return super().invoke(ctx)
        except StoreError as error:
            get_console(stderr=True).print(f"Error: {error}", markup=False, highlight=False)
            raise typer.Exit(code=USER_ERROR_EXIT) from None


app = typer.Typer(
    name="lomas-admin",
    cls=_AdminGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="Administer a Lomas store: users, API tokens, datasets, budget grants, query archives, 0.4 collection "
    "files.",
)
for _sub_app, _name in (
    (users_app, "users"),
    (datasets_app, "datasets"),
    (grants_app, "grants"),
    (archives_app, "archives"),
    (tokens_app, "tokens"),
    (import_app, "import"),
    (export_app, "export"),
):
    app.add_typer(_sub_app, name=_name)


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
    ctx.obj = StoreOptions(store_url, config, data_dir, secrets)


def main() -> None:
    app()
