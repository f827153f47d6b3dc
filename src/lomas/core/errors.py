"""Error bodies of the Lomas 0.4 protocol and the exceptions that carry them.

The server raises these; the client turns an error body back into the same exception.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter


class DPLibrary(StrEnum):
    """DP libraries a query can use (the `dp_librairy` of archived queries)."""

    SMARTNOISE_SQL = "smartnoise_sql"
    SMARTNOISE_SYNTH = "smartnoise_synth"
    OPENDP = "opendp"
    DIFFPRIVLIB = "diffprivlib"


class ErrorType(StrEnum):
    INVALID_QUERY = "InvalidQueryException"
    EXTERNAL_LIBRARY = "ExternalLibraryException"
    UNAUTHORIZED_ACCESS = "UnauthorizedAccessException"
    INTERNAL_SERVER = "InternalServerException"


INTERNAL_SERVER_ERROR = "Internal server error. Please contact the administrator of this service."


class InvalidQueryErrorModel(BaseModel):
    type: Literal[ErrorType.INVALID_QUERY] = ErrorType.INVALID_QUERY
    message: str


class ExternalLibraryErrorModel(BaseModel):
    type: Literal[ErrorType.EXTERNAL_LIBRARY] = ErrorType.EXTERNAL_LIBRARY
    library: DPLibrary
    message: str


class UnauthorizedAccessErrorModel(BaseModel):
    type: Literal[ErrorType.UNAUTHORIZED_ACCESS] = ErrorType.UNAUTHORIZED_ACCESS
    message: str


class InternalServerErrorModel(BaseModel):
    type: Literal[ErrorType.INTERNAL_SERVER] = ErrorType.INTERNAL_SERVER
    message: str = INTERNAL_SERVER_ERROR


ErrorModel = Annotated[
    Union[InvalidQueryErrorModel, ExternalLibraryErrorModel, UnauthorizedAccessErrorModel, InternalServerErrorModel],
    Field(discriminator="type"),
]
ERROR_ADAPTER: TypeAdapter[ErrorModel] = TypeAdapter(ErrorModel)


class LomasError(Exception):
    """Base of every error the server reports to a caller."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] | None = None  # HTTP headers of the error response

    def to_model(self) -> BaseModel:
        raise NotImplementedError


class InvalidQueryError(LomasError):
    """The request is wrong in a way the caller can fix (bad query, not enough budget...)."""

    status_code = 400

    def to_model(self) -> BaseModel:
        return InvalidQueryErrorModel(message=self.message)


class ExternalLibraryError(LomasError):
    """A DP library refused the query before any private data was read."""

    status_code = 422

    def __init__(self, library: DPLibrary, message: str) -> None:
        super().__init__(message)
        self.library = library

    def to_model(self) -> BaseModel:
        return ExternalLibraryErrorModel(library=self.library, message=self.message)


class UnauthorizedAccessError(LomasError):
    """The caller may not do this (unknown user, no grant on the dataset...)."""

    status_code = 403

    def to_model(self) -> BaseModel:
        return UnauthorizedAccessErrorModel(message=self.message)


class InternalServerError(LomasError):
    """Anything unforeseen; the message never carries details."""

    status_code = 500

    def __init__(self, message: str = INTERNAL_SERVER_ERROR) -> None:
        super().__init__(message)

    def to_model(self) -> BaseModel:
        return InternalServerErrorModel(message=self.message)


def error_from_body(body: object, status_code: int) -> LomasError:
    """Rebuild the exception the server raised from its JSON error body."""
    try:
        model = ERROR_ADAPTER.validate_python(body)
    except ValueError:
        return InternalServerError(f"Unexpected error response (HTTP {status_code}): {body!r}")
    match model:
        case InvalidQueryErrorModel():
            return InvalidQueryError(model.message)
        case ExternalLibraryErrorModel():
            return ExternalLibraryError(model.library, model.message)
        case UnauthorizedAccessErrorModel():
            return UnauthorizedAccessError(model.message)
        case _:
            return InternalServerError(model.message)
