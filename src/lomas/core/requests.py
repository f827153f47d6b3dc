"""Request bodies of the Lomas 0.4 protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lomas.core.errors import DPLibrary

DUMMY_NB_ROWS = 100
DUMMY_SEED = 42


class LomasRequest(BaseModel):
    """Every request names the dataset it is about."""

    model_config = ConfigDict(extra="ignore")

    dataset_name: Annotated[str, Field(min_length=1, max_length=256)]


class DummyDatasetRequest(LomasRequest):
    dummy_nb_rows: Annotated[int, Field(gt=0)] = DUMMY_NB_ROWS
    dummy_seed: Annotated[int, Field(ge=0, lt=2**63)] = DUMMY_SEED


class DummyMixin(BaseModel):
    """Fields a dummy query adds to the real one."""

    dummy_nb_rows: Annotated[int, Field(gt=0)] = DUMMY_NB_ROWS
    dummy_seed: Annotated[int, Field(ge=0, lt=2**63)] = DUMMY_SEED


class SmartnoiseSQLCostRequest(LomasRequest):
    """A SmartNoise-SQL query to price; the table is named `df`."""

    query_str: Annotated[str, Field(min_length=1)]
    epsilon: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    delta: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
    mechanisms: dict[str, str] = Field(default_factory=dict)


class SmartnoiseSQLQueryRequest(SmartnoiseSQLCostRequest):
    postprocess: bool = True


class SmartnoiseSQLDummyQueryRequest(SmartnoiseSQLQueryRequest, DummyMixin):
    pass


# -- OpenDP -------------------------------------------------------------------------------------------
class PolarsPrivacyLoss(BaseModel):
    """The privacy loss one polars query may spend, as `opendp.prelude.loss_of` takes it.

    `epsilon` (pure DP) or `rho` (zero-concentrated DP), plus `delta` for their approximate forms.
    """

    model_config = ConfigDict(extra="forbid")

    epsilon: Annotated[float | None, Field(gt=0, allow_inf_nan=False)] = None
    delta: Annotated[float | None, Field(ge=0, lt=1, allow_inf_nan=False)] = None
    rho: Annotated[float | None, Field(gt=0, allow_inf_nan=False)] = None

    @model_validator(mode="after")
    def _epsilon_or_rho(self) -> PolarsPrivacyLoss:
        if (self.epsilon is None) == (self.rho is None):
            raise ValueError("Give exactly one of epsilon and rho.")
        return self


class OpenDPCostRequest(LomasRequest):
    """An OpenDP measurement to price: the opendp_logger JSON of lomas-client 0.4.1.

    With `pipeline_type="polars"`, `opendp_json` is instead a polars plan built with OpenDP's Context API
    (`LazyFrame.serialize(format="json")`), and the polars-only fields below are required.
    """

    opendp_json: Annotated[str, Field(min_length=1)]
    fixed_delta: Annotated[float | None, Field(ge=0, lt=1, allow_inf_nan=False)] = None
    pipeline_type: Literal["legacy", "polars"] = "legacy"
    privacy_loss: PolarsPrivacyLoss | None = None
    polars_version: Annotated[str | None, Field(max_length=64)] = None
    opendp_version: Annotated[str | None, Field(max_length=64)] = None


class OpenDPQueryRequest(OpenDPCostRequest):
    pass


class OpenDPDummyQueryRequest(OpenDPQueryRequest, DummyMixin):
    pass


# -- DiffPrivLib --------------------------------------------------------------------------------------
ImputerStrategy = Literal["drop", "mean", "median", "most_frequent"]


class DiffPrivLibCostRequest(LomasRequest):
    """A DiffPrivLib pipeline (diffprivlib_logger JSON) and the columns it is trained on.

    `target_columns` names one column, or is null for pipelines that learn without a target. The model is
    trained on the rows that the split by `test_size` and `test_train_split_seed` keeps for training.
    `imputer_strategy` says what becomes of missing values: "drop" drops the rows that have any; the
    others fill them with values taken from the public metadata (see the DiffPrivLib engine).
    """

    diffprivlib_json: Annotated[str, Field(min_length=1)]
    feature_columns: Annotated[list[str], Field(min_length=1)]
    target_columns: list[str] | None = None
    test_size: Annotated[float, Field(gt=0, lt=1)] = 0.2
    test_train_split_seed: Annotated[int, Field(ge=0, lt=2**32)] = 1
    imputer_strategy: ImputerStrategy = "drop"


class DiffPrivLibQueryRequest(DiffPrivLibCostRequest):
    pass


class DiffPrivLibDummyQueryRequest(DiffPrivLibQueryRequest, DummyMixin):
    pass


# -- SmartNoise-Synth ---------------------------------------------------------------------------------
SynthName = Literal["aim", "mwem", "mst", "pacsynth", "dpctgan", "patectgan", "pategan", "dpgan"]
SSYNTH_CONSTRAINTS_MODULE = "smartnoise-synth"  # the "module" of smartnoise_synth_logger JSON
SSYNTH_TRANSFORMER_PREFIX = "_ssynth_transformer:"  # how that JSON names a transformer class


class SmartnoiseSynthCostRequest(LomasRequest):
    """A synthesizer to train on `select_cols` (default: every column that is not a private identifier).

    `constraints` is smartnoise_synth_logger JSON (`{"module": "smartnoise-synth", "version": ...,
    "constraints": {column: "categorical" | {"type": "_ssynth_transformer:<class>", "params": {...}}}}`) or
    empty. `nullable=false` leaves out the rows that have a missing value in a selected column.
    """

    synth_name: SynthName
    epsilon: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    delta: Annotated[float | None, Field(ge=0, lt=1, allow_inf_nan=False)] = None
    select_cols: list[str] = Field(default_factory=list)
    synth_params: dict[str, Any] = Field(default_factory=dict)
    nullable: bool = True
    constraints: str = ""


class SmartnoiseSynthQueryRequest(SmartnoiseSynthCostRequest):
    """`return_model` asks for the trained synthesizer; otherwise `nb_samples` rows that meet `condition`."""

    return_model: bool = False
    condition: str = ""
    nb_samples: Annotated[int, Field(gt=0)] = 200


class SmartnoiseSynthDummyQueryRequest(SmartnoiseSynthQueryRequest, DummyMixin):
    pass


@dataclass(frozen=True)
class LibraryRequests:
    """The bodies of a library's three endpoints: `/{library}_query`, `/dummy_{library}_query` and
    `/estimate_{library}_cost`."""

    query: type[LomasRequest]
    dummy_query: type[LomasRequest]
    cost: type[LomasRequest]


LIBRARY_REQUESTS: dict[DPLibrary, LibraryRequests] = {
    DPLibrary.SMARTNOISE_SQL: LibraryRequests(
        SmartnoiseSQLQueryRequest, SmartnoiseSQLDummyQueryRequest, SmartnoiseSQLCostRequest
    ),
    DPLibrary.OPENDP: LibraryRequests(OpenDPQueryRequest, OpenDPDummyQueryRequest, OpenDPCostRequest),
    DPLibrary.DIFFPRIVLIB: LibraryRequests(
        DiffPrivLibQueryRequest, DiffPrivLibDummyQueryRequest, DiffPrivLibCostRequest
    ),
    DPLibrary.SMARTNOISE_SYNTH: LibraryRequests(
        SmartnoiseSynthQueryRequest, SmartnoiseSynthDummyQueryRequest, SmartnoiseSynthCostRequest
    ),
}
