"""OpenDP engine for polars queries built with OpenDP's Context API (`pipeline_type="polars"`).

The client sends the polars plan as JSON (`LazyFrame.serialize(format="json")`), the privacy loss the
query may spend and its polars and OpenDP versions. The plan is read as plain JSON and checked against
an allow-list before polars ever sees it, because a polars plan is not just data: it carries pickled
Python functions (`map_elements`, `map_batches`, `name.map`...) that polars unpickles, running any code,
as soon as the deserialized plan is resolved (`collect_schema`, `explain`, `collect`); plugin nodes name
a shared library for polars to load; scan nodes read files. Only the steps OpenDP can make private are
allowed; the one source must be the empty frame the Context API writes for the dataset's schema; every
plugin node is replaced by the server's own OpenDP plugin. Nothing the client sent picks a file, a
library or the data.

OpenDP then makes the plan private against the server's input domain (the metadata's columns and
types), margins (row count and public categories from the metadata) and privacy unit (`max_ids` rows per
person), and prices it with its privacy map; the client's loss only calibrates the noise. The measurement
ignores the plan's source and runs on the frame it is given: the private data, handed to the OpenDP
library once per loaded dataset. Finding the noise scale takes about a thousand OpenDP calls (~0.5 s),
so measurements are cached per plan, loss and dataset version; noise is drawn afresh by every run.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import math
import threading
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar

import opendp.prelude as dp
import polars as pl
from opendp._convert import py_to_c
from opendp._lib import AnyObjectPtr
from opendp.context import Query
from opendp.extras.polars import LazyFrameQuery, Margin
from opendp.mod import Measurement, OpenDPException

from lomas.core.errors import DPLibrary, ExternalLibraryError, InvalidQueryError
from lomas.core.frames import frame_to_tight
from lomas.core.metadata import CATEGORICAL_COLUMNS, Metadata
from lomas.core.requests import OpenDPCostRequest, PolarsPrivacyLoss
from lomas.core.responses import OpenDPPolarsResult
from lomas.server.config import OpenDPSettings
from lomas.server.data.dtypes import DATETIME_DTYPE, pandas_dtypes
from lomas.server.data.frame import DataFrameSource
from lomas.server.engines.base import Cost, Engine
from lomas.server.engines.opendp_ast import library_message
from lomas.server.store.service import DatasetRecord

POLARS_VERSION = pl.__version__
OPENDP_VERSION = importlib.metadata.version("opendp")

MAX_PLAN_CHARS = 1_000_000
MAX_PLAN_NODES = 5_000  # JSON objects and arrays
MAX_PLAN_DEPTH = 128  # polars itself refuses JSON plans nested deeper

# Client and server pin the same polars, so its unversioned JSON plan format is safe to use here.
warnings.filterwarnings("ignore", message="'json' serialization format of LazyFrame is deprecated")

# The pandas dtypes the server holds data in (server/data/dtypes.py) and the polars dtypes they convert to.
_POLARS_DTYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "Int32": pl.Int32(),
    "Int64": pl.Int64(),
    "float32": pl.Float32(),
    "float64": pl.Float64(),
    "boolean": pl.Boolean(),
    DATETIME_DTYPE: pl.Datetime("ns"),
}
_OPENDP_TYPES: dict[type[pl.DataType], str] = {
    pl.String: "String", pl.Int32: "i32", pl.Int64: "i64", pl.Float32: "f32", pl.Float64: "f64",
    pl.Boolean: "bool",
}  # fmt: skip

# -- the allow-list ------------------------------------------------------------------------------------
# The allow-list is what OpenDP 0.14 can make private, no more: anything else OpenDP would refuse anyway.
# Plan steps, and the role of each of their fields. Roles: "plan" (a step), "expr"/"exprs" (one or a
# list of expressions), "data" (plain values: options, names, numbers).
_PLAN_STEPS: dict[str, dict[str, str]] = {
    "Select": {"input": "plan", "expr": "exprs", "options": "data"},
    "HStack": {"input": "plan", "exprs": "exprs", "options": "data"},
    "Filter": {"input": "plan", "predicate": "expr"},
    "GroupBy": {
        "input": "plan",
        "keys": "exprs",
        "aggs": "exprs",
        "maintain_order": "data",
        "options": "data",
    },
}
_SOURCE = "DataFrameScan"

# Expressions with fields; `Len`, `Column`, `Literal`, `Alias` and `Agg` have their own forms.
_EXPRESSIONS: dict[str, dict[str, str]] = {
    "Function": {"input": "exprs", "function": "function"},
    "BinaryExpr": {"left": "expr", "op": "data", "right": "expr"},
    "Ternary": {"predicate": "expr", "truthy": "expr", "falsy": "expr"},
    "Cast": {"expr": "expr", "dtype": "data", "options": "data"},
    "Filter": {"input": "expr", "by": "expr"},
}
_DATA_EXPRESSIONS = frozenset({"Column", "Literal"})
_AGGREGATIONS = frozenset({"Sum", "Count", "NUnique"})  # to be noised with `.dp.noise()`

# Polars functions (`FunctionExpr` variants); none of them runs client code.
_FUNCTIONS = frozenset({
    "Boolean", "Clip", "Cut", "DropNans", "DropNulls", "FillNull", "NullCount", "Replace", "ReplaceStrict",
    "StringExpr", "TemporalExpr", "ToPhysical",
})  # fmt: skip
_PLUGIN = "FfiPlugin"

# Tags that mark code, files or other sources. Never valid inside plain data; refused there as well.
_FORBIDDEN_TAGS = frozenset({
    "AnonymousFunction", "Cache", "DataFrameScan", "Eval", "ExtContext", "FfiPlugin", "HConcat", "IR",
    "Join", "MapFunction", "MergeSorted", "Python", "PythonScan", "RenameAlias", "Scan", "Sink",
    "SinkMultiple", "SubPlan", "Union",
})  # fmt: skip


@cache
def _opendp_plugins() -> dict[str, dict[str, Any]]:
    """The plugin node of each OpenDP expression (`dp.len()`, `.dp.sum(...)`...), as this server writes it.

    The client's plugin nodes are swapped for these, so the library polars loads is always OpenDP's.
    """
    column = pl.col("c")
    expressions = [
        dp.len(), pl.len().dp.noise(), column.dp.len(), column.dp.count(), column.dp.null_count(),
        column.dp.n_unique(), column.dp.sum((0, 1)), column.dp.mean((0, 1)),
        column.dp.quantile(0.5, [0, 1]), column.dp.median([0, 1]),
    ]  # fmt: skip
    plugins: dict[str, dict[str, Any]] = {}
    for expression in expressions:
        plan = json.loads(pl.LazyFrame(schema={"c": pl.Int64}).select(expression).serialize(format="json"))
        plugin = plan["Select"]["expr"][0]["Function"]["function"][_PLUGIN]
        plugins[plugin["symbol"]] = plugin
    return plugins


@dataclass
class _PlanChecker:
    """Walks a JSON plan, refusing anything off the allow-list; swaps in the server's plugins in place.

    `source` is the scan node of the server's empty frame of the dataset: the one source a plan may have.
    """

    source: dict[str, Any]
    group_keys: set[tuple[str, ...]] = field(default_factory=set)
    sources: int = 0

    def plan(self, node: Any) -> None:
        kind, body = _tagged(node, "plan step")
        if kind == _SOURCE:
            self._source(body)
            return
        if (
            kind == "MapFunction"
            and isinstance(body, dict)
            and "OpaquePython" in (body.get("function") or {})
        ):
            raise InvalidQueryError(_refused_expression("Python"))  # LazyFrame.map_batches
        if kind not in _PLAN_STEPS:
            raise InvalidQueryError(_refused_step(kind))
        self._fields(kind, body, _PLAN_STEPS[kind])
        if kind == "GroupBy":
            self._group_by(body)

    def expr(self, node: Any) -> None:
        if node == "Len":
            return
        kind, body = _tagged(node, "expression")
        if kind in _DATA_EXPRESSIONS:
            _check_data(body)
        elif kind == "Alias":
            if not (isinstance(body, list) and len(body) == 2 and isinstance(body[1], str)):
                raise InvalidQueryError("Malformed Alias expression in the polars plan.")
            self.expr(body[0])
        elif kind == "Agg":
            self._aggregation(body)
        elif kind in _EXPRESSIONS:
            self._fields(kind, body, _EXPRESSIONS[kind])
        else:
            raise InvalidQueryError(_refused_expression(kind))

    def _fields(self, kind: str, body: Any, roles: dict[str, str]) -> None:
        if not isinstance(body, dict) or not set(body) <= set(roles):
            raise InvalidQueryError(
                f"Unexpected fields in the polars {kind} node; build the plan with polars {POLARS_VERSION}."
            )
        for name, value in body.items():
            match roles[name]:
                case "plan":
                    self.plan(value)
                case "expr":
                    self.expr(value)
                case "exprs":
                    self._exprs(kind, value)
                case "function":
                    self._function(body, value)
                case _:
                    _check_data(value)

    def _exprs(self, kind: str, values: Any) -> None:
        if not isinstance(values, list):
            raise InvalidQueryError(f"Malformed {kind} node in the polars plan.")
        for value in values:
            self.expr(value)

    def _aggregation(self, body: Any) -> None:
        kind, payload = _tagged(body, "aggregation")
        if kind not in _AGGREGATIONS:
            raise InvalidQueryError(
                f"The polars aggregation {kind} is not supported; use OpenDP's (dp.len(), .dp.sum(), "
                ".dp.mean(), .dp.quantile()...) or sum, count and n_unique followed by .dp.noise()."
            )
        if kind == "Count":
            if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[1], bool)):
                raise InvalidQueryError("Malformed Count aggregation in the polars plan.")
            self.expr(payload[0])
        else:
            self.expr(payload)

    def _function(self, body: dict[str, Any], function: Any) -> None:
        name, payload = (function, None) if isinstance(function, str) else _tagged(function, "function")
        if name == _PLUGIN:
            body["function"] = {_PLUGIN: _server_plugin(payload)}
        elif name in _FUNCTIONS:
            _check_data(payload)
        else:
            raise InvalidQueryError(f"The polars function {name} is not supported in OpenDP queries.")

    def _source(self, body: Any) -> None:
        self.sources += 1
        if not isinstance(body, dict) or body.get("schema") != self.source["schema"]:
            raise InvalidQueryError(_schema_mismatch(body, self.source["schema"]))
        if body != self.source:
            raise InvalidQueryError(
                "The plan's data frame holds rows of its own; "
                "start from the context's empty frame (context.query())."
            )

    def _group_by(self, body: dict[str, Any]) -> None:
        options = body.get("options") or {}
        if (
            not isinstance(options, dict)
            or options.get("dynamic") is not None
            or options.get("rolling") is not None
        ):
            raise InvalidQueryError("group_by_dynamic and rolling are not supported; use group_by.")
        keys = body.get("keys", [])
        if keys and all(isinstance(key, dict) and isinstance(key.get("Column"), str) for key in keys):
            self.group_keys.add(tuple(sorted(key["Column"] for key in keys)))


def _tagged(node: Any, what: str) -> tuple[str, Any]:
    """The variant name and body of a polars enum in JSON (`{"Name": body}`)."""
    if isinstance(node, dict) and len(node) == 1:
        [(kind, body)] = node.items()
        return kind, body
    raise InvalidQueryError(f"Malformed {what} in the polars plan; build it with polars {POLARS_VERSION}.")


def _check_data(value: Any) -> None:
    """Plain values only: option dicts, names, numbers, literal bytes. Nothing that is a plan or code."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _FORBIDDEN_TAGS:
                raise InvalidQueryError(_refused_expression(key))
            _check_data(item)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                _check_data(item)


