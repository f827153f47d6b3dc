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
from psycopg.conninfo import conninfo_to_dict

from lomas.core.metadata import Metadata
from lomas.server.data.access import PostgresAccess, where
from lomas.server.data.base import TABLE_NAME, DataSource
from lomas.server.data.dtypes import DATETIME_DTYPE, pandas_dtypes, quoted, typed_select
from lomas.server.data.errors import DataUnavailableError, PlanningRefusedError, UnreachableError
from lomas.server.data.loading import read_table, served_table
from lomas.server.data.memory import pandas_form, polars_form

# The PostgreSQL types (OIDs) that convert to each metadata type on every value. numeric becomes a double
# (it only fails beyond 1e308), never an integer or a real.
_INT2, _INT4, _INT8, _FLOAT4, _FLOAT8, _NUMERIC = 21, 23, 20, 700, 701, 1700
_WIDENING: dict[str, set[int]] = {
    "Int32": {_INT2, _INT4},
    "Int64": {_INT2, _INT4, _INT8},
    "float32": {_FLOAT4},
    "float64": {_INT2, _INT4, _INT8, _FLOAT4, _FLOAT8, _NUMERIC},
    "boolean": {16},
    DATETIME_DTYPE: {1114, 1184, 1082},  # timestamp, timestamptz, date
}


class PostgresSource(DataSource):
    def __init__(
        self,
        access: PostgresAccess,
        url: str,
        metadata: Metadata,
        statement_timeout_s: float,
        max_load_bytes: int | None = None,
        declared_only: bool = True,
    ) -> None:
        super().__init__(metadata)
        self._declared_only = declared_only
        self._access = access
        self._max_load_bytes = max_load_bytes
        self._url = url
        # Read-only, time-limited, and in UTC: timestamps with a time zone become the same naive UTC
        # datetimes as in files, whatever the database's own time zone.
        self._options = (
            "-c default_transaction_read_only=on -c TimeZone=UTC "
            f"-c statement_timeout={int(statement_timeout_s * 1000)}"
        )
        self._table = ".".join(quoted(part) for part in access.table.split("."))
        self._idle: queue.SimpleQueue[psycopg.Connection[Any]] = queue.SimpleQueue()
        self._check_table()

    def _message(self, error: Exception) -> str:
        """The first line of a psycopg error, without the URL or its password (libpq quotes a malformed
        URL whole)."""
        text = (str(error).strip().splitlines() or [type(error).__name__])[0]
        secrets = [self._url]
        try:
            secrets.append(str(conninfo_to_dict(self._url).get("password") or ""))
        except psycopg.Error:
            pass
        for secret in filter(None, secrets):
            text = text.replace(str(secret), "***")
        return text

    def _idle_or_new(self) -> psycopg.Connection[Any]:
        """A pooled connection that still answers, or a new one. A dead pooled connection (a restarted
        database, an idle timeout) is dropped before it runs anything, so it never fails a query."""
        while True:
            try:
                connection = self._idle.get_nowait()
            except queue.Empty:
                break
            try:
                connection.execute("SELECT 1")
                return connection
            except psycopg.Error:
                connection.close()
        try:
            return psycopg.connect(self._url, connect_timeout=10, options=self._options)
        except psycopg.Error as error:
            raise UnreachableError(
                f"Cannot connect to {where(self._access)}: {self._message(error)}"
            ) from None

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection whose transaction is rolled back after use, so that nothing a statement changed
        in the session outlives it; a connection that failed is dropped.

        Raises `UnreachableError` before anything was sent: the query service then gives the reservation
        back, even in the middle of a query.
        """
        connection = self._idle_or_new()
        try:
            yield connection
            connection.rollback()
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
                columns = connection.execute(f"SELECT * FROM {self._table} LIMIT 0").description or []
            except psycopg.Error as error:
                raise DataUnavailableError(
                    f"Cannot read {where(self._access)}: {self._message(error)}"
                ) from None
            types = {column.name: column.type_code for column in columns}
            missing = [name for name in self.metadata.columns if name not in types]
            if missing:
                raise DataUnavailableError(
                    f"{where(self._access)} does not match its metadata: columns missing from the data: "
                    f"{', '.join(missing)}."
                )
            # A cast that fails on some rows only (text to a number, bigint to integer, double to real)
            # runs while a query reads, and which rows it reads depends on the query's WHERE: the failure
            # would tell whether such a row exists. Only conversions that never fail are served.
            narrowing = [
                name
                for name, dtype in pandas_dtypes(self.metadata).items()
                if dtype != "string" and types[name] not in _WIDENING[dtype]
            ]
            if narrowing:
                raise DataUnavailableError(
                    f"{where(self._access)} does not match its metadata: columns whose SQL type does not "
                    f"always convert to their metadata type: {', '.join(narrowing)}. Store them in their "
                    "metadata type or a narrower one of the same kind (or serve a view that does)."
                )
            try:
                connection.execute(
                    f"{typed_select(self.metadata, self._table, declared_only=self._declared_only)} LIMIT 0"
                )
            except psycopg.Error as error:
                raise DataUnavailableError(
                    f"{where(self._access)} does not match its metadata: {self._message(error)}"
                ) from None

    def check_available(self) -> None:
        """The database answers and the table still has its columns (planned, not run: no row is read)."""
        self._check_table()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def sql(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        typed = f"WITH {TABLE_NAME} AS ({typed_select(self.metadata, self._table, declared_only=self._declared_only)}) {query}"
        with self._connection() as connection:
            # The extended protocol (binary) runs exactly one statement, whatever the text holds.
            cursor = connection.cursor(binary=True)
            try:  # planned first: what PostgreSQL refuses whatever the rows is not charged
                cursor.execute(f"EXPLAIN {typed}")  # type: ignore[call-overload]
            except psycopg.Error as error:
                raise PlanningRefusedError(
                    f"PostgreSQL cannot run this query: {self._message(error)}"
                ) from None
            cursor.execute(typed)  # type: ignore[call-overload]
            names = [column.name for column in cursor.description or []]
            rows = [
                tuple(float(v) if isinstance(v, Decimal) else v for v in row) for row in cursor.fetchall()
            ]
        return names, rows

    def _arrow(self) -> pa.Table:
        def load() -> tuple[pa.Table, int]:
            copy = f"COPY ({typed_select(self.metadata, self._table, True, self._declared_only)}) TO STDOUT WITH (FORMAT csv, HEADER true)"
            with tempfile.TemporaryDirectory(prefix="lomas-pg-") as folder:
                path = Path(folder) / "table.csv"
                with (
                    self._connection() as connection,
                    path.open("wb") as file,
                    connection.cursor().copy(copy) as rows,  # type: ignore[arg-type]
                ):
                    for chunk in rows:
                        file.write(chunk)
                table = served_table(
                    read_table(path, "csv", self.metadata, self._max_load_bytes),
                    self.metadata,
                    where(self._access),
                )
            return table, int(table.nbytes)

        return self.memo("arrow", load)

    def lazy(self) -> pl.LazyFrame:
        return self.memo("polars", lambda: polars_form(self._arrow())).lazy()

    def frame(self) -> pd.DataFrame:
        return self.memo("pandas", lambda: pandas_form(self._arrow(), self.metadata))
