"""The opendp_logger AST of the Lomas 0.4 wire format: `parse` checks it, `build` makes the measurement.

lomas-client 0.4.1 sends an OpenDP pipeline as `{"version": "0.10.0", "ast": {...}}`, the tree that
opendp_logger records while the pipeline is built: `constructor` nodes (`module`, `func`, `args`,
`kwargs`), `partial_chain` nodes (`lhs >> then_...`), `{"_type": "list", "_items": [...]}` for lists,
JSON arrays for tuples, strings for type names. Our own client sends the same format from OpenDP 0.14.

Nothing in a request is ever imported, looked up by name in a module or called as given. `parse` checks the
whole tree against the allow-lists (`logger_constructors`: constructors, their arguments, the kinds and
sizes of their values, type names) and returns a small plan of `Call`/`Then` nodes: it builds nothing.
`build` then calls the allow-listed constructors of the installed OpenDP (0.14) with the checked values.

A `chain` node (`lhs >> rhs` of two built objects) is read as `make_chain_tt` or `make_chain_mt`.

The two versions of the format (dialects) differ where OpenDP changed between 0.10 and 0.14; where a 0.10
constructor has an exact 0.14 equivalent the legacy table maps it, otherwise it is refused by name.
"""

from __future__ import annotations

import json
import re
from typing import Any

import opendp.prelude as dp
from opendp.mod import OpenDPException

from lomas.core.errors import DPLibrary, ExternalLibraryError, InvalidQueryError
from lomas.server.engines.opendp.library import library_message
from lomas.server.engines.opendp.logger_checks import items, node_of
from lomas.server.engines.opendp.logger_constructors import CONSTRUCTORS
from lomas.server.engines.opendp.logger_plan import (
    AstLimits,
    Call,
    Category,
    Constructor,
    Dialect,
    Node,
    Param,
    Then,
    Walk,
    describe,
    node_category,
    refuse,
)

MODULES = frozenset(
    {"transformations", "measurements", "combinators", "domains", "metrics", "measures", "prelude"}
)
_NODE_TYPES = ("constructor", "partial_chain", "chain")


# -- parsing -----------------------------------------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _load_json(text: str, limits: AstLimits) -> Any:
    if len(text) > limits.max_json_length:
        raise InvalidQueryError(
            f"opendp_json is {len(text)} characters long; the limit is {limits.max_json_length}."
        )
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidQueryError("opendp_json is nested too deeply.") from None
    except ValueError as error:
        # The first clause only: Python's advice on the digits of integers is not for our users.
        raise InvalidQueryError(f"opendp_json is not valid JSON: {str(error).split(';')[0]}") from None


