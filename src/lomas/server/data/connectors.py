"""Where a dataset's data lives, and how to read it into a frame with the metadata's dtypes.

The `access` document stored with a dataset names its kind: `{"kind": "local", "path": ..., "format":
"csv"|"parquet"}`. The Lomas 0.4 form `{"database_type": "PATH_DB", "path": ...}` is accepted too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, TypeAdapter, model_validator

from lomas.core.metadata import Metadata
from lomas.server.data.dtypes import coerce_frame


class DataUnavailableError(RuntimeError):
    """The data cannot be read right now (moved, unreachable, unreadable). No query read it."""


class LocalFileAccess(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["local"] = "local"
    path: str
    format: Literal["csv", "parquet"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_lomas_04(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("database_type") == "PATH_DB":
            value = {key: val for key, val in value.items() if key != "database_type"} | {"kind": "local"}
        return value

    @property
    def file_format(self) -> str:
        return self.format or ("parquet" if self.path.lower().endswith((".parquet", ".pq")) else "csv")


_ACCESS_ADAPTER: TypeAdapter[LocalFileAccess] = TypeAdapter(LocalFileAccess)


def parse_access(document: dict[str, Any]) -> LocalFileAccess:
    """Validate an access document (raises pydantic's ValidationError with the field at fault)."""
    return _ACCESS_ADAPTER.validate_python(document)


def read_frame(access: LocalFileAccess, metadata: Metadata) -> pd.DataFrame:
    """Read the whole dataset with the dtypes its metadata declares."""
    path = Path(access.path)
    if not path.is_file():
        raise DataUnavailableError(f"Data file not found: {path}")
    try:
        if access.file_format == "parquet":
            raw = pd.read_parquet(path, columns=list(metadata.columns))
        else:
            raw = pd.read_csv(path, usecols=list(metadata.columns))
    except (OSError, ValueError) as error:
        raise DataUnavailableError(f"Cannot read {path} as {access.file_format}: {error}") from error
    try:
        return coerce_frame(raw, metadata)  # its errors name columns, never values
    except ValueError as error:
        raise DataUnavailableError(f"{path} does not match its metadata: {error}") from error
