"""The engine of opendp_logger pipelines (the wire format of Lomas 0.4).

Planning checks the pipeline against the allow-lists (`logger_ast.parse`), builds the OpenDP measurement
and prices it from its privacy map at d_in = the metadata's `max_ids`, all before any data is read. The
measurement is cached per pipeline, fixed_delta and metadata version: it is immutable and draws fresh
noise on every invocation. Running feeds it the dataset as CSV text without header, in the metadata's
column order, which is what its `make_split_dataframe` reads.
"""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import opendp.prelude as dp
import pandas as pd
from opendp._convert import py_to_c  # private: the library's own copy of an input, reused by every run
from opendp._lib import AnyObjectPtr

from lomas.core.errors import DPLibrary, InvalidQueryError
from lomas.core.requests import OpenDPCostRequest
from lomas.core.responses import OpenDPResult
from lomas.server.config import OpenDPSettings
from lomas.server.data.base import DataSource
from lomas.server.engines.base import Cost, Engine
from lomas.server.engines.opendp import logger_ast
from lomas.server.engines.opendp.cache import PlanCache
from lomas.server.engines.opendp.logger_plan import SEPARATOR, AstLimits
from lomas.server.engines.opendp.privacy import privacy_cost
from lomas.server.store.service import DatasetRecord

_SIZE_PER_ROW = 2  # largest `size` (resize, sized domains) per row of the dataset's metadata
_LARGE_DATASET_BYTES = 16 * 2**20  # about 100,000 rows of PENGUIN
_STRING_INPUT = dp.atom_domain(T=str)
_DATASET_METRIC = dp.symmetric_distance()


@dataclass(frozen=True)
class LegacyPlan:
    """A built measurement, its price, and the columns of the CSV text it reads. Shared, never mutated."""

    measurement: dp.Measurement
    cost: Cost
    columns: tuple[str, ...]


class OpenDPLoggerEngine(Engine[OpenDPCostRequest, LegacyPlan]):
    library: ClassVar[DPLibrary] = DPLibrary.OPENDP

    def __init__(self, settings: OpenDPSettings) -> None:
        self._limits = AstLimits(
            max_json_length=settings.max_json_length,
            max_nodes=settings.max_nodes,
            max_depth=settings.max_depth,
            max_list_length=settings.max_list_length,
            max_string_length=settings.max_string_length,
            max_size=settings.max_size,
        )
        self._plans: PlanCache[LegacyPlan] = PlanCache(settings.cache_size)
        # Writing the CSV text of 1M rows takes seconds, and handing it to the library copies it: the
        # library's copy is kept as long as the dataset is, and every run reads it.
        # A run parses the whole CSV into OpenDP's own columns (about 0.9 GB per million rows) and is CPU
        # bound. Runs on large datasets go to a few threads of their own: more at once would add memory,
        # not throughput, and each thread that ever ran one keeps its malloc arena's high-water mark (8
        # request threads running 1M-row pipelines held 7.6 GB; 2 threads, 2.9 GB). On small datasets
        # the hand-off would cost more than the run.
        self._large_runs = ThreadPoolExecutor(settings.max_concurrent_runs, thread_name_prefix="opendp-run")

    def plan(self, request: OpenDPCostRequest, dataset: DatasetRecord) -> LegacyPlan:
        digest = hashlib.sha256(request.opendp_json.encode()).digest()  # the JSON may be long: keep it small
        key = (dataset.key, digest, request.fixed_delta)
        return self._plans.get(key, lambda: self._prepare(request, dataset))

    def cost(self, plan: LegacyPlan) -> Cost:
        return plan.cost

    def run(self, plan: LegacyPlan, data: DataSource) -> OpenDPResult:
        if tuple(data.frame().columns) != plan.columns:
            raise RuntimeError("the loaded dataset's columns differ from its metadata")
        csv = data.memo("opendp_csv", lambda: _library_csv(data))
        if data.nbytes < _LARGE_DATASET_BYTES:
            released = plan.measurement(csv)
        else:
            released = self._large_runs.submit(plan.measurement, csv).result()
        return OpenDPResult(value=json_value(released))

    def _prepare(self, request: OpenDPCostRequest, dataset: DatasetRecord) -> LegacyPlan:
        columns = tuple(dataset.metadata.columns)
        # A pipeline never needs to materialise many more rows than the dataset has (a resize to its
        # size): the ceiling keeps a free dummy query from allocating gigabytes.
        limits = replace(self._limits, max_size=min(self._limits.max_size, _SIZE_PER_ROW * dataset.metadata.rows))
        measurement = logger_ast.build(logger_ast.parse(request.opendp_json, columns, limits))
        if measurement.input_domain != _STRING_INPUT or measurement.input_metric != _DATASET_METRIC:
            raise InvalidQueryError(
                f"The pipeline reads {measurement.input_domain} under {measurement.input_metric}; it must "
                f"read the dataset: start it with make_split_dataframe(separator={SEPARATOR!r}, "
                f"col_names={list(columns)})."
            )
        cost = privacy_cost(measurement, dataset.metadata.max_ids, request.fixed_delta)
        return LegacyPlan(measurement, cost, columns)


def _library_csv(data: DataSource) -> tuple[AnyObjectPtr, int]:
    """The dataset's CSV text as the library's own object, which measurements read without copying.

    Passing a Python string instead converts it on every run, and OpenDP's wrapper leaves that C copy in
    a reference cycle that only a full garbage collection frees: the server grew by the size of the
    dataset on every query.
    """
    text = dataset_csv(data.frame())
    return py_to_c(text, c_type=AnyObjectPtr, type_name="String"), len(text)


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
