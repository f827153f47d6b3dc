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


class OpenDPPolarsResult(BaseModel):
    """The DataFrame an OpenDP polars query released, as a pandas `to_dict(orient="tight")` dict."""

    res_type: Literal["opendp_polars"] = "opendp_polars"
    df: dict[str, Any]


class DiffPrivLibStep(BaseModel):
    """One fitted step of a pipeline as plain JSON, rebuilt by our client without unpickling anything.

    `type` names a class of `diffprivlib.models`; `params` are its constructor arguments (the accountant
    left out); `fitted` its other attributes. Values are JSON, except these tagged objects:
    `{"_ndarray": [flat values], "dtype": numpy dtype string, "shape": [...]}`,
    `{"_tuple": true, "_items": [...]}` (as in the request), `{"_tree": {...}}` (a scikit-learn tree:
    its shape and its node arrays by field) and `{"_estimator": {"type", "params", "fitted"}}` (a nested
    estimator, such as the trees of a random forest).
    """

    name: str
    type: str
    params: dict[str, Any]
    fitted: dict[str, Any]


class DiffPrivLibResult(BaseModel):
    """A pipeline fitted on the private data, and its score.

    `score` is the pipeline's own `score` (accuracy for classifiers, R² for regression, the negative
    inertia of KMeans, the average log-likelihood of PCA) computed on a dummy dataset generated from the
    public metadata, never on private data: it costs nothing and tells whether the pipeline runs, not how
    well it fits the private data (0.4 servers scored on a private test split, which is not DP).
    `model` is the base64 pickle of the fitted scikit-learn Pipeline that the 0.4 protocol sends (for
    lomas-client 0.4.1); `model_params` is the same pipeline as plain JSON, which our client uses so that
    it never unpickles. Fitted attributes that are not DP outputs (row counts, training labels, inertia,
    iteration counts) are left out of both.
    """

    res_type: Literal[DPLibrary.DIFFPRIVLIB] = DPLibrary.DIFFPRIVLIB
    score: float
    model: str
    model_params: list[DiffPrivLibStep] | None = None


class SmartnoiseSynthModel(BaseModel):
    """A trained synthesizer as a base64 pickle (the 0.4 protocol)."""

    res_type: Literal[DPLibrary.SMARTNOISE_SYNTH] = DPLibrary.SMARTNOISE_SYNTH
    model: str


class SmartnoiseSynthSamples(BaseModel):
    """Synthetic rows as a pandas `to_dict(orient="tight")` dict."""

    res_type: Literal["sn_synth_samples"] = "sn_synth_samples"
    df_samples: dict[str, Any]


QueryResult = Annotated[
    Union[
        SmartnoiseSQLResult,
        OpenDPResult,
        OpenDPPolarsResult,
        DiffPrivLibResult,
        SmartnoiseSynthModel,
        SmartnoiseSynthSamples,
    ],
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
