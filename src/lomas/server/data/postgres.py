"""A table (or view) of a PostgreSQL database.

SmartNoise-SQL's rewritten query runs inside the database: only its aggregates come back. Libraries
that need the whole table (OpenDP, DiffPrivLib, SmartNoise-Synth) get it copied out once with COPY and
kept in memory like a loaded file. Connections are read-only and have a statement timeout; their URL
comes from the server secrets and never appears in a message.
"""

from __future__ import annotations

import queue
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import psycopg
import pyarrow as pa

from lomas.core.metadata import Metadata
from lomas.server.data.access import PostgresAccess, where
from lomas.server.data.base import TABLE_NAME, DataSource
from lomas.server.data.dtypes import quoted, typed_columns
from lomas.server.data.errors import DataUnavailableError
from lomas.server.data.loading import read_table
from lomas.server.data.memory import pandas_form, polars_form


def _first_line(error: Exception) -> str:
    """psycopg's messages name hosts, users, tables and columns, never a password or a row value."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class PostgresSource(DataSource):
    def __init__(
        self, access: PostgresAccess, url: str, metadata: Metadata, statement_timeout_s: float
    ) -> None:
        super().__init__(metadata)
        self._access = access
        self._url = url
        self._options = (
            f"-c default_transaction_read_only=on -c statement_timeout={int(statement_timeout_s * 1000)}"
        )
        self._table = ".".join(quoted(part) for part in access.table.split("."))
        self._idle: queue.SimpleQueue[psycopg.Connection[Any]] = queue.SimpleQueue()
        self._check_table()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """An idle connection of this source, or a new one; a connection that failed is dropped."""
        try:
            connection = self._idle.get_nowait()
        except queue.Empty:
            try:
                connection = psycopg.connect(
                    self._url, connect_timeout=10, options=self._options, autocommit=True
                )
            except psycopg.Error as error:
                raise DataUnavailableError(
                    f"Cannot connect to {where(self._access)}: {_first_line(error)}"
                ) from None
        try:
            yield connection
        except BaseException:
            connection.close()
            raise
        self._idle.put(connection)

    def _check_table(self) -> None:
        """The table exists, has the metadata's columns, and PostgreSQL can cast them to their types.

        Both statements end in `LIMIT 0`: PostgreSQL plans them and reads no row.
        """
        with self._connection() as connection:
            try:
                names = [
                    column.name
                    for column in connection.execute(f"SELECT * FROM {self._table} LIMIT 0").description or []
                ]
            except psycopg.Error as error:
                raise DataUnavailableError(
                    f"Cannot read {where(self._access)}: {_first_line(error)}"
                ) from None
            missing = [name for name in self.metadata.columns if name not in names]
            if missing:
                raise DataUnavailableError(
                    f"{where(self._access)} does not match its metadata: columns missing from the data: "
                    f"{', '.join(missing)}."
                )
            try:
                connection.execute(f"SELECT {typed_columns(self.metadata)} FROM {self._table} LIMIT 0")
            except psycopg.Error as error:
                raise DataUnavailableError(
                    f"{where(self._access)} does not match its metadata: {_first_line(error)}"
                ) from None

    def check_available(self) -> None:
        """The database answers and the table still has its columns (planned, not run: no row is read)."""
        self._check_table()

    def sql(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        typed = f"WITH {TABLE_NAME} AS (SELECT {typed_columns(self.metadata)} FROM {self._table}) {query}"
        with self._connection() as connection:
            cursor = connection.execute(typed)  # type: ignore[call-overload]
            names = [column.name for column in cursor.description or []]
            rows = [
                tuple(float(v) if isinstance(v, Decimal) else v for v in row) for row in cursor.fetchall()
            ]
        return names, rows

    def _arrow(self) -> pa.Table:
        def load() -> tuple[pa.Table, int]:
            copy = f"COPY (SELECT {typed_columns(self.metadata, text_booleans=True)} FROM {self._table}) TO STDOUT WITH (FORMAT csv, HEADER true)"
            with tempfile.TemporaryDirectory(prefix="lomas-pg-") as folder:
                path = Path(folder) / "table.csv"
                with (
                    self._connection() as connection,
                    path.open("wb") as file,
                    connection.cursor().copy(copy) as rows,  # type: ignore[arg-type]
                ):
                    for chunk in rows:
                        file.write(chunk)
                table = read_table(path, "csv", self.metadata)
            return table, int(table.nbytes)

        return self.memo("arrow", load)

    def lazy(self) -> pl.LazyFrame:
        return self.memo("polars", lambda: polars_form(self._arrow())).lazy()

    def frame(self) -> pd.DataFrame:
        return self.memo("pandas", lambda: pandas_form(self._arrow(), self.metadata))
