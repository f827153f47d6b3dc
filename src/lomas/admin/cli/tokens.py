"""`lomas-admin tokens`: API tokens with which researchers authenticate (`Authorization: Bearer`)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated

import typer

from lomas.admin.cli.output import get_console, paragraphs, print_table
from lomas.admin.cli.store import store_of
from lomas.server.store.models import utcnow
from lomas.server.store.service import StoreError
from lomas.server.store.tokens import TokenRecord, TokenStore

tokens_app = typer.Typer(
    no_args_is_help=True, help="API tokens with which researchers authenticate (Authorization: Bearer)."
)

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
DEFAULT_EXPIRES_IN = "90d"


def parse_expires_in(text: str) -> timedelta | None:
    """`30d`, `12h`, `45m`, `2w`, `90s` as a duration; `never` as None."""
    value = text.strip().lower()
    if value == "never":
        return None
    match = _DURATION.fullmatch(value)
    if match is None or int(match.group(1)) == 0:
        raise StoreError(
            f"Invalid --expires-in {text!r}: give a positive number and a unit (s, m, h, d, w), "
            "for example 30d or 12h, or 'never'."
        )
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise StoreError(f"Invalid --expires-in {text!r}: too far in the future.") from None


def tokens_of(ctx: typer.Context) -> TokenStore:
    return TokenStore(store_of(ctx).sessions)


def _when(moment: datetime | None, never: str = "") -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment is not None else never


@tokens_app.command("issue")
def tokens_issue(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="The user the token identifies.")],
    label: Annotated[str, typer.Option("--label", help="What the token is for (shown by `list`).")] = "",
    expires_in: Annotated[
        str,
        typer.Option("--expires-in", help="Lifetime: a number and a unit (s, m, h, d, w), or 'never'."),
    ] = DEFAULT_EXPIRES_IN,
) -> None:
    """Issue a token for a user and print it, once.

    The token alone goes to stdout (for `TOKEN=$(lomas-admin tokens issue ...)`), the rest to stderr.
    """
    lifetime = parse_expires_in(expires_in)
    expires_at = None if lifetime is None else utcnow() + lifetime
    issued = tokens_of(ctx).issue_token(user, label, expires_at)
    typer.echo(issued.plaintext)
    notes = get_console(stderr=True)
    notes.print(
        paragraphs(
            f"Issued token {issued.token_id} for {user!r}, valid until {_when(expires_at, 'revoked')}.",
            "Copy it now: it cannot be shown again (the store keeps only its hash). The researcher passes "
            "it as Client(..., token=...) or in the LOMAS_TOKEN environment variable.",
        ),
        markup=False,
    )


def _row(record: TokenRecord) -> list[object]:
    return [
        record.id,
        record.user_name,
        record.label,
        _when(record.created_at),
        _when(record.expires_at, "never"),
        _when(record.revoked_at),
        _when(record.last_used_at),
        record.status(),
    ]


@tokens_app.command("list")
def tokens_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's tokens.")] = None,
) -> None:
    """List tokens (never their values, which are not stored)."""
    headers = ["id", "user", "label", "created", "expires", "revoked", "last used", "status"]
    rows = [_row(record) for record in tokens_of(ctx).list_tokens(user)]
    print_table("API tokens", headers, rows, "No tokens.")


@tokens_app.command("revoke")
def tokens_revoke(ctx: typer.Context, token_id: Annotated[int, typer.Argument(help="The token's id.")]) -> None:
    """Revoke a token at once; requests that present it are refused from then on."""
    record = tokens_of(ctx).revoke_token(token_id)
    get_console().print(f"Revoked token {record.id} of {record.user_name!r}.", markup=False)