def _server_plugin(plugin: Any) -> dict[str, Any]:
    plugins = _opendp_plugins()
    symbol = plugin.get("symbol") if isinstance(plugin, dict) else None
    if not isinstance(symbol, str) or symbol not in plugins:
        raise InvalidQueryError(
            f"Only OpenDP's own polars plugins are allowed ({', '.join(sorted(plugins))}); "
            "other plugins and Python functions cannot run on the server."
        )
    expected = plugins[symbol]
    if plugin.get("kwargs") != expected["kwargs"] or plugin.get("flags") != expected["flags"]:
        raise InvalidQueryError(
            f"The OpenDP plugin {symbol} was altered; build the query with opendp {OPENDP_VERSION}."
        )
    return expected


def _refused_step(kind: str) -> str:
    if kind in ("Scan", "PythonScan"):
        return "The polars plan reads files or other sources; query the dataset only, from context.query()."
    if kind in ("Join", "Union", "HConcat", "MergeSorted", "ExtContext"):
        return f"The polars plan combines the dataset with other data ({kind}); query the dataset only."
    if kind in ("Sort", "Slice"):
        return "OpenDP releases rows in random order: sort or slice the released DataFrame instead."
    if kind == "MapFunction":
        return "LazyFrame functions (rename, explode, unpivot, with_row_index...) are not supported."
    return f"The polars step {kind} is not supported; use select, with_columns, filter and group_by/agg."