def _check_shape(document: Any, limits: AstLimits) -> None:
    """Bound the nesting depth, the number of objects and arrays, and the length of lists and strings."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    containers = 0
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str) and len(value) > limits.max_string_length:
            raise InvalidQueryError(
                f"A string of opendp_json has {len(value)} characters; "
                f"the limit is {limits.max_string_length}."
            )
        if isinstance(value, (dict, list)):
            containers += 1
            if containers > limits.max_nodes:
                raise InvalidQueryError(
                    f"opendp_json has more than {limits.max_nodes} JSON objects and arrays."
                )
            if depth > limits.max_depth:
                raise InvalidQueryError(f"opendp_json is nested deeper than {limits.max_depth} levels.")
            if len(value) > limits.max_list_length:
                raise InvalidQueryError(
                    f"A list of opendp_json has {len(value)} items; the limit is {limits.max_list_length}."
                )
            children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


def _dialect(version: Any) -> Dialect:
    if isinstance(version, str):
        for dialect in Dialect:
            if re.fullmatch(rf"{re.escape(dialect.value)}\.\d+", version):
                return dialect
    accepted = ", ".join(f"{dialect.value}.x" for dialect in Dialect)
    raise InvalidQueryError(
        f"Unsupported OpenDP version {describe(version)} in opendp_json; use {accepted}."
    )


def parse(text: str, columns: tuple[str, ...], limits: AstLimits) -> Node:
    """Check a whole `{"version", "ast"}` document against the allow-lists; build nothing."""
    document = _load_json(text, limits)
    _check_shape(document, limits)
    if not isinstance(document, dict) or set(document) != {"version", "ast"}:
        raise InvalidQueryError(
            'opendp_json must be a JSON object with exactly the keys "version" and "ast".'
        )
    dialect = _dialect(document["version"])
    root = _parse_node(document["ast"], Walk(dialect, columns, limits, _parse_node), "ast")
    if node_category(root) is not Category.MEASUREMENT:
        raise InvalidQueryError(
            f"The pipeline is a {node_category(root)}; it must end with a measurement (a noise mechanism "
            "such as then_laplace or then_gaussian)."
        )
    return root


def _parse_node(value: Any, walk: Walk, path: str) -> Node:
    if not isinstance(value, dict) or value.get("_type") not in _NODE_TYPES:
        raise refuse(
            path,
            f"expected an OpenDP constructor (a node of type {list(_NODE_TYPES)}), got {describe(value)}.",
        )
    if value["_type"] == "constructor":
        return _parse_call(value, walk, path)
    _expect_keys(value, {"_type", "lhs", "rhs"}, path)
    lhs = node_of(Category.TRANSFORMATION)(value["lhs"], walk, f"{path}.lhs")
    if value["_type"] == "chain":  # `lhs >> rhs` of two built objects
        rhs = node_of(Category.TRANSFORMATION, Category.MEASUREMENT)(value["rhs"], walk, f"{path}.rhs")
        chain = "make_chain_tt" if node_category(rhs) is Category.TRANSFORMATION else "make_chain_mt"
        outer = "transformation1" if node_category(rhs) is Category.TRANSFORMATION else "measurement1"
        return Call(CONSTRUCTORS[walk.dialect][chain], {outer: rhs, "transformation0": lhs})
    return _parse_then(lhs, value["rhs"], walk, f"{path}.rhs")


def _expect_keys(value: dict[str, Any], allowed: set[str], path: str) -> None:
    unexpected = sorted(str(key) for key in set(value) - allowed)
    if unexpected:
        raise refuse(
            path, f"unexpected keys {unexpected}; a {value.get('_type')} node has {sorted(allowed)}."
        )


def _lookup(value: dict[str, Any], walk: Walk, path: str) -> tuple[str, Constructor | None]:
    _expect_keys(value, {"_type", "module", "func", "args", "kwargs"}, path)
    module, func = value.get("module"), value.get("func")
    if module not in MODULES:
        raise refuse(path, f"module {describe(module)} is not allowed; use one of {sorted(MODULES)}.")
    if not isinstance(func, str):
        raise refuse(path, f"func must be a constructor name, got {describe(func)}.")
    name = f"make_{func.removeprefix('then_')}" if func.startswith("then_") else func
    return func, CONSTRUCTORS[walk.dialect].get(name)


def _not_allowed(func: str, walk: Walk, path: str) -> InvalidQueryError:
    allowed = ", ".join(sorted(CONSTRUCTORS[walk.dialect]))
    return refuse(
        path, f"{func!r} is not an allowed OpenDP {walk.dialect.value} constructor. Allowed: {allowed}."
    )


def _parse_call(value: dict[str, Any], walk: Walk, path: str) -> Call:
    func, constructor = _lookup(value, walk, path)
    if func.startswith("then_"):
        raise refuse(path, f"{func} can only be the right-hand side of a chain (`... >> {func}(...)`).")
    if constructor is None:
        raise _not_allowed(func, walk, path)
    return Call(constructor, _arguments(constructor.params, value, walk, path))


def _parse_then(lhs: Node, value: Any, walk: Walk, path: str) -> Then:
    if not isinstance(value, dict) or value.get("_type") != "constructor":
        raise refuse(path, f"expected a then_... constructor, got {describe(value)}.")
    func, constructor = _lookup(value, walk, path)
    if not func.startswith("then_"):
        raise refuse(
            path, f"the right-hand side of a partial_chain is a then_... constructor, not {func!r}."
        )
    if constructor is None or not constructor.chainable:
        raise _not_allowed(func, walk, path)
    return Then(lhs, constructor, _arguments(constructor.params[2:], value, walk, path))


def _arguments(params: tuple[Param, ...], value: dict[str, Any], walk: Walk, path: str) -> dict[str, Any]:
    """Match `args` and `kwargs` to the parameters, check each value, and require the required ones."""
    args, kwargs = items(value.get("args", []), f"{path}.args"), value.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise refuse(f"{path}.kwargs", f"expected a JSON object, got {describe(kwargs)}.")
    func = value["func"]
    if len(args) > len(params):
        raise refuse(
            f"{path}.args", f"{func} takes at most {len(params)} positional arguments, got {len(args)}."
        )
    given = dict(zip((param.name for param in params), args, strict=False))
    for name, argument in kwargs.items():
        if name in given:
            raise refuse(f"{path}.kwargs", f"{func} got {name!r} twice.")
        given[name] = argument
    by_name = {param.name: param for param in params}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise refuse(
            f"{path}.kwargs", f"{func} has no argument {unknown[0]!r}; its arguments are {list(by_name)}."
        )
    missing = [param.name for param in params if param.required and param.name not in given]
    if missing:
        raise refuse(path, f"{func} needs the argument {missing[0]!r}.")
    return {name: by_name[name].check(argument, walk, f"{path}.{name}") for name, argument in given.items()}


# -- building ----------------------------------------------------------------------------------------------
def build(root: Node) -> dp.Measurement:
    """Call the allow-listed constructors; OpenDP's own refusals become an `ExternalLibraryError`."""
    try:
        measurement = _build(root)
    except OpenDPException as error:
        raise ExternalLibraryError(
            DPLibrary.OPENDP, f"OpenDP refused the pipeline: {library_message(error)}"
        ) from None
    except Exception as error:  # the Python layer's argument conversions; the arguments are public
        raise ExternalLibraryError(DPLibrary.OPENDP, f"OpenDP refused the pipeline: {error}") from None
    assert isinstance(measurement, dp.Measurement)  # the root was checked to be a measurement constructor
    return measurement


def _build(node: Node) -> Any:
    kwargs = {name: _build_value(value) for name, value in node.kwargs.items()}
    if isinstance(node, Call):
        return node.constructor.build(**kwargs)
    lhs = _build(node.lhs)
    step = node.constructor.build(lhs.output_domain, lhs.output_metric, **kwargs)
    chain = dp.c.make_chain_tt if isinstance(step, dp.Transformation) else dp.c.make_chain_mt
    return chain(step, lhs)


def _build_value(value: Any) -> Any:
    if isinstance(value, (Call, Then)):
        return _build(value)
    if isinstance(value, list):
        return [_build_value(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_build_value(item) for item in value)
    return value
