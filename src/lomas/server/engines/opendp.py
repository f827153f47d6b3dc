"""OpenDP engine: pipelines in the opendp_logger format of Lomas 0.4 (polars queries go to opendp_polars).

Planning checks the pipeline against the allow-lists of `opendp_ast`, builds the OpenDP measurement and
prices it from its privacy map at d_in = the metadata's `max_ids`, all before any data is read. The
measurement is cached per pipeline, fixed_delta and metadata version: it is immutable and draws fresh
noise on every invocation. Running feeds it the dataset as CSV text without header, in the metadata's
column order, which is what its `make_split_dataframe` reads.

OpenDP's library features are switched once, when the engine is made, from the server settings only.
"""

from __future__ import annotations

import hashlib
import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import opendp.prelude as dp
import pandas as pd
from opendp.mod import OpenDPException, disable_features, enable_features
from pydantic import BaseModel

from lomas.core.errors import DPLibrary, ExternalLibraryError, InvalidQueryError
from lomas.core.requests import OpenDPCostRequest
from lomas.core.responses import OpenDPResult
from lomas.server.config import OpenDPSettings
from lomas.server.data.frame import DataFrameSource
from lomas.server.engines import opendp_ast
from lomas.server.engines.base import Cost, Engine
from lomas.server.engines.opendp_polars import OpenDPPolarsEngine, PolarsPlan
from lomas.server.store.service import DatasetRecord

_STRING_INPUT = dp.atom_domain(T=str)
_DATASET_METRIC = dp.symmetric_distance()


@dataclass(frozen=True)
class LegacyPlan:
    """A built measurement, its price, and the columns of the CSV text it reads. Shared, never mutated."""

    measurement: dp.Measurement
    cost: Cost
    columns: tuple[str, ...]


def switch_features(settings: OpenDPSettings) -> None:
    """Set OpenDP's process-wide features from the settings (and only from them)."""
    features = {
        "contrib": settings.contrib,
        "floating-point": settings.floating_point,
        "honest-but-curious": settings.honest_but_curious,
    }
    enable_features(*(name for name, on in features.items() if on))
    disable_features(*(name for name, on in features.items() if not on))


class OpenDPEngine(Engine[OpenDPCostRequest, LegacyPlan | PolarsPlan]):
    library: ClassVar[DPLibrary] = DPLibrary.OPENDP

    def __init__(self, settings: OpenDPSettings) -> None:
        switch_features(settings)
        self._polars = OpenDPPolarsEngine(settings)
        self._limits = opendp_ast.AstLimits(
            max_json_length=settings.max_json_length,
            max_nodes=settings.max_nodes,
            max_depth=settings.max_depth,
            max_list_length=settings.max_list_length,
            max_string_length=settings.max_string_length,
            max_size=settings.max_size,
        )
        self._cache: OrderedDict[tuple[Any, ...], LegacyPlan] = OrderedDict()
        self._cache_size = settings.cache_size
        self._lock = threading.Lock()
        self._csv = _CsvTexts()

    def plan(self, request: OpenDPCostRequest, dataset: DatasetRecord) -> LegacyPlan | PolarsPlan:
        if request.pipeline_type == "polars":
            return self._polars.plan(request, dataset)
        digest = hashlib.sha256(request.opendp_json.encode()).digest()  # the JSON may be long: keep it small
        key = (dataset.name, dataset.version, digest, request.fixed_delta)
        with self._lock:
            plan = self._cache.get(key)
            if plan is not None:
                self._cache.move_to_end(key)
        if plan is None:
            plan = self._prepare(request, dataset)
            with self._lock:
                self._cache[key] = plan
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return plan

    def cost(self, plan: LegacyPlan | PolarsPlan) -> Cost:
        if isinstance(plan, PolarsPlan):
            return self._polars.cost(plan)
        return plan.cost

    def run(self, plan: LegacyPlan | PolarsPlan, data: DataFrameSource) -> BaseModel:
        if isinstance(plan, PolarsPlan):
            return self._polars.run(plan, data)
        if tuple(data.frame.columns) != plan.columns:
            raise RuntimeError("the loaded dataset's columns differ from its metadata")
        return OpenDPResult(value=json_value(plan.measurement(self._csv.text(data))))

    def _prepare(self, request: OpenDPCostRequest, dataset: DatasetRecord) -> LegacyPlan:
        columns = tuple(dataset.metadata.columns)
        measurement = opendp_ast.build(opendp_ast.parse(request.opendp_json, columns, self._limits))
        if measurement.input_domain != _STRING_INPUT or measurement.input_metric != _DATASET_METRIC:
            raise InvalidQueryError(
                f"The pipeline reads {measurement.input_domain} under {measurement.input_metric}; it must "
                f"read the dataset: start it with make_split_dataframe(separator={opendp_ast.SEPARATOR!r}, "
                f"col_names={list(columns)})."
            )
        cost = privacy_cost(measurement, dataset.metadata.max_ids, request.fixed_delta)
        return LegacyPlan(measurement, cost, columns)


