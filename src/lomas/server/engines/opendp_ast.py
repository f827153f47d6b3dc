"""The opendp_logger AST of the Lomas 0.4 wire format, interpreted through allow-lists.

lomas-client 0.4.1 sends an OpenDP pipeline as `{"version": "0.10.0", "ast": {...}}`, the tree that
opendp_logger records while the pipeline is built: `constructor` nodes (`module`, `func`, `args`,
`kwargs`), `partial_chain` nodes (`lhs >> then_...`), `{"_type": "list", "_items": [...]}` for lists,
JSON arrays for tuples, strings for type names. Our own client sends the same format from OpenDP 0.14.

Nothing in a request is ever imported, looked up by name in a module or called as given. `parse` checks the
whole tree against the allow-lists below (constructors, their arguments, the kinds and sizes of their
values, type names) and returns a small plan of `Call`/`Then` nodes: it builds nothing. `build` then calls
the allow-listed constructors of the installed OpenDP (0.14) with the checked values.

A `chain` node (`lhs >> rhs` of two built objects) is read as `make_chain_tt` or `make_chain_mt`.

The two versions of the format (dialects) differ where OpenDP changed between 0.10 and 0.14; where a 0.10
constructor has an exact 0.14 equivalent the legacy table maps it (see `_LEGACY_ONLY`), otherwise it is
refused by name.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import opendp.prelude as dp
from opendp.mod import OpenDPException

from lomas.core.errors import DPLibrary, ExternalLibraryError, InvalidQueryError

SEPARATOR = ","  # the server feeds the dataset as CSV text with this separator, without header
MODULES = frozenset(
    {"transformations", "measurements", "combinators", "domains", "metrics", "measures", "prelude"}
)
_NODE_TYPES = ("constructor", "partial_chain", "chain")


class Dialect(StrEnum):
    """The OpenDP version a pipeline was recorded with, which fixes constructor names and signatures."""

    LEGACY = "0.10"  # lomas-client 0.4.1 (opendp 0.10 + opendp_logger)
    CURRENT = "0.14"  # our client


class Category(StrEnum):
    DOMAIN = "domain"
    METRIC = "metric"
    MEASURE = "measure"
    TRANSFORMATION = "transformation"
    MEASUREMENT = "measurement"


@dataclass(frozen=True)
class AstLimits:
    """Ceilings on the size of one pipeline (see `OpenDPSettings`)."""

    max_json_length: int
    max_nodes: int
    max_depth: int
    max_list_length: int
    max_string_length: int
    max_size: int


# -- the plan that `parse` returns and `build` executes ------------------------------------------------
@dataclass(frozen=True)
class Call:
    """A call of an allow-listed constructor with checked arguments."""

    constructor: Constructor
    kwargs: Mapping[str, Any]


@dataclass(frozen=True)
class Then:
    """`lhs >> then_<name>(...)`: the constructor applied to the output domain and metric of `lhs`."""

    lhs: Call | Then
    constructor: Constructor
    kwargs: Mapping[str, Any]


Node = Call | Then


def _category(node: Node) -> Category:
    return node.constructor.category


def _name(node: Node) -> str:
    """The constructor's name as the request wrote it."""
    name = node.constructor.name
    return f"then_{name.removeprefix('make_')}" if isinstance(node, Then) else name


# -- argument checks -------------------------------------------------------------------------------------
class _Walk:
    """What the checks need to know besides the value: the dialect, the dataset's columns, the limits."""

    def __init__(self, dialect: Dialect, columns: tuple[str, ...], limits: AstLimits) -> None:
        self.dialect = dialect
        self.columns = columns
        self.limits = limits


Check = Callable[[Any, _Walk, str], Any]


@dataclass(frozen=True)
class Param:
    name: str
    check: Check
    required: bool = False


@dataclass(frozen=True)
class Constructor:
    """An allow-listed constructor: its wire name, what it returns, its parameters and how it is built."""

    name: str
    category: Category
    params: tuple[Param, ...]
    build: Callable[..., Any]

    @property
    def chainable(self) -> bool:
        """Whether `then_<name>` exists: the first two parameters are the input domain and metric."""
        return [param.name for param in self.params[:2]] == ["input_domain", "input_metric"]