def _refused_expression(kind: str) -> str:
    if kind in ("AnonymousFunction", "Python", "RenameAlias"):
        return (
            "The polars plan contains a Python function (map_elements, map_batches, name.map...); "
            "Python code from clients never runs on the server."
        )
    if kind in _FORBIDDEN_TAGS:
        return _refused_step(kind)
    return f"The polars expression {kind} is not supported in OpenDP queries."


def _schema_mismatch(body: Any, expected: dict[str, Any]) -> str:
    sent = body.get("schema") if isinstance(body, dict) else None
    sent_fields = sent.get("fields") if isinstance(sent, dict) else None
    sent_fields = sent_fields if isinstance(sent_fields, dict) else {}
    wanted = expected["fields"]
    differing = sorted(
        set(sent_fields) ^ set(wanted)
        | {name for name in wanted if sent_fields.get(name, wanted[name]) != wanted[name]}
    )
    return (
        "The plan's data frame does not have the dataset's columns and types (differing: "
        f"{', '.join(differing[:10]) or 'column order'}); start from a context of this dataset."
    )


# -- the server's side of the query: domain, margins, privacy unit -------------------------------------
def polars_schema(metadata: Metadata) -> pl.Schema:
    """The polars schema of the dataset, as `DataFrameSource.polars()` holds it."""
    return pl.Schema({name: _POLARS_DTYPES[dtype] for name, dtype in pandas_dtypes(metadata).items()})


