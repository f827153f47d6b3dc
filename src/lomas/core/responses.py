"""Response bodies of the Lomas 0.4 protocol."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field

from lomas.core.errors import DPLibrary, ErrorModel


class InitialBudgetResponse(BaseModel):
    initial_epsilon: float
    initial_delta: float


class SpentBudgetResponse(BaseModel):
    total_spent_epsilon: float
    total_spent_delta: float


class RemainingBudgetResponse(BaseModel):
    remaining_epsilon: float
    remaining_delta: float


class CostResponse(BaseModel):
    epsilon: float
    delta: float


class DummyDatasetResponse(BaseModel):
    """A dummy frame as a pandas `to_dict(orient="tight")` dict, with the dtypes to restore it."""

    dtypes: dict[str, str]
    datetime_columns: list[str]
    dummy_df: dict[str, Any]


class SmartnoiseSQLResult(BaseModel):
    res_type: Literal[DPLibrary.SMARTNOISE_SQL] = DPLibrary.SMARTNOISE_SQL
    df: dict[str, Any]


class OpenDPResult(BaseModel):
    res_type: Literal[DPLibrary.OPENDP] = DPLibrary.OPENDP
    value: int | float | list[int | float]


class DiffPrivLibResult(BaseModel):
    """A fitted pipeline: `model` is the base64 pickle the 0.4 protocol sends (for lomas-client 0.4.1);
    `model_params` is the same pipeline as plain JSON, which our client uses so it never unpickles."""

    res_type: Literal[DPLibrary.DIFFPRIVLIB] = DPLibrary.DIFFPRIVLIB
    score: float
    model: str
    model_params: list[dict[str, Any]] | None = None


class SmartnoiseSynthModel(BaseModel):
    """A trained synthesizer as a base64 pickle (the 0.4 protocol)."""

    res_type: Literal[DPLibrary.SMARTNOISE_SYNTH] = DPLibrary.SMARTNOISE_SYNTH
    model: str


class SmartnoiseSynthSamples(BaseModel):
    """Synthetic rows as a pandas `to_dict(orient="tight")` dict."""

    res_type: Literal["sn_synth_samples"] = "sn_synth_samples"
    df_samples: dict[str, Any]


QueryResult = Annotated[
    Union[SmartnoiseSQLResult, OpenDPResult, DiffPrivLibResult, SmartnoiseSynthModel, SmartnoiseSynthSamples],
    Field(discriminator="res_type"),
]


class QueryResponse(CostResponse):
    requested_by: str
    result: QueryResult


class ArchivedQuery(BaseModel):
    """One entry of a user's history (`dp_librairy` is the 0.4 protocol's spelling)."""

    user_name: str
    dataset_name: str
    dp_librairy: DPLibrary
    client_input: dict[str, Any]
    response: dict[str, Any]
    timestamp: float


class PreviousQueriesResponse(BaseModel):
    previous_queries: list[ArchivedQuery]


class StateResponse(BaseModel):
    requested_by: str | None = None
    state: dict[str, Any]



class JobStatus(StrEnum):
    PENDING = "pending"  # accepted, waiting for a worker
    RUNNING = "running"
    COMPLETE = "complete"  # `result` holds the query response
    FAILED = "failed"  # `error` holds the error body, `status_code` its HTTP status


class JobResponse(BaseModel):
    """A query running in the background (`Prefer: respond-async`); poll `GET /status/{job_id}`."""

    job_id: str
    status: JobStatus
    library: DPLibrary
    dummy: bool
    created_at: datetime
    finished_at: datetime | None = None
    status_code: int | None = None
    result: QueryResponse | None = None
    error: ErrorModel | None = None
