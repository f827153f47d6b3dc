"""Opening a dataset's data, whatever its access kind, as the `DataSource` the engines read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lomas.core.metadata import Metadata
from lomas.server.config import Settings
from lomas.server.data.access import HttpAccess, LocalAccess, PostgresAccess, S3Access, where
from lomas.server.data.base import DataSource
from lomas.server.data.loading import read_table, served_table
from lomas.server.data.memory import MemorySource
from lomas.server.data.postgres import PostgresSource
from lomas.server.data.remote import local_copy
from lomas.server.data.scan import ScanSource
from lomas.server.data.secrets import Secrets


@dataclass(frozen=True)
class DataContext:
    """What opening any dataset needs from the server: secrets, the download folder and limits."""

    secrets: Secrets
    download_dir: Path
    max_download_bytes: int
    download_timeout_s: float
    max_download_s: float | None = None
    duckdb_threads: int = 1
    max_load_bytes: int | None = None
    # False to check the data against its metadata (lomas-admin): every row, as it is stored.
    serve_declared_only: bool = True
    duckdb_memory_limit: str | None = None
    postgres_statement_timeout_s: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings, secrets: Secrets) -> DataContext:
        return cls(
            secrets=secrets,
            download_dir=settings.download_dir,
            max_download_bytes=settings.data.max_download_bytes,
            download_timeout_s=settings.data.download_timeout_s,
            max_download_s=settings.data.max_download_s,
            duckdb_threads=settings.duckdb_threads,
            max_load_bytes=settings.data.cache_max_bytes,
            duckdb_memory_limit=settings.data.duckdb_memory_limit,
            postgres_statement_timeout_s=settings.data.postgres_statement_timeout_s,
        )


def open_source(
    key: str,
    access: LocalAccess | HttpAccess | S3Access | PostgresAccess,
    metadata: Metadata,
    context: DataContext,
) -> DataSource:
    """Load or open the data; `key` (`DatasetRecord.key`, a digest: never a path) names its download folder.

    Raises `DataUnavailableError` when the data cannot be reached or does not match the metadata's
    columns and types (or, when served, has more rows than the metadata's `rows`).
    """
    declared_only = context.serve_declared_only
    if isinstance(access, PostgresAccess):
        url = context.secrets.postgres_url(access.connection)
        return PostgresSource(
            access, url, metadata, context.postgres_statement_timeout_s, context.max_load_bytes, declared_only
        )
    if isinstance(access, LocalAccess):
        path = Path(access.path)
    else:
        path = local_copy(
            access,
            context.secrets,
            context.download_dir / key,
            max_bytes=context.max_download_bytes,
            timeout_s=context.download_timeout_s,
            max_seconds=context.max_download_s,
        )
    if access.serve == "scan":
        return ScanSource(path, metadata, context.duckdb_threads, context.duckdb_memory_limit, declared_only)
    if not declared_only:
        table = read_table(path, access.file_format, metadata, context.max_load_bytes)
        return MemorySource(table, metadata, context.duckdb_threads, context.duckdb_memory_limit)
    table = read_table(path, access.file_format, metadata, context.max_load_bytes, metadata.rows)
    return MemorySource(
        served_table(table, metadata, where(access)),
        metadata,
        context.duckdb_threads,
        context.duckdb_memory_limit,
    )