def _element_domain(dtype: pl.DataType) -> Any:
    """Any value of the column's type, or null: OpenDP does not check the data against its domain, so the
    domain claims only what holds by construction (types from the metadata, NaN turned to null by
    `DataFrameSource.polars()`), not the metadata's `nullable`."""
    if dtype == pl.Datetime:
        domain = dp.datetime_domain("ns")
    elif dtype.is_float():
        domain = dp.atom_domain(T=_OPENDP_TYPES[type(dtype)], nan=False)
    else:
        domain = dp.atom_domain(T=_OPENDP_TYPES[type(dtype)])
    return dp.option_domain(domain)


def _margins(metadata: Metadata, group_keys: set[tuple[str, ...]]) -> list[Margin]:
    """What the metadata makes public: at most `rows` rows (per group: `max_partition_length`), and the
    keys of each grouping of the plan whose columns are all categorical in a dataset that declares its
    categories public (`censor_dims: false`). OpenDP releases other groups only above a noisy threshold.

    The number of groups is bounded by `rows`, not by the categories: data may hold nulls or other values.
    """
    margins = [Margin(by=[], max_length=metadata.rows)]
    for keys in sorted(group_keys):
        columns = [metadata.columns[key] for key in keys if key in metadata.columns]
        if len(columns) != len(keys):
            continue  # OpenDP reports the unknown column
        public = not metadata.censor_dims and all(
            isinstance(column, CATEGORICAL_COLUMNS) for column in columns
        )
        lengths = [column.max_partition_length for column in columns if column.max_partition_length]
        margins.append(
            Margin(
                by=list(keys),
                max_length=min(lengths, default=metadata.rows),
                max_groups=metadata.rows,
                invariant="keys" if public else None,
            )
        )
    return margins


