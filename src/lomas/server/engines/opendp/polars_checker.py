"""The check of a polars plan (`LazyFrame.serialize(format="json")`) before polars ever reads it.

The plan is read as plain JSON and checked against an allow-list, because a polars plan is not just data:
it carries pickled Python functions (`map_elements`, `map_batches`, `name.map`...) that polars unpickles,
running any code, as soon as the deserialized plan is resolved (`collect_schema`, `explain`, `collect`);
plugin nodes name a shared library for polars to load; scan nodes read files. Only the steps OpenDP can
make private are allowed; the one source must be the empty frame the Context API writes for the dataset's
schema; every plugin node is replaced by the server's own OpenDP plugin. Nothing the client sent picks a
file, a library or the data.
"""

from __future__ import annotations

import importlib.metadata
import json
import warnings
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import opendp.prelude as dp
import polars as pl

from lomas.core.errors import InvalidQueryError
from lomas.core.metadata import Metadata
from lomas.server.data.dtypes import polars_schema

POLARS_VERSION = pl.__version__
OPENDP_VERSION = importlib.metadata.version("opendp")

MAX_PLAN_DEPTH = 128  # polars itself refuses JSON plans nested deeper

# Client and server pin the same polars, so its unversioned JSON plan format is safe to use here.
warnings.filterwarnings("ignore", message="'json' serialization format of LazyFrame is deprecated")

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

# Tags that mark code, files, other sources or whole expressions. Never valid inside plain data (a data
# type given as `OfExpr` would carry an expression, and with it a pickled function); refused there.
_FORBIDDEN_TAGS = frozenset({
    "AnonymousFunction", "Cache", "DataFrameScan", "Eval", "ExtContext", "FfiPlugin", "HConcat", "IR",
    "Join", "MapFunction", "MergeSorted", "OfExpr", "Python", "PythonScan", "RenameAlias", "Scan",
    "Selector", "Sink", "SinkMultiple", "SubPlan", "Union",
})  # fmt: skip
# Polars writes binary values as arrays of bytes. Arrow IPC data (series and frames) starts with this
# marker; pickled Python objects (any function or object polars would unpickle) do not. Whatever the
# position, only Arrow data may be binary: the guard does not rely on knowing where polars puts objects.
_ARROW_IPC_MARKER = [255, 255, 255, 255]
_SHORTEST_BINARY = 8


@cache
def _opendp_plugins() -> dict[str, dict[str, Any]]:
    """The plugin node of each OpenDP expression (`dp.len()`, `.dp.sum(...)`...), as this server writes it.

    The client's plugin nodes are swapped for these, so the library polars loads is always OpenDP's.
    """
    # `.dp` is the namespace OpenDP registers on polars expressions at import: unknown to type checkers.
    column: Any = pl.col("c")
    length: Any = pl.len()
    expressions = [
        dp.len(), length.dp.noise(), column.dp.len(), column.dp.count(), column.dp.null_count(),
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


@cache
def _source_node(schema: tuple[tuple[str, pl.DataType], ...]) -> dict[str, Any]:
    """The JSON scan of an empty frame with this schema, as the Context API writes it for the dataset."""
    return json.loads(pl.LazyFrame(schema=dict(schema)).serialize(format="json"))[_SOURCE]


def check_plan(opendp_json: str, metadata: Metadata, max_nodes: int) -> tuple[str, set[tuple[str, ...]]]:
    """The plan as JSON polars may read, and the column sets it groups by.

    A plan nested deeper than polars reads, or with more than `max_nodes` JSON objects and arrays, is refused.
    """
    try:
        document = json.loads(opendp_json)
    except (ValueError, RecursionError):
        raise InvalidQueryError(
            "opendp_json is not a JSON polars plan (LazyFrame.serialize(format='json'))."
        ) from None
    depth, nodes = _size(document)
    if depth > MAX_PLAN_DEPTH or nodes > max_nodes:
        raise InvalidQueryError(
            f"The polars plan is {depth} levels deep with {nodes} JSON nodes; "
            f"the limits are {MAX_PLAN_DEPTH} levels and {max_nodes} nodes."
        )
    _refuse_non_arrow_binary(document)
    checker = _PlanChecker(_source_node(tuple(polars_schema(metadata).items())))
    checker.plan(document)
    if checker.sources != 1:
        raise InvalidQueryError("The polars plan has no data frame to query; start from the context's query.")
    return json.dumps(document), checker.group_keys


def _refuse_non_arrow_binary(document: Any) -> None:
    """Refuse any array of bytes that is not Arrow data: pickles are how Python code travels in a plan."""
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            if _is_binary(value) and value[: len(_ARROW_IPC_MARKER)] != _ARROW_IPC_MARKER:
                raise InvalidQueryError(
                    "The polars plan carries a Python function or object (as a pickle); "
                    "Python code from clients never runs on the server."
                )
            stack.extend(item for item in value if isinstance(item, (dict, list)))


def _is_binary(value: list[Any]) -> bool:
    return len(value) >= _SHORTEST_BINARY and all(
        isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 255 for item in value
    )


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
