"""`OpenDPEngine`: the one engine of the OpenDP library, which sends each request to the engine of its format.

A request whose `pipeline_type` is "polars" holds a polars plan (`polars_engine`); any other holds an
opendp_logger pipeline (`logger_engine`). OpenDP's library features are switched once, when the engine is
made, from the server settings only.
"""

from __future__ import annotations

from typing import ClassVar

from lomas.core.errors import DPLibrary
from lomas.core.requests import OpenDPCostRequest
from lomas.core.responses import QueryResult
from lomas.server.config import OpenDPSettings
from lomas.server.data.base import DataSource
from lomas.server.engines.base import Cost, Engine
from lomas.server.engines.opendp.library import switch_features
from lomas.server.engines.opendp.logger_engine import LegacyPlan, OpenDPLoggerEngine
from lomas.server.engines.opendp.polars_engine import OpenDPPolarsEngine, PolarsPlan
from lomas.server.store.service import DatasetRecord


class OpenDPEngine(Engine[OpenDPCostRequest, LegacyPlan | PolarsPlan]):
    library: ClassVar[DPLibrary] = DPLibrary.OPENDP

    def __init__(self, settings: OpenDPSettings) -> None:
        switch_features(settings)
        self._logger = OpenDPLoggerEngine(settings)
        self._polars = OpenDPPolarsEngine(settings)

    def plan(self, request: OpenDPCostRequest, dataset: DatasetRecord) -> LegacyPlan | PolarsPlan:
        if request.pipeline_type == "polars":
            return self._polars.plan(request, dataset)
        return self._logger.plan(request, dataset)

    def cost(self, plan: LegacyPlan | PolarsPlan) -> Cost:
        if isinstance(plan, PolarsPlan):
            return self._polars.cost(plan)
        return self._logger.cost(plan)

    def run(self, plan: LegacyPlan | PolarsPlan, data: DataSource) -> QueryResult:
        if isinstance(plan, PolarsPlan):
            return self._polars.run(plan, data)
        return self._logger.run(plan, data)
