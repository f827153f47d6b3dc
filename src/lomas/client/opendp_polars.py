"""OpenDP polars queries with OpenDP's Context API (`client.opendp.polars`).

>>> dp.enable_features("contrib")
>>> context = client.opendp.polars.context(privacy_loss=dp.loss_of(epsilon=1.0), split_evenly_over=2)
>>> query = context.query().group_by("species").agg(pl.len().dp.noise())
>>> client.opendp.polars.cost(query)           # what the server would charge
>>> client.opendp.polars.query(query).df       # the released polars DataFrame

The context is built over the dataset's dummy data, so queries are written against the real schema.
Only the query's polars plan (as JSON), its share of the privacy loss and the polars and OpenDP versions
travel to the server, which rebuilds the privacy unit, domain and margins from its own metadata and
computes the cost itself. `query.release()` would run on the dummy data in this process, not on the server.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import opendp.prelude as dp
import polars as pl
from opendp.extras.polars import LazyFrameQuery, Margin

from lomas.client.http import LomasHttp
from lomas.client.results import Answer, dummy_frame
from lomas.core.errors import DPLibrary
from lomas.core.frames import frame_from_tight
from lomas.core.metadata import CATEGORICAL_COLUMNS, Metadata
from lomas.core.requests import (
    DUMMY_NB_ROWS,
    DUMMY_SEED,
    DummyDatasetRequest,
    LomasRequest,
    PolarsPrivacyLoss,
)
from lomas.core.responses import CostResponse, DummyDatasetResponse, OpenDPPolarsResult

_LOSS_PARAMETERS = {"MaxDivergence": "epsilon", "ZeroConcentratedDivergence": "rho"}


@dataclass(frozen=True)
class PolarsQueryResult(Answer):
    """A released polars DataFrame and what it cost."""

    df: pl.DataFrame


class OpenDPPolarsClient:
    def __init__(self, http: LomasHttp) -> None:
        self._http = http

    def context(
        self,
        privacy_loss: tuple[Any, Any],
        split_evenly_over: int | None = None,
        split_by_weights: Sequence[float] | None = None,
        nb_rows: int = DUMMY_NB_ROWS,
        seed: int = DUMMY_SEED,
    ) -> dp.Context:
        """An OpenDP Context over the dummy dataset, with the privacy unit and margins of its metadata.

        `privacy_loss` is `dp.loss_of(...)`, shared by the context's queries as OpenDP shares it
        (`split_evenly_over` or `split_by_weights`). Needs `dp.enable_features("contrib")`.
        """
        metadata = Metadata.model_validate(
            self._http.post("get_dataset_metadata", LomasRequest(dataset_name=self._http.dataset_name))
        )
        body = DummyDatasetRequest(
            dataset_name=self._http.dataset_name, dummy_nb_rows=nb_rows, dummy_seed=seed
        )
        dummy = dummy_frame(DummyDatasetResponse.model_validate(self._http.post("get_dummy_dataset", body)))
        return dp.Context.compositor(
            data=pl.from_pandas(dummy, nan_to_null=True).lazy(),
            privacy_unit=dp.unit_of(contributions=metadata.max_ids),
            privacy_loss=privacy_loss,
            split_evenly_over=split_evenly_over,
            split_by_weights=split_by_weights,
            margins=_preview_margins(metadata),
        )

    def cost(self, query: LazyFrameQuery, fixed_delta: float | None = None) -> CostResponse:
        """What the server would charge for the query, without running it.

        `fixed_delta` is the delta at which a zero-concentrated (rho) loss is charged as (epsilon, delta).
        """
        return self._http.cost(DPLibrary.OPENDP, _request_fields(query, fixed_delta))

    def query(
        self,
        query: LazyFrameQuery,
        fixed_delta: float | None = None,
        dummy: bool = False,
        nb_rows: int = DUMMY_NB_ROWS,
        seed: int = DUMMY_SEED,
    ) -> PolarsQueryResult:
        """Run the query on the private data (charged), or with `dummy=True` on dummy data (free)."""
        response = self._http.query(DPLibrary.OPENDP, _request_fields(query, fixed_delta), dummy, nb_rows, seed)
        if not isinstance(response.result, OpenDPPolarsResult):
            raise TypeError(f"Expected a polars result, got {response.result.res_type}.")
        frame = pl.from_pandas(frame_from_tight(response.result.df))
        return PolarsQueryResult(response.epsilon, response.delta, response.requested_by, frame)


def _preview_margins(metadata: Metadata) -> list[Margin]:
    """Margins for previews in this process (`query.summarize()`); the server sets its own for each query."""
    margins = [Margin(by=[], max_length=metadata.rows)]
    for name, column in metadata.columns.items():
        if isinstance(column, CATEGORICAL_COLUMNS):
            invariant: Literal["keys"] | None = None if metadata.censor_dims else "keys"
            margins.append(
                Margin(
                    by=[name], max_length=metadata.rows, max_groups=column.cardinality, invariant=invariant
                )
            )
    return margins


def _request_fields(query: LazyFrameQuery, fixed_delta: float | None) -> dict[str, Any]:
    """The request of a Context API query: its plan as JSON, its privacy loss and the library versions."""
    if not isinstance(query, LazyFrameQuery):
        raise TypeError(
            "Build the query with `context.query()` on a context from `client.opendp.polars.context`."
        )
    plan: pl.LazyFrame = object.__getattribute__(query, "polars_plan")
    inner = object.__getattribute__(query, "_query")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'json' serialization format of LazyFrame is deprecated")
        opendp_json = plan.serialize(format="json")
    return {
        "opendp_json": opendp_json,
        "fixed_delta": fixed_delta,
        "pipeline_type": "polars",
        "privacy_loss": _privacy_loss(str(inner._output_measure.type), inner._d_out),
        "polars_version": pl.__version__,
        "opendp_version": importlib.metadata.version("opendp"),
    }


def _privacy_loss(measure: str, d_out: Any) -> PolarsPrivacyLoss:
    """`dp.loss_of(...)` arguments back from a query's output measure and privacy loss."""
    if d_out is None:
        raise ValueError(
            "The query has no privacy loss: build the context with split_evenly_over or split_by_weights, "
            "or give it one with context.query(epsilon=...)."
        )
    approximate = measure.startswith("Approximate<")
    base = measure.removeprefix("Approximate<").removesuffix(">")
    if base not in _LOSS_PARAMETERS:
        raise ValueError(
            f"Unsupported privacy measure {measure}; use dp.loss_of(epsilon=...) or dp.loss_of(rho=...)."
        )
    value, delta = d_out if approximate else (d_out, None)
    return PolarsPrivacyLoss(**{_LOSS_PARAMETERS[base]: value}, delta=delta)
