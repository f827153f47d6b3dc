"""SmartNoise-Synth engine (work in progress)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from lomas.core.errors import DPLibrary
from lomas.server.config import SmartnoiseSynthSettings
from lomas.server.data.frame import DataFrameSource
from lomas.server.engines.base import Cost, Engine
from lomas.server.store.service import DatasetRecord


class SmartnoiseSynthEngine(Engine[Any, Any]):
    library: ClassVar[DPLibrary] = DPLibrary.SMARTNOISE_SYNTH

    def __init__(self, settings: SmartnoiseSynthSettings) -> None:
        self.settings = settings

    def plan(self, request: Any, dataset: DatasetRecord) -> Any:
        raise NotImplementedError

    def cost(self, plan: Any) -> Cost:
        raise NotImplementedError

    def run(self, plan: Any, data: DataFrameSource) -> BaseModel:
        raise NotImplementedError