def _input_domain(metadata: Metadata, group_keys: set[tuple[str, ...]]) -> Any:
    domain = dp.lazyframe_domain(
        [dp.series_domain(name, _element_domain(dtype)) for name, dtype in polars_schema(metadata).items()]
    )
    for margin in _margins(metadata, group_keys):
        domain = dp.with_margin(domain, margin)
    return domain


@cache
def _source_node(schema: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The JSON scan of an empty frame with this schema, as the Context API writes it for the dataset."""
    frame = pl.LazyFrame(schema={name: _POLARS_DTYPES[dtype] for name, dtype in schema})
    return json.loads(frame.serialize(format="json"))[_SOURCE]


# -- the engine ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolarsPlan:
    """A checked polars query made private by OpenDP: the measurement, its cost, the schema it reads."""

    measurement: Measurement
    cost: Cost
    schema: pl.Schema


class OpenDPPolarsEngine(Engine[OpenDPCostRequest, PolarsPlan]):
    library: ClassVar[DPLibrary] = DPLibrary.OPENDP

    def __init__(self, settings: OpenDPSettings) -> None:
        self._cache: OrderedDict[tuple[Any, ...], PolarsPlan] = OrderedDict()
        self._cache_size = settings.cache_size
        self._lock = threading.Lock()
        self._inputs = _OpenDPInputs()

    def plan(self, request: OpenDPCostRequest, dataset: DatasetRecord) -> PolarsPlan:
        loss = _checked_request(request)
        digest = hashlib.sha256(request.opendp_json.encode()).hexdigest()
        key = (dataset.name, dataset.version, digest, loss.epsilon, loss.delta, loss.rho, request.fixed_delta)
        with self._lock:
            plan = self._cache.get(key)
            if plan is not None:
                self._cache.move_to_end(key)
                return plan
        plan = _prepare(request.opendp_json, loss, request.fixed_delta, dataset.metadata)
        with self._lock:
            self._cache[key] = plan
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return plan

    def cost(self, plan: PolarsPlan) -> Cost:
        return plan.cost

    def run(self, plan: PolarsPlan, data: DataFrameSource) -> OpenDPPolarsResult:
        _check_frame(data.polars(), plan)
        released = plan.measurement(self._inputs.get(data)).collect()
        return OpenDPPolarsResult(df=frame_to_tight(released.to_pandas()))


class _OpenDPInputs:
    """Each dataset's frame as the OpenDP library holds it, kept as long as the dataset is.

    Handing a polars frame to OpenDP serializes all of it into the library (0.5 s for 1M rows). The
    library's copy is only read by the measurements, so every run, in any thread, may reuse it.
    """

    def __init__(self) -> None:
        self._inputs: weakref.WeakKeyDictionary[DataFrameSource, AnyObjectPtr] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, data: DataFrameSource) -> AnyObjectPtr:
        with self._lock:
            handle = self._inputs.get(data)
        if handle is None:
            handle = py_to_c(data.polars().lazy(), c_type=AnyObjectPtr, type_name="LazyFrame")
            with self._lock:
                self._inputs[data] = handle
        return handle


def _checked_request(request: OpenDPCostRequest) -> PolarsPrivacyLoss:
    if request.polars_version != POLARS_VERSION or request.opendp_version != OPENDP_VERSION:
        raise InvalidQueryError(
            f"The query was built with polars {request.polars_version} and opendp {request.opendp_version}; "
            f"this server runs polars {POLARS_VERSION} and opendp {OPENDP_VERSION}. Install those versions."
        )
    if request.privacy_loss is None:
        raise InvalidQueryError("privacy_loss is required for polars queries (epsilon or rho, and delta).")
    if len(request.opendp_json) > MAX_PLAN_CHARS:
        raise InvalidQueryError(
            f"The polars plan is {len(request.opendp_json)} characters long; the limit is {MAX_PLAN_CHARS}."
        )
    if request.privacy_loss.rho is not None and request.fixed_delta is None:
        raise InvalidQueryError(
            "fixed_delta is required with rho: the cost is charged as (epsilon, fixed_delta)."
        )
    return request.privacy_loss


def _checked_plan(opendp_json: str, metadata: Metadata) -> tuple[str, set[tuple[str, ...]]]:
    """The plan as JSON polars may read, and the column sets it groups by."""
    try:
        document = json.loads(opendp_json)
    except (ValueError, RecursionError):
        raise InvalidQueryError(
            "opendp_json is not a JSON polars plan (LazyFrame.serialize(format='json'))."
        ) from None
    depth, nodes = _size(document)
    if depth > MAX_PLAN_DEPTH or nodes > MAX_PLAN_NODES:
        raise InvalidQueryError(
            f"The polars plan is {depth} levels deep with {nodes} JSON nodes; "
            f"the limits are {MAX_PLAN_DEPTH} levels and {MAX_PLAN_NODES} nodes."
        )
    schema = tuple((name, dtype) for name, dtype in pandas_dtypes(metadata).items())
    checker = _PlanChecker(_source_node(schema))
    checker.plan(document)
    if checker.sources != 1:
        raise InvalidQueryError("The polars plan has no data frame to query; start from the context's query.")
    return json.dumps(document), checker.group_keys


def _size(document: Any) -> tuple[int, int]:
    """Nesting depth and number of objects and arrays, without recursion."""
    depth = nodes = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        nodes += 1
        depth = max(depth, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return depth, nodes


def _prepare(
    opendp_json: str, loss: PolarsPrivacyLoss, fixed_delta: float | None, metadata: Metadata
) -> PolarsPlan:
    plan_json, group_keys = _checked_plan(opendp_json, metadata)
    try:
        lazyframe = pl.LazyFrame.deserialize(io.StringIO(plan_json), format="json")
    except (Exception, pl.exceptions.PanicException) as error:  # polars has several; a panic is no Exception
        raise InvalidQueryError(f"opendp_json is not a valid polars {POLARS_VERSION} plan: {error}") from None
    measure, d_out = dp.loss_of(epsilon=loss.epsilon, delta=loss.delta, rho=loss.rho)
    query = Query(
        chain=(_input_domain(metadata, group_keys), dp.symmetric_distance()),
        output_measure=measure,
        d_in=metadata.max_ids,
        d_out=d_out,
    )
    try:
        measurement = LazyFrameQuery(lazyframe, query).resolve()
        cost = _cost(measurement, metadata.max_ids, fixed_delta)
    except OpenDPException as error:
        raise ExternalLibraryError(
            DPLibrary.OPENDP, f"OpenDP refused the query: {library_message(error)}"
        ) from None
    except (
        ValueError,
        TypeError,
    ) as error:  # OpenDP's Python layer (the scale search); its inputs are public
        raise ExternalLibraryError(DPLibrary.OPENDP, f"OpenDP refused the query: {error}") from None
    if not math.isfinite(cost.epsilon):
        raise InvalidQueryError(
            f"At fixed_delta={fixed_delta} the query's epsilon is infinite; give a larger one."
        )
    return PolarsPlan(measurement, cost, polars_schema(metadata))


def _cost(measurement: Measurement, d_in: int, fixed_delta: float | None) -> Cost:
    """(epsilon, delta) spent; zero-concentrated losses are converted at `fixed_delta`."""
    if "ZeroConcentratedDivergence" in str(measurement.output_measure.type):
        assert fixed_delta is not None
        measurement = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(measurement), fixed_delta)
    spent = measurement.map(d_in)
    epsilon, delta = spent if isinstance(spent, tuple) else (spent, 0.0)
    return Cost(float(epsilon), float(delta))


def _check_frame(frame: pl.DataFrame, plan: PolarsPlan) -> None:
    """The data must have the types OpenDP was promised: OpenDP does not check them itself."""
    if frame.schema != plan.schema:
        raise RuntimeError("The data does not have the polars schema of its metadata.")
