"""Request bodies of the Lomas 0.4 protocol."""

from __future__ import annotations

from typing import Annotated

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