def _refuse(path: str, message: str) -> InvalidQueryError:
    return InvalidQueryError(f"Invalid OpenDP pipeline at {path}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite_number(value: Any, walk: _Walk, path: str) -> int | float:
    if not _is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
        raise _refuse(path, f"expected a finite number, got {_describe(value)}.")
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise _refuse(path, "the integer does not fit in 64 bits.")
    return value


def _non_negative_float(value: Any, walk: _Walk, path: str) -> float:
    number = _finite_number(value, walk, path)
    if number < 0:
        raise _refuse(path, "expected a number >= 0.")
    return float(number)


def _probability(value: Any, walk: _Walk, path: str) -> float:
    number = _finite_number(value, walk, path)
    if not 0 <= number < 1:
        raise _refuse(path, "expected a number in [0, 1).")
    return float(number)


def _int_in(lower: int, upper: int) -> Check:
    def check(value: Any, walk: _Walk, path: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not lower <= value <= upper:
            raise _refuse(path, f"expected an integer between {lower} and {upper}, got {_describe(value)}.")
        return value

    return check


def _size(value: Any, walk: _Walk, path: str) -> int:
    return _int_in(0, walk.limits.max_size)(value, walk, path)


def _bool(value: Any, walk: _Walk, path: str) -> bool:
    if not isinstance(value, bool):
        raise _refuse(path, f"expected true or false, got {_describe(value)}.")
    return value


def _scalar(value: Any, walk: _Walk, path: str) -> str | int | float | bool:
    if isinstance(value, (str, bool)):
        return value
    if not _is_number(value):
        raise _refuse(path, f"expected a string, a number or a boolean, got {_describe(value)}.")
    return _finite_number(value, walk, path)


def _optional(check: Check) -> Check:
    def optional(value: Any, walk: _Walk, path: str) -> Any:
        return None if value is None else check(value, walk, path)

    return optional


def _items(value: Any, path: str) -> list[Any]:
    """The items of a JSON array or of an opendp_logger `{"_type": "list"|"tuple", "_items": [...]}`."""
    if (
        isinstance(value, dict)
        and value.get("_type") in ("list", "tuple")
        and set(value) == {"_type", "_items"}
    ):
        value = value["_items"]
    if not isinstance(value, list):
        raise _refuse(path, f"expected a list, got {_describe(value)}.")
    return value


def _categories(value: Any, walk: _Walk, path: str) -> list[str | int | bool]:
    items = _items(value, path)
    for index, item in enumerate(items):
        if not isinstance(item, (str, int)):
            raise _refuse(
                f"{path}[{index}]", f"a category is a string, an integer or a boolean, not {_describe(item)}."
            )
    if len({type(item) for item in items}) > 1:
        raise _refuse(path, "all categories must have the same type.")
    return [_scalar(item, walk, path) for item in items]


def _bounds(value: Any, walk: _Walk, path: str) -> tuple[int | float, int | float]:
    items = _items(value, path)
    if len(items) != 2:
        raise _refuse(path, f"bounds are [lower, upper], got {len(items)} values.")
    lower, upper = (_finite_number(item, walk, f"{path}[{index}]") for index, item in enumerate(items))
    return lower, upper


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PYTHON_TYPE_NAMES = {"int": "i32", "float": "f64", "str": "String"}  # as OpenDP reads Python types


def _type_name(allowed: frozenset[str], rename: Mapping[str, str] | None = None) -> Check:
    """A type name from `allowed`, as a string or an opendp_logger `{"_type": "type", "name": ...}`."""

    def type_name(value: Any, walk: _Walk, path: str) -> str:
        if isinstance(value, dict) and value.get("_type") == "type" and set(value) == {"_type", "name"}:
            value = value["name"]
        if not isinstance(value, str):
            raise _refuse(path, f"expected a type name, got {_describe(value)}.")
        name = _IDENTIFIER.sub(lambda match: _PYTHON_TYPE_NAMES.get(match.group(), match.group()), value)
        if name not in allowed:
            raise _refuse(path, f"type {value!r} is not allowed here; use one of {sorted(allowed)}.")
        return (rename or {}).get(name, name)

    return type_name


def _node_of(*categories: Category) -> Check:
    def node(value: Any, walk: _Walk, path: str) -> Node:
        parsed = _parse_node(value, walk, path)
        if _category(parsed) not in categories:
            wanted = " or ".join(categories)
            raise _refuse(path, f"expected a {wanted}, got the {_category(parsed)} {_name(parsed)}.")
        return parsed

    return node


def _separator(value: Any, walk: _Walk, path: str) -> str:
    if value != SEPARATOR:
        raise _refuse(path, f"the dataset is fed as CSV text: separator must be {SEPARATOR!r}.")
    return value


def _col_names(value: Any, walk: _Walk, path: str) -> list[str]:
    names = _items(value, path)
    if tuple(names) != walk.columns:
        raise _refuse(
            path,
            f"col_names must be the dataset's columns, in the order of its metadata: {list(walk.columns)}.",
        )
    return list(names)


def _column_key(value: Any, walk: _Walk, path: str) -> str:
    if value not in walk.columns:
        raise _refuse(path, f"unknown column {_describe(value)}; the columns are {list(walk.columns)}.")
    return value


def _describe(value: Any) -> str:
    """A short description of a request value for messages (never a long echo of the payload)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"a string of {len(value)} characters"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    return f"a JSON {'object' if isinstance(value, dict) else 'array'}"


# -- type names --------------------------------------------------------------------------------------------
_INTEGERS = ("i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "usize")
_FLOATS = ("f32", "f64")
NUMBER_TYPES = frozenset({*_INTEGERS, *_FLOATS})
ATOM_TYPES = frozenset({"bool", "String", *NUMBER_TYPES})
_STRING = frozenset({"String"})
_FLOAT_TYPES = frozenset(_FLOATS)
_COUNT_METRICS = frozenset(f"{metric}<{t}>" for metric in ("L1Distance", "L2Distance") for t in NUMBER_TYPES)
_DATASET_METRICS = frozenset({"SymmetricDistance", "InsertDeleteDistance"})
_SUMMATIONS = frozenset(f"{s}<{t}>" for s in ("Pairwise", "Sequential") for t in (*_FLOATS, "T"))
_NOISE_MEASURES = frozenset({"MaxDivergence", "ZeroConcentratedDivergence"})
# opendp 0.10 parametrised zCDP by its distance type; 0.14 does not.
_LEGACY_ZCDP = {f"ZeroConcentratedDivergence<{t}>": "ZeroConcentratedDivergence" for t in (*_FLOATS, "QO")}


# -- the allow-lists ---------------------------------------------------------------------------------------
def _p(name: str, check: Check) -> Param:
    return Param(name, check)


def _required(name: str, check: Check) -> Param:
    return Param(name, check, required=True)


_INPUT = (
    _required("input_domain", _node_of(Category.DOMAIN)),
    _required("input_metric", _node_of(Category.METRIC)),
)
_MEASUREMENT_ARG = _required("measurement", _node_of(Category.MEASUREMENT))


def _without(*dropped: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A constructor that ignores arguments OpenDP 0.14 no longer has (0.10 type parameters)."""

    def wrap(build: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return build(*args, **{key: value for key, value in kwargs.items() if key not in dropped})

        return call

    return wrap


def _legacy_atom_domain(bounds: Any = None, nullable: bool = False, T: str | None = None) -> dp.Domain:
    """opendp 0.10's `nullable` (NaN allowed, off by default) is 0.14's `nan` (on by default for floats)."""
    return dp.atom_domain(bounds=bounds, nan=nullable, T=T)


def _impute_nan(transformation: dp.Transformation) -> dp.Transformation:
    """Follow a cast to floats with imputation of NaN by 0.0.

    opendp 0.10 let a float cast feed `make_clamp` (and failed at run time on a NaN); 0.14 refuses to build
    that, because the cast may yield NaN. Text that is not a number already becomes 0.0, so does "NaN" here.
    """
    if not transformation.output_domain.element_domain.nan:
        return transformation
    impute = dp.t.make_impute_constant(
        transformation.output_domain, transformation.output_metric, constant=0.0
    )
    return dp.c.make_chain_tt(impute, transformation)


def _legacy_float_cast(make: Callable[..., dp.Transformation]) -> Callable[..., dp.Transformation]:
    def cast(input_domain: dp.Domain, input_metric: dp.Metric, TOA: str) -> dp.Transformation:
        return _impute_nan(make(input_domain, input_metric, TOA=TOA))

    return cast


def _constructor(name: str, category: Category, build: Callable[..., Any], *params: Param) -> Constructor:
    return Constructor(name, category, params, build)


DOMAIN, METRIC, MEASURE = Category.DOMAIN, Category.METRIC, Category.MEASURE
TRANSFORMATION, MEASUREMENT = Category.TRANSFORMATION, Category.MEASUREMENT

_COMMON: tuple[Constructor, ...] = (
    # domains and metrics, for constructors called with an explicit input space
    _constructor(
        "vector_domain",
        DOMAIN,
        dp.vector_domain,
        _required("atom_domain", _node_of(DOMAIN)),
        _p("size", _optional(_size)),
    ),
    _constructor(
        "option_domain",
        DOMAIN,
        dp.option_domain,
        _required("element_domain", _node_of(DOMAIN)),
        _p("D", _optional(_type_name(frozenset()))),
    ),
    _constructor("symmetric_distance", METRIC, dp.symmetric_distance),
    _constructor("insert_delete_distance", METRIC, dp.insert_delete_distance),
    _constructor("change_one_distance", METRIC, dp.change_one_distance),
    _constructor("hamming_distance", METRIC, dp.hamming_distance),
    _constructor("absolute_distance", METRIC, dp.absolute_distance, _required("T", _type_name(NUMBER_TYPES))),
    _constructor("l1_distance", METRIC, dp.l1_distance, _required("T", _type_name(NUMBER_TYPES))),
    _constructor("l2_distance", METRIC, dp.l2_distance, _required("T", _type_name(NUMBER_TYPES))),
    # transformations: reading the dataset
    _constructor(
        "make_split_dataframe",
        TRANSFORMATION,
        dp.t.make_split_dataframe,
        _required("separator", _separator),
        _required("col_names", _col_names),
        _p("K", _optional(_type_name(_STRING))),
    ),
    _constructor(
        "make_select_column",
        TRANSFORMATION,
        dp.t.make_select_column,
        _required("key", _column_key),
        _required("TOA", _type_name(_STRING)),  # make_split_dataframe yields text columns
        _p("K", _optional(_type_name(_STRING))),
    ),
    # transformations: casting, missing values, filtering
    _constructor(
        "make_cast", TRANSFORMATION, dp.t.make_cast, *_INPUT, _required("TOA", _type_name(ATOM_TYPES))
    ),
    _constructor(
        "make_impute_constant",
        TRANSFORMATION,
        dp.t.make_impute_constant,
        *_INPUT,
        _required("constant", _scalar),
    ),
    _constructor(
        "make_impute_uniform_float",
        TRANSFORMATION,
        dp.t.make_impute_uniform_float,
        *_INPUT,
        _required("bounds", _bounds),
    ),
    _constructor("make_drop_null", TRANSFORMATION, dp.t.make_drop_null, *_INPUT),
    _constructor("make_is_equal", TRANSFORMATION, dp.t.make_is_equal, *_INPUT, _required("value", _scalar)),
    _constructor("make_is_null", TRANSFORMATION, dp.t.make_is_null, *_INPUT),
    _constructor("make_clamp", TRANSFORMATION, dp.t.make_clamp, *_INPUT, _required("bounds", _bounds)),
    _constructor(
        "make_resize",
        TRANSFORMATION,
        dp.t.make_resize,
        *_INPUT,
        _required("size", _size),
        _required("constant", _scalar),
        _p("MO", _type_name(_DATASET_METRICS)),
    ),
    # transformations: aggregates
    _constructor("make_count", TRANSFORMATION, dp.t.make_count, *_INPUT, _p("TO", _type_name(NUMBER_TYPES))),
    _constructor(
        "make_count_distinct",
        TRANSFORMATION,
        dp.t.make_count_distinct,
        *_INPUT,
        _p("TO", _type_name(NUMBER_TYPES)),
    ),
    _constructor(
        "make_count_by_categories",
        TRANSFORMATION,
        dp.t.make_count_by_categories,
        *_INPUT,
        _required("categories", _categories),
        _p("null_category", _bool),
        _p("MO", _type_name(_COUNT_METRICS)),
        _p("TOA", _type_name(NUMBER_TYPES)),
    ),
    _constructor("make_sum", TRANSFORMATION, dp.t.make_sum, *_INPUT),
    _constructor("make_mean", TRANSFORMATION, dp.t.make_mean, *_INPUT),
    _constructor(
        "make_variance",
        TRANSFORMATION,
        dp.t.make_variance,
        *_INPUT,
        _p("ddof", _int_in(0, 1_000)),
        _p("S", _type_name(_SUMMATIONS)),
    ),
    _constructor(
        "make_sum_of_squared_deviations",
        TRANSFORMATION,
        dp.t.make_sum_of_squared_deviations,
        *_INPUT,
        _p("S", _type_name(_SUMMATIONS)),
    ),
    # combinators
    _constructor(
        "make_chain_tt",
        TRANSFORMATION,
        dp.c.make_chain_tt,
        _required("transformation1", _node_of(TRANSFORMATION)),
        _required("transformation0", _node_of(TRANSFORMATION)),
    ),
    _constructor(
        "make_chain_mt",
        MEASUREMENT,
        dp.c.make_chain_mt,
        _required("measurement1", _node_of(MEASUREMENT)),
        _required("transformation0", _node_of(TRANSFORMATION)),
    ),
    _constructor("make_zCDP_to_approxDP", MEASUREMENT, dp.c.make_zCDP_to_approxDP, _MEASUREMENT_ARG),
    _constructor("make_pureDP_to_zCDP", MEASUREMENT, dp.c.make_pureDP_to_zCDP, _MEASUREMENT_ARG),
    _constructor(
        "make_fix_delta", MEASUREMENT, dp.c.make_fix_delta, _MEASUREMENT_ARG, _required("delta", _probability)
    ),
)

_LEGACY_ONLY: tuple[Constructor, ...] = (
    _constructor(
        "atom_domain",
        DOMAIN,
        _legacy_atom_domain,
        _p("bounds", _optional(_bounds)),
        _p("nullable", _bool),
        _p("T", _optional(_type_name(ATOM_TYPES))),
    ),
    *(
        _constructor(name, MEASURE, _without("T")(build), _p("T", _type_name(_FLOAT_TYPES)))
        for name, build in (
            ("max_divergence", dp.max_divergence),
            ("smoothed_max_divergence", dp.smoothed_max_divergence),
            ("fixed_smoothed_max_divergence", dp.fixed_smoothed_max_divergence),
            ("zero_concentrated_divergence", dp.zero_concentrated_divergence),
        )
    ),
    _constructor(
        "make_cast_default",
        TRANSFORMATION,
        _legacy_float_cast(dp.t.make_cast_default),
        *_INPUT,
        _required("TOA", _type_name(ATOM_TYPES)),
    ),
    _constructor(
        "make_cast_inherent",
        TRANSFORMATION,
        _legacy_float_cast(dp.t.make_cast_inherent),
        *_INPUT,
        _required("TOA", _type_name(ATOM_TYPES)),
    ),
    _constructor(
        "make_laplace",
        MEASUREMENT,
        _without("QO")(dp.m.make_laplace),
        *_INPUT,
        _required("scale", _non_negative_float),
        _p("k", _optional(_int_in(-1074, 1023))),
        _p("QO", _type_name(_FLOAT_TYPES)),
    ),
    _constructor(
        "make_gaussian",
        MEASUREMENT,
        dp.m.make_gaussian,
        *_INPUT,
        _required("scale", _non_negative_float),
        _p("k", _optional(_int_in(-1074, 1023))),
        _p("MO", _type_name(frozenset(_LEGACY_ZCDP), _LEGACY_ZCDP)),
    ),
    _constructor(
        "make_geometric",
        MEASUREMENT,
        _without("QO")(dp.m.make_geometric),
        *_INPUT,
        _required("scale", _non_negative_float),
        _p("bounds", _optional(_bounds)),
        _p("QO", _optional(_type_name(_FLOAT_TYPES))),
    ),
    # 0.10's "fixed approximate DP" with delta 0 is 0.14's Approximate(MaxDivergence).
    _constructor("make_pureDP_to_fixed_approxDP", MEASUREMENT, dp.c.make_approximate, _MEASUREMENT_ARG),
)

_CURRENT_ONLY: tuple[Constructor, ...] = (
    _constructor(
        "atom_domain",
        DOMAIN,
        dp.atom_domain,
        _p("bounds", _optional(_bounds)),
        _p("nan", _optional(_bool)),
        _p("T", _optional(_type_name(ATOM_TYPES))),
    ),
    _constructor("max_divergence", MEASURE, dp.max_divergence),
    _constructor("smoothed_max_divergence", MEASURE, dp.smoothed_max_divergence),
    _constructor("fixed_smoothed_max_divergence", MEASURE, dp.fixed_smoothed_max_divergence),
    _constructor("zero_concentrated_divergence", MEASURE, dp.zero_concentrated_divergence),
    _constructor("approximate", MEASURE, dp.approximate, _required("measure", _node_of(MEASURE))),
    _constructor(
        "make_cast_default",
        TRANSFORMATION,
        dp.t.make_cast_default,
        *_INPUT,
        _required("TOA", _type_name(ATOM_TYPES)),
    ),
    _constructor(
        "make_cast_inherent",
        TRANSFORMATION,
        dp.t.make_cast_inherent,
        *_INPUT,
        _required("TOA", _type_name(ATOM_TYPES)),
    ),
    *(
        _constructor(
            name,
            MEASUREMENT,
            build,
            *_INPUT,
            _required("scale", _non_negative_float),
            _p("k", _optional(_int_in(-1074, 1023))),
            _p("MO", _type_name(_NOISE_MEASURES)),
        )
        for name, build in (("make_laplace", dp.m.make_laplace), ("make_gaussian", dp.m.make_gaussian))
    ),
    _constructor(
        "make_geometric",
        MEASUREMENT,
        dp.m.make_geometric,
        *_INPUT,
        _required("scale", _non_negative_float),
        _p("bounds", _optional(_bounds)),
        _p("MO", _type_name(frozenset({"MaxDivergence"}))),
    ),
    _constructor("make_approximate", MEASUREMENT, dp.c.make_approximate, _MEASUREMENT_ARG),
)

CONSTRUCTORS: dict[Dialect, dict[str, Constructor]] = {
    Dialect.LEGACY: {c.name: c for c in (*_COMMON, *_LEGACY_ONLY)},
    Dialect.CURRENT: {c.name: c for c in (*_COMMON, *_CURRENT_ONLY)},
}


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
        f"Unsupported OpenDP version {_describe(version)} in opendp_json; use {accepted}."
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
    root = _parse_node(document["ast"], _Walk(dialect, columns, limits), "ast")
    if _category(root) is not Category.MEASUREMENT:
        raise InvalidQueryError(
            f"The pipeline is a {_category(root)}; it must end with a measurement (a noise mechanism such as "
            "then_laplace or then_gaussian)."
        )
    return root


def _parse_node(value: Any, walk: _Walk, path: str) -> Node:
    if not isinstance(value, dict) or value.get("_type") not in _NODE_TYPES:
        raise _refuse(
            path,
            f"expected an OpenDP constructor (a node of type {list(_NODE_TYPES)}), got {_describe(value)}.",
        )
    if value["_type"] == "constructor":
        return _parse_call(value, walk, path)
    _expect_keys(value, {"_type", "lhs", "rhs"}, path)
    lhs = _node_of(Category.TRANSFORMATION)(value["lhs"], walk, f"{path}.lhs")
    if value["_type"] == "chain":  # `lhs >> rhs` of two built objects
        rhs = _node_of(Category.TRANSFORMATION, Category.MEASUREMENT)(value["rhs"], walk, f"{path}.rhs")
        chain = "make_chain_tt" if _category(rhs) is Category.TRANSFORMATION else "make_chain_mt"
        outer = "transformation1" if _category(rhs) is Category.TRANSFORMATION else "measurement1"
        return Call(CONSTRUCTORS[walk.dialect][chain], {outer: rhs, "transformation0": lhs})
    return _parse_then(lhs, value["rhs"], walk, f"{path}.rhs")


def _expect_keys(value: dict[str, Any], allowed: set[str], path: str) -> None:
    unexpected = sorted(str(key) for key in set(value) - allowed)
    if unexpected:
        raise _refuse(
            path, f"unexpected keys {unexpected}; a {value.get('_type')} node has {sorted(allowed)}."
        )


def _lookup(value: dict[str, Any], walk: _Walk, path: str) -> tuple[str, Constructor | None]:
    _expect_keys(value, {"_type", "module", "func", "args", "kwargs"}, path)
    module, func = value.get("module"), value.get("func")
    if module not in MODULES:
        raise _refuse(path, f"module {_describe(module)} is not allowed; use one of {sorted(MODULES)}.")
    if not isinstance(func, str):
        raise _refuse(path, f"func must be a constructor name, got {_describe(func)}.")
    name = f"make_{func.removeprefix('then_')}" if func.startswith("then_") else func
    return func, CONSTRUCTORS[walk.dialect].get(name)


def _not_allowed(func: str, walk: _Walk, path: str) -> InvalidQueryError:
    allowed = ", ".join(sorted(CONSTRUCTORS[walk.dialect]))
    return _refuse(
        path, f"{func!r} is not an allowed OpenDP {walk.dialect.value} constructor. Allowed: {allowed}."
    )


def _parse_call(value: dict[str, Any], walk: _Walk, path: str) -> Call:
    func, constructor = _lookup(value, walk, path)
    if func.startswith("then_"):
        raise _refuse(path, f"{func} can only be the right-hand side of a chain (`... >> {func}(...)`).")
    if constructor is None:
        raise _not_allowed(func, walk, path)
    return Call(constructor, _arguments(constructor.params, value, walk, path))


def _parse_then(lhs: Node, value: Any, walk: _Walk, path: str) -> Then:
    if not isinstance(value, dict) or value.get("_type") != "constructor":
        raise _refuse(path, f"expected a then_... constructor, got {_describe(value)}.")
    func, constructor = _lookup(value, walk, path)
    if not func.startswith("then_"):
        raise _refuse(
            path, f"the right-hand side of a partial_chain is a then_... constructor, not {func!r}."
        )
    if constructor is None or not constructor.chainable:
        raise _not_allowed(func, walk, path)
    return Then(lhs, constructor, _arguments(constructor.params[2:], value, walk, path))


def _arguments(params: tuple[Param, ...], value: dict[str, Any], walk: _Walk, path: str) -> dict[str, Any]:
    """Match `args` and `kwargs` to the parameters, check each value, and require the required ones."""
    args, kwargs = _items(value.get("args", []), f"{path}.args"), value.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise _refuse(f"{path}.kwargs", f"expected a JSON object, got {_describe(kwargs)}.")
    func = value["func"]
    if len(args) > len(params):
        raise _refuse(
            f"{path}.args", f"{func} takes at most {len(params)} positional arguments, got {len(args)}."
        )
    given = dict(zip((param.name for param in params), args, strict=False))
    for name, argument in kwargs.items():
        if name in given:
            raise _refuse(f"{path}.kwargs", f"{func} got {name!r} twice.")
        given[name] = argument
    by_name = {param.name: param for param in params}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise _refuse(
            f"{path}.kwargs", f"{func} has no argument {unknown[0]!r}; its arguments are {list(by_name)}."
        )
    missing = [param.name for param in params if param.required and param.name not in given]
    if missing:
        raise _refuse(path, f"{func} needs the argument {missing[0]!r}.")
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


def library_message(error: OpenDPException) -> str:
    """OpenDP's own words; a missing feature is the server's configuration, which no request changes."""
    text = error.variant if error.message is None else f"{error.variant}: {error.message}"
    if "but not enabled" in text:
        return f"{text.split('. See ')[0]} on this server (OpenDP features are set by its configuration)."
    return text


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
