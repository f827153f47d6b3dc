"""Where a dataset's data is: the location options of `datasets add`, and the access they describe."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lomas.admin import collections
from lomas.server.data.access import parse_access
from lomas.server.store.service import StoreError


class DataFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"


class Serve(StrEnum):
    MEMORY = "memory"
    SCAN = "scan"


# The command-line option of each field of an access document, for messages.
_ACCESS_OPTIONS = {
    "path": "--path",
    "url": "--url",
    "bucket": "--s3",
    "key": "--s3",
    "endpoint_url": "--endpoint-url",
    "region": "--region",
    "credentials": "--credentials",
    "table": "--postgresql",
    "connection": "--connection",
    "format": "--format",
    "serve": "--serve",
}


@dataclass(frozen=True)
class Location:
    """The location options of `datasets add`, as typed."""

    path: Path | None
    url: str | None
    s3: str | None
    postgresql: str | None
    endpoint_url: str | None
    region: str | None
    credentials: str | None
    connection: str | None
    file_format: DataFormat | None
    serve: Serve | None

    def document(self) -> dict[str, Any]:
        """The access document the options describe (StoreError for options that do not go together)."""
        given = {
            option: value
            for option, value in (
                ("--path", self.path),
                ("--url", self.url),
                ("--s3", self.s3),
                ("--postgresql", self.postgresql),
            )
            if value is not None
        }
        if len(given) != 1:
            raise StoreError(
                "Give where the data is with exactly one of --path FILE, --url URL, --s3 s3://BUCKET/KEY or "
                f"--postgresql TABLE{' (not ' + ' and '.join(given) + ')' if given else ''}."
            )
        kind = next(iter(given))
        allowed = {
            "--path": {"--format", "--serve"},
            "--url": {"--format", "--serve", "--credentials"},
            "--s3": {"--format", "--serve", "--credentials", "--endpoint-url", "--region"},
            "--postgresql": {"--connection"},
        }[kind]
        extra = [
            option
            for option, value in (
                ("--format", self.file_format),
                ("--serve", self.serve),
                ("--credentials", self.credentials),
                ("--endpoint-url", self.endpoint_url),
                ("--region", self.region),
                ("--connection", self.connection),
            )
            if value is not None and option not in allowed
        ]
        if extra:
            raise StoreError(f"{', '.join(extra)} cannot be used with {kind}.")
        file_options = {
            "format": self.file_format.value if self.file_format else None,
            "serve": self.serve.value if self.serve else None,
        }
        document: dict[str, Any]
        if self.path is not None:
            document = {"kind": "local", "path": collections.local_path(self.path), **file_options}
        elif self.url is not None:
            document = {"kind": "http", "url": self.url, "credentials": self.credentials, **file_options}
        elif self.s3 is not None:
            bucket, _, key = self.s3.removeprefix("s3://").partition("/")
            if not self.s3.startswith("s3://") or not bucket or not key:
                raise StoreError(f"--s3 must be s3://BUCKET/KEY, not {self.s3!r}.")
            document = {
                "kind": "s3",
                "bucket": bucket,
                "key": key,
                "endpoint_url": self.endpoint_url,
                "region": self.region,
                "credentials": self.credentials,
                **file_options,
            }
        else:
            document = {"kind": "postgresql", "table": self.postgresql, "connection": self.connection}
        return {field: value for field, value in document.items() if value is not None}

    def access(self) -> collections.AnyAccess:
        document = self.document()
        try:
            return parse_access(document)
        except ValidationError as error:
            problems = [
                f"{_ACCESS_OPTIONS.get(problem.location, problem.location)}: {problem.message}"
                if problem.location
                else problem.message
                for problem in collections.validation_problems(error, document)
            ]
            raise StoreError(f"Invalid data location: {'; '.join(problems)}") from None