def privacy_cost(measurement: dp.Measurement, max_ids: int, fixed_delta: float | None) -> Cost:
    """(ε, δ) of the measurement for neighbours that differ by `max_ids` rows.

    Pure DP costs (ε, 0); a fixed (ε, δ) measurement costs what its map says; zero-concentrated DP and
    privacy profiles are read at δ = `fixed_delta`.
    """
    measure = measurement.output_measure
    try:
        if measure == dp.max_divergence():
            return _finite_cost(float(measurement.map(max_ids)), 0.0)
        if measure == dp.approximate(dp.max_divergence()):
            return _finite_cost(*measurement.map(max_ids))
        if measure not in (dp.zero_concentrated_divergence(), dp.smoothed_max_divergence()):
            raise InvalidQueryError(f"Pipelines whose privacy is measured in {measure} are not supported.")
        if fixed_delta is None:
            raise InvalidQueryError(
                f"This pipeline's privacy is measured in {measure}: give fixed_delta, the δ at which its ε "
                "is reported and charged."
            )
        if measure == dp.zero_concentrated_divergence():
            measurement = dp.c.make_zCDP_to_approxDP(measurement)
        epsilon, delta = dp.c.make_fix_delta(measurement, fixed_delta).map(max_ids)
    except OpenDPException as error:
        raise ExternalLibraryError(
            DPLibrary.OPENDP, f"OpenDP cannot price the pipeline: {opendp_ast.library_message(error)}"
        ) from None
    if math.isinf(epsilon):
        raise InvalidQueryError(f"At fixed_delta={fixed_delta} ε is infinite; give a larger fixed_delta.")
    return _finite_cost(epsilon, delta)


def _finite_cost(epsilon: float, delta: float) -> Cost:
    if math.isnan(epsilon) or math.isnan(delta) or epsilon < 0 or delta < 0:
        raise InvalidQueryError(f"OpenDP priced the pipeline at ε={epsilon}, δ={delta}, which is not a cost.")
    if math.isinf(epsilon):
        raise InvalidQueryError("The pipeline's ε is infinite; give it more noise (a larger scale).")
    return Cost(float(epsilon), float(delta))


def json_value(value: Any) -> int | float | list[int | float]:
    """The measurement's output as the 0.4 wire format carries it: a number or a list of numbers."""
    if isinstance(value, (list, tuple)):
        return [_json_number(item) for item in value]
    return _json_number(value)


def _json_number(value: Any) -> int | float:
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"OpenDP returned a {type(value).__name__}, not a number.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("The noisy result overflowed to infinity; use a smaller noise scale.")
    return value


class _CsvTexts:
    """The CSV text of each loaded dataset, kept as long as the dataset is (1M rows take seconds to write)."""

    def __init__(self) -> None:
        self._texts: weakref.WeakKeyDictionary[DataFrameSource, str] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def text(self, data: DataFrameSource) -> str:
        with self._lock:
            text = self._texts.get(data)
        if text is None:
            text = dataset_csv(data.frame)
            with self._lock:
                self._texts[data] = text
        return text


def dataset_csv(frame: pd.DataFrame) -> str:
    """The frame as `make_split_dataframe` reads it: one line per row, no header, `,` between fields.

    Line breaks and separators inside text values become spaces: a line break would split one person's
    row in two (so one person would count twice) and a separator would shift the row's later fields.
    Booleans are written `true`/`false`, the only spellings OpenDP's casts parse; missing values are empty.
    """
    columns: dict[str, pd.Series] = {}
    for name, column in frame.items():
        if pd.api.types.is_bool_dtype(column):
            column = column.astype("string").str.lower()
        elif pd.api.types.is_string_dtype(column) or pd.api.types.is_object_dtype(column):
            column = column.astype("string").str.replace(r"[\r\n,]", " ", regex=True)
        columns[str(name)] = column
    return pd.DataFrame(columns).to_csv(header=False, index=False, lineterminator="\n")
