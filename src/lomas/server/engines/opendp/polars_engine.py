"""The engine of polars queries built with OpenDP's Context API (`pipeline_type="polars"`).

The client sends the polars plan as JSON (`LazyFrame.serialize(format="json")`), the privacy loss the
query may spend and its polars and OpenDP versions. The plan is checked (`polars_checker`) before polars
ever reads it.

OpenDP then makes the plan private against the server's input domain (the metadata's columns and
types), margins (row count and public categories from the metadata) and privacy unit (`max_ids` rows per
person), and prices it with its privacy map; the client's loss only calibrates the noise. The measurement
ignores the plan's source and runs on the frame it is given: the private data, handed to the OpenDP
library once per loaded dataset. Finding the noise scale takes about a thousand OpenDP calls (~0.5 s),
so measurements are cached per plan, loss and dataset version; noise is drawn afresh by every run.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import ClassVar

import opendp.prelude as dp
import polars as pl
from opendp._convert import py_to_c
from opendp._lib import AnyObjectPtr
from opendp.context import Query
from opendp.extras.polars import LazyFrameQuery
from opendp.mod import Measurement, OpenDPException

from lomas.core.errors import DPLibrary, ExternalLibraryError, InvalidQueryError
from lomas.core.frames import frame_to_tight
from lomas.core.metadata import Metadata
from lomas.core.requests import OpenDPCostRequest, PolarsPrivacyLoss
from lomas.core.responses import OpenDPPolarsResult
from lomas.server.config import OpenDPSettings
from lomas.server.data.base import DataSource
from lomas.server.data.dtypes import polars_schema
from lomas.server.engines.base import Cost, Engine
from lomas.server.engines.opendp.cache import PlanCache
from lomas.server.engines.opendp.library import library_message
from lomas.server.engines.opendp.polars_checker import OPENDP_VERSION, POLARS_VERSION, check_plan
from lomas.server.engines.opendp.polars_domain import input_domain
from lomas.server.engines.opendp.privacy import privacy_cost
from lomas.server.store.service import DatasetRecord


@dataclass(frozen=True)
class PolarsPlan:
    """A checked polars query made private by OpenDP: the measurement, its cost, the schema it reads."""

    measurement: Measurement
    cost: Cost
    schema: pl.Schema


class OpenDPPolarsEngine(Engine[OpenDPCostRequest, PolarsPlan]):
    library: ClassVar[DPLibrary] = DPLibrary.OPENDP

    def __init__(self, settings: OpenDPSettings) -> None:
        self._max_plan_chars = settings.polars_max_plan_chars
        self._max_plan_nodes = settings.polars_max_plan_nodes
        self._plans: PlanCache[PolarsPlan] = PlanCache(settings.cache_size)

    def plan(self, request: OpenDPCostRequest, dataset: DatasetRecord) -> PolarsPlan:
        loss = _checked_request(request, self._max_plan_chars)
        digest = hashlib.sha256(request.opendp_json.encode()).hexdigest()
        key = (dataset.key, digest, loss.epsilon, loss.delta, loss.rho, request.fixed_delta)
        return self._plans.get(
            key, lambda: self._prepare(request.opendp_json, loss, request.fixed_delta, dataset.metadata)
        )

    def cost(self, plan: PolarsPlan) -> Cost:
        return plan.cost

    def run(self, plan: PolarsPlan, data: DataSource) -> OpenDPPolarsResult:
        released = plan.measurement(_library_input(data, plan)).collect()
        return OpenDPPolarsResult(df=frame_to_tight(released.to_pandas()))

    def _prepare(
        self, opendp_json: str, loss: PolarsPrivacyLoss, fixed_delta: float | None, metadata: Metadata
    ) -> PolarsPlan:
        plan_json, group_keys = check_plan(opendp_json, metadata, self._max_plan_nodes)
        try:
            lazyframe = pl.LazyFrame.deserialize(io.StringIO(plan_json), format="json")
        # polars raises several kinds of exceptions, and panics, which are no Exception
        except (Exception, pl.exceptions.PanicException) as error:
            raise InvalidQueryError(
                f"opendp_json is not a valid polars {POLARS_VERSION} plan: {error}"
            ) from None
        measure, d_out = dp.loss_of(epsilon=loss.epsilon, delta=loss.delta, rho=loss.rho)
        query = Query(
            chain=(input_domain(metadata, group_keys), dp.symmetric_distance()),
            output_measure=measure,
            d_in=metadata.max_ids,
            d_out=d_out,
        )
        try:
            measurement = LazyFrameQuery(lazyframe, query).resolve()
        except OpenDPException as error:
            raise ExternalLibraryError(
                DPLibrary.OPENDP, f"OpenDP refused the query: {library_message(error)}"
            ) from None
        except (ValueError, TypeError) as error:  # OpenDP's Python layer (the scale search); public inputs
            raise ExternalLibraryError(DPLibrary.OPENDP, f"OpenDP refused the query: {error}") from None
        cost = privacy_cost(measurement, metadata.max_ids, fixed_delta)
        return PolarsPlan(measurement, cost, polars_schema(metadata))


def _checked_request(request: OpenDPCostRequest, max_plan_chars: int) -> PolarsPrivacyLoss:
    if request.polars_version != POLARS_VERSION or request.opendp_version != OPENDP_VERSION:
        raise InvalidQueryError(
            f"The query was built with polars {request.polars_version} and opendp {request.opendp_version}; "
            f"this server runs polars {POLARS_VERSION} and opendp {OPENDP_VERSION}. Install those versions."
        )
    if request.privacy_loss is None:
        raise InvalidQueryError("privacy_loss is required for polars queries (epsilon or rho, and delta).")
    if len(request.opendp_json) > max_plan_chars:
        raise InvalidQueryError(
            f"The polars plan is {len(request.opendp_json)} characters long; the limit is {max_plan_chars}."
        )
    if request.privacy_loss.rho is not None and request.fixed_delta is None:
        raise InvalidQueryError(
            "fixed_delta is required with rho: the cost is charged as (epsilon, fixed_delta)."
        )
    return request.privacy_loss


def _library_input(data: DataSource, plan: PolarsPlan) -> AnyObjectPtr:
    """The data as the library's own object, made once per dataset.

    Handing a polars frame to OpenDP serializes all of it into the library (0.5 s for 1M rows). The library's copy is only read by the measurements, so every run, in any
    thread, may reuse it. The data must have the types OpenDP was promised: OpenDP does not check them.
    """
    lazy = data.lazy()
    if lazy.collect_schema() != plan.schema:
        raise RuntimeError("The data does not have the polars schema of its metadata.")

    def build() -> tuple[AnyObjectPtr, int]:
        return py_to_c(lazy, c_type=AnyObjectPtr, type_name="LazyFrame"), int(lazy.collect().estimated_size())

    return data.memo("opendp_lazyframe", build)
