"""The researcher's Python client for a Lomas server."""

from lomas.client.client import Client
from lomas.core.errors import (
    ExternalLibraryError,
    InternalServerError,
    InvalidQueryError,
    LomasError,
    UnauthorizedAccessError,
)

__all__ = [
    "Client",
    "ExternalLibraryError",
    "InternalServerError",
    "InvalidQueryError",
    "LomasError",
    "UnauthorizedAccessError",
]
