"""The researcher's Python client for a Lomas server."""

from lomas.client.client import Client
from lomas.client.smartnoise_synth import SynthModelResult, serialise_constraints
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
    "SynthModelResult",
    "UnauthorizedAccessError",
    "serialise_constraints",
]
