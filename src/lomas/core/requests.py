"""Request bodies of the Lomas 0.4 protocol."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
class OpenDPCostRequest(LomasRequest):
    """An OpenDP measurement to price: the opendp_logger JSON of lomas-client 0.4.1."""

    opendp_json: Annotated[str, Field(min_length=1)]
    fixed_delta: Annotated[float | None, Field(ge=0, lt=1, allow_inf_nan=False)] = None
    pipeline_type: Literal["legacy", "polars"] = "legacy"


class OpenDPQueryRequest(OpenDPCostRequest):
    pass


class OpenDPDummyQueryRequest(OpenDPQueryRequest, DummyMixin):
    pass


# -- DiffPrivLib --------------------------------------------------------------------------------------
ImputerStrategy = Literal["drop", "mean", "median", "most_frequent"]


class DiffPrivLibCostRequest(LomasRequest):
    """A DiffPrivLib pipeline (diffprivlib_logger JSON) and the columns it is trained on."""

    diffprivlib_json: Annotated[str, Field(min_length=1)]
    feature_columns: list[str]
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


class SmartnoiseSynthCostRequest(LomasRequest):
    """A synthesizer to train; `constraints` is smartnoise_synth_logger JSON (or empty)."""

    synth_name: SynthName
    epsilon: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    delta: Annotated[float | None, Field(ge=0, lt=1, allow_inf_nan=False)] = None
    select_cols: list[str] = Field(default_factory=list)
    synth_params: dict[str, Any] = Field(default_factory=dict)
    nullable: bool = True
    constraints: str = ""


class SmartnoiseSynthQueryRequest(SmartnoiseSynthCostRequest):
    return_model: bool = False
    condition: str = ""
    nb_samples: Annotated[int, Field(gt=0)] = 200


class SmartnoiseSynthDummyQueryRequest(SmartnoiseSynthQueryRequest, DummyMixin):
    pass
