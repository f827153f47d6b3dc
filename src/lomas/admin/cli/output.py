"""Output: rich on a terminal, plain text otherwise; tables, cells, help text and warnings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def get_console(stderr: bool = False) -> Console:
    """Rich output on a terminal; unwrapped plain text otherwise (pipes, files, scripts)."""
    console = Console(stderr=stderr, highlight=False)
    return console if console.is_terminal else Console(stderr=stderr, highlight=False, width=100_000)


def say(message: str) -> None:
    get_console().print(message, markup=False)


def print_table(title: str, headers: list[str], rows: list[list[Any]], empty: str) -> None:
    """Aligned columns; on a terminal with a title and headers stacked to leave room for the values."""
    if not rows:
        say(empty)
        return
    console = get_console()
    terminal = console.is_terminal
    table = Table(title=title if terminal else None, box=None, pad_edge=False)
    for header in headers:
        table.add_column(header.replace(" ", "\n") if terminal else header, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell(value)) for value in row))
    console.print(table)


def paragraphs(*paragraphs: str) -> str:
    """Help text: rich keeps line breaks, so each paragraph is one line and wrapped on display."""
    return "\n\n".join(paragraphs)


def cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return ""
    return str(value)


def utc(moment: datetime) -> datetime:
    """Store timestamps are UTC; SQLite hands them back without their time zone."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def warn(warnings: list[str]) -> None:
    """What a data check noted without refusing (on stderr, so that scripts see it apart)."""
    for warning in warnings:
        get_console(stderr=True).print(f"Warning: {warning}", markup=False, highlight=False)
