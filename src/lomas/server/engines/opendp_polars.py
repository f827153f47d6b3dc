"""OpenDP engine for polars Context API queries (work in progress)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from lomas.core.errors import DPLibrary
from lomas.server.config import OpenDPSettings
from lomas.server.data.frame import DataFrameSource
from lomas.server.engines.base import Cost, Engine
from lomas.server.store.service import DatasetRecord


class PolarsPlan:
    """A checked polars query, ready to run."""


class OpenDPPolarsEngine(Engine[Any, PolarsPlan]):
    library: ClassVar[DPLibrary] = DPLibrary.OPENDP

    def __init__(self, settings: OpenDPSettings) -> None:
        self.settings = settings

    def plan(self, request: Any, dataset: DatasetRecord) -> PolarsPlan:
        raise NotImplementedError

    def cost(self, plan: PolarsPlan) -> Cost:
        raise NotImplementedError

    def run(self, plan: PolarsPlan, data: DataFrameSource) -> BaseModel:
        raise NotImplementedError
