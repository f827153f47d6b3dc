"""The allow-lists of the opendp_logger pipelines: which OpenDP constructors a request may call, and how.

One table per dialect (see `Dialect`): the constructors both versions share, and those whose names or
signatures changed between OpenDP 0.10 and 0.14. Where a 0.10 constructor has an exact 0.14 equivalent,
the legacy table maps it (`_LEGACY_ONLY`); a constructor in neither table is refused by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import opendp.prelude as dp

from lomas.server.engines.opendp.logger_checks import (
    boolean,
    bounds,
    categories,
    col_names,
    column_key,
    int_in,
    node_of,
    non_negative_float,
    optional,
    probability,
    scalar,
    separator,
    size,
    type_name,
)
from lomas.server.engines.opendp.logger_plan import Category, Check, Constructor, Dialect, Param

DOMAIN, METRIC, MEASURE = Category.DOMAIN, Category.METRIC, Category.MEASURE
TRANSFORMATION, MEASUREMENT = Category.TRANSFORMATION, Category.MEASUREMENT

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
_PURE_MEASURE = frozenset({"MaxDivergence"})
_NOISE_MEASURES = frozenset({*_PURE_MEASURE, "ZeroConcentratedDivergence"})
# opendp 0.10 parametrised zCDP by its distance type; 0.14 does not.
_LEGACY_ZCDP = {f"ZeroConcentratedDivergence<{t}>": "ZeroConcentratedDivergence" for t in (*_FLOATS, "QO")}


# -- parameters --------------------------------------------------------------------------------------------
def _p(name: str, check: Check) -> Param:
    return Param(name, check)


def _required(name: str, check: Check) -> Param:
    return Param(name, check, required=True)


_INPUT = (
    _required("input_domain", node_of(DOMAIN)),
    _required("input_metric", node_of(METRIC)),
)
_MEASUREMENT_ARG = _required("measurement", node_of(MEASUREMENT))
_TOA = _required("TOA", type_name(ATOM_TYPES))
_STRING_KEYS = _p("K", optional(type_name(_STRING)))
_BOUNDS = _required("bounds", bounds)
_OPTIONAL_BOUNDS = _p("bounds", optional(bounds))
_NUMBER_TYPE = _required("T", type_name(NUMBER_TYPES))
_COUNT_TYPE = _p("TO", type_name(NUMBER_TYPES))
_SUMMATION = _p("S", type_name(_SUMMATIONS))
_GRANULARITY = _p("k", optional(int_in(-1074, 1023)))
_FLOAT_TYPE = type_name(_FLOAT_TYPES)


def _constructor(name: str, category: Category, build: Callable[..., Any], *params: Param) -> Constructor:
    return Constructor(name, category, params, build)


def _then(name: str, build: Callable[..., dp.Transformation], *params: Param) -> Constructor:
    """A transformation of an input domain and metric, which the request may also call as `then_...`."""
    return Constructor(name, TRANSFORMATION, (*_INPUT, *params), build)


def _noise(name: str, build: Callable[..., dp.Measurement], *params: Param) -> Constructor:
    """A noise mechanism: a measurement of an input domain and metric, with a `scale`."""
    return Constructor(name, MEASUREMENT, (*_INPUT, _required("scale", non_negative_float), *params), build)


def _chain(name: str, build: Callable[..., Any], outer: Category) -> Constructor:
    """`make_chain_tt`/`make_chain_mt`: the transformation or measurement `<outer>1` after the other."""
    return Constructor(
        name,
        outer,
        (_required(f"{outer}1", node_of(outer)), _required("transformation0", node_of(TRANSFORMATION))),
        build,
    )


# -- what OpenDP 0.14 builds for constructors of OpenDP 0.10 -----------------------------------------------
def _without(*dropped: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A constructor that ignores arguments OpenDP 0.14 no longer has (0.10 type parameters)."""

    def wrap(build: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(build)
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
    @functools.wraps(make)
    def cast(input_domain: dp.Domain, input_metric: dp.Metric, TOA: str) -> dp.Transformation:
        return _impute_nan(make(input_domain, input_metric, TOA=TOA))

    return cast


# -- the allow-lists ---------------------------------------------------------------------------------------
_COMMON: tuple[Constructor, ...] = (
    # domains and metrics, for constructors called with an explicit input space
    _constructor(
        "vector_domain",
        DOMAIN,
        dp.vector_domain,
        _required("atom_domain", node_of(DOMAIN)),
        _p("size", optional(size)),
    ),
    _constructor(
        "option_domain",
        DOMAIN,
        dp.option_domain,
        _required("element_domain", node_of(DOMAIN)),
        _p("D", optional(type_name(frozenset()))),
    ),
    _constructor("symmetric_distance", METRIC, dp.symmetric_distance),
    _constructor("insert_delete_distance", METRIC, dp.insert_delete_distance),
    _constructor("change_one_distance", METRIC, dp.change_one_distance),
    _constructor("hamming_distance", METRIC, dp.hamming_distance),
    _constructor("absolute_distance", METRIC, dp.absolute_distance, _NUMBER_TYPE),
    _constructor("l1_distance", METRIC, dp.l1_distance, _NUMBER_TYPE),
    _constructor("l2_distance", METRIC, dp.l2_distance, _NUMBER_TYPE),
    # transformations: reading the dataset
    _constructor(
        "make_split_dataframe",
        TRANSFORMATION,
        dp.t.make_split_dataframe,
        _required("separator", separator),
        _required("col_names", col_names),
        _STRING_KEYS,
    ),
    _constructor(
        "make_select_column",
        TRANSFORMATION,
        dp.t.make_select_column,
        _required("key", column_key),
        _required("TOA", type_name(_STRING)),  # make_split_dataframe yields text columns
        _STRING_KEYS,
    ),
    # transformations: casting, missing values, filtering
    _then("make_cast", dp.t.make_cast, _TOA),
    _then("make_impute_constant", dp.t.make_impute_constant, _required("constant", scalar)),
    _then("make_impute_uniform_float", dp.t.make_impute_uniform_float, _BOUNDS),
    _then("make_drop_null", dp.t.make_drop_null),
    _then("make_is_equal", dp.t.make_is_equal, _required("value", scalar)),
    _then("make_is_null", dp.t.make_is_null),
    _then("make_clamp", dp.t.make_clamp, _BOUNDS),
    _then(
        "make_resize",
        dp.t.make_resize,
        _required("size", size),
        _required("constant", scalar),
        _p("MO", type_name(_DATASET_METRICS)),
    ),
    # transformations: aggregates
    _then("make_count", dp.t.make_count, _COUNT_TYPE),
    _then("make_count_distinct", dp.t.make_count_distinct, _COUNT_TYPE),
    _then(
        "make_count_by_categories",
        dp.t.make_count_by_categories,
        _required("categories", categories),
        _p("null_category", boolean),
        _p("MO", type_name(_COUNT_METRICS)),
        _p("TOA", type_name(NUMBER_TYPES)),
    ),
    _then("make_sum", dp.t.make_sum),
    _then("make_mean", dp.t.make_mean),
    _then("make_variance", dp.t.make_variance, _p("ddof", int_in(0, 1_000)), _SUMMATION),
    _then("make_sum_of_squared_deviations", dp.t.make_sum_of_squared_deviations, _SUMMATION),
    # combinators
    _chain("make_chain_tt", dp.c.make_chain_tt, TRANSFORMATION),
    _chain("make_chain_mt", dp.c.make_chain_mt, MEASUREMENT),
    _constructor("make_zCDP_to_approxDP", MEASUREMENT, dp.c.make_zCDP_to_approxDP, _MEASUREMENT_ARG),
    _constructor("make_pureDP_to_zCDP", MEASUREMENT, dp.c.make_pureDP_to_zCDP, _MEASUREMENT_ARG),
    _constructor(
        "make_fix_delta", MEASUREMENT, dp.c.make_fix_delta, _MEASUREMENT_ARG, _required("delta", probability)
    ),
)

_LEGACY_ONLY: tuple[Constructor, ...] = (
    _constructor(
        "atom_domain",
        DOMAIN,
        _legacy_atom_domain,
        _OPTIONAL_BOUNDS,
        _p("nullable", boolean),
        _p("T", optional(type_name(ATOM_TYPES))),
    ),
    *(
        _constructor(name, MEASURE, _without("T")(build), _p("T", _FLOAT_TYPE))
        for name, build in (
            ("max_divergence", dp.max_divergence),
            ("smoothed_max_divergence", dp.smoothed_max_divergence),
            ("fixed_smoothed_max_divergence", dp.fixed_smoothed_max_divergence),
            ("zero_concentrated_divergence", dp.zero_concentrated_divergence),
        )
    ),
    _then("make_cast_default", _legacy_float_cast(dp.t.make_cast_default), _TOA),
    _then("make_cast_inherent", _legacy_float_cast(dp.t.make_cast_inherent), _TOA),
    _noise("make_laplace", _without("QO")(dp.m.make_laplace), _GRANULARITY, _p("QO", _FLOAT_TYPE)),
    _noise(
        "make_gaussian",
        dp.m.make_gaussian,
        _GRANULARITY,
        _p("MO", type_name(frozenset(_LEGACY_ZCDP), _LEGACY_ZCDP)),
    ),
    _noise(
        "make_geometric",
        _without("QO")(dp.m.make_geometric),
        _OPTIONAL_BOUNDS,
        _p("QO", optional(_FLOAT_TYPE)),
    ),
    # 0.10's "fixed approximate DP" with delta 0 is 0.14's Approximate(MaxDivergence).
    _constructor("make_pureDP_to_fixed_approxDP", MEASUREMENT, dp.c.make_approximate, _MEASUREMENT_ARG),
)

_CURRENT_ONLY: tuple[Constructor, ...] = (
    _constructor(
        "atom_domain",
        DOMAIN,
        dp.atom_domain,
        _OPTIONAL_BOUNDS,
        _p("nan", optional(boolean)),
        _p("T", optional(type_name(ATOM_TYPES))),
    ),
    _constructor("max_divergence", MEASURE, dp.max_divergence),
    _constructor("smoothed_max_divergence", MEASURE, dp.smoothed_max_divergence),
    _constructor("fixed_smoothed_max_divergence", MEASURE, dp.fixed_smoothed_max_divergence),
    _constructor("zero_concentrated_divergence", MEASURE, dp.zero_concentrated_divergence),
    _constructor("approximate", MEASURE, dp.approximate, _required("measure", node_of(MEASURE))),
    _then("make_cast_default", dp.t.make_cast_default, _TOA),
    _then("make_cast_inherent", dp.t.make_cast_inherent, _TOA),
    _noise("make_laplace", dp.m.make_laplace, _GRANULARITY, _p("MO", type_name(_NOISE_MEASURES))),
    _noise("make_gaussian", dp.m.make_gaussian, _GRANULARITY, _p("MO", type_name(_NOISE_MEASURES))),
    _noise("make_geometric", dp.m.make_geometric, _OPTIONAL_BOUNDS, _p("MO", type_name(_PURE_MEASURE))),
    _constructor("make_approximate", MEASUREMENT, dp.c.make_approximate, _MEASUREMENT_ARG),
)

CONSTRUCTORS: dict[Dialect, dict[str, Constructor]] = {
    Dialect.LEGACY: {c.name: c for c in (*_COMMON, *_LEGACY_ONLY)},
    Dialect.CURRENT: {c.name: c for c in (*_COMMON, *_CURRENT_ONLY)},
}
