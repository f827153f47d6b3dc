"""DiffPrivLib engine: scikit-learn pipelines of `diffprivlib.models`, fitted on the private data.

The request carries the pipeline as diffprivlib_logger JSON (what lomas-client 0.4.1 sends):
`{"module": "diffprivlib", "version": ..., "pipeline": [{"type": "_dpl_type:StandardScaler", "name": ...,
"params": {...}}, ...]}`, with tuples as `{"_tuple": true, "_items": [...]}` and accountants as
`"_dpl_instance:BudgetAccountant"`. It is parsed here as plain data; no name in it is ever looked up in
a module. Versions 0.6.5 (what the 0.4.1 client pins) and 0.6.6 (what the server runs) are accepted:
the constructors of the allowed classes take the same parameters with the same meaning in both; other
versions may not, so they are refused.

Privacy, step by step:
- Allow-list: a fixed set of classes, each with the parameters it may take and their types and ranges
  (sizes capped by `DiffPrivLibSettings`). The parameters that keep a model from looking at the data
  to find its own bounds (`bounds`, `bounds_X`, `bounds_y`, `data_norm`, and `classes` for trees) are
  required, so the library never reaches the code that would raise a `PrivacyLeakWarning`. As a second
  line, the engine turns `PrivacyLeakWarning` into an error with one process-wide filter installed at
  construction (never per request: `warnings.catch_warnings` is not thread-safe).
- Cost: the sum of the steps' declared epsilons (omitted ones take the class default, read from its
  signature); every allowed class spends (epsilon, 0). It is computed without fitting anything.
- Accountants: each step gets a fresh `BudgetAccountant` capped at its declared (epsilon, 0), never the
  library's default; after fitting, each must have spent no more than that.
- Seeds: `random_state` (an integer or null) is honoured on dummy data only. On private data it is
  replaced by null, so that the noise comes from the library's secure sampler: a seed chosen by the
  caller would make the noise reproducible, and the model no longer DP.
- Missing values: "drop" drops the rows with a missing feature or target. "mean", "median" and
  "most_frequent" fill them with values from the public metadata, never with statistics of the private
  data (one person could then change the fill value of every missing cell): the midpoint of the declared
  bounds for numeric columns (the mean and median of the uniform distribution over them; the metadata
  knows no mode), the first declared category for categorical columns, False for booleans. Values of a
  categorical target outside its declared categories count as missing.
- Score: computed on a dummy dataset from the metadata (`DiffPrivLibSettings.score_rows` rows), free;
  the model is trained on the training split of the private data and the test split is never used.
- Released model: fitted attributes that are not DP outputs (training row counts, training labels and
  inertia of KMeans, iteration counts, PCA singular values that give away the row count) are removed
  before the model is pickled (the 0.4 `model`) and written as JSON (`model_params`).
"""

from __future__ import annotations

import base64
import inspect
import json
import math
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NoReturn

import numpy as np
import pandas as pd
from diffprivlib import BudgetAccountant, models
from diffprivlib.utils import PrivacyLeakWarning
from sklearn.base import BaseEstimator
from sklearn.model_selection import ShuffleSplit
from sklearn.pipeline import Pipeline
from sklearn.tree._tree import Tree

from lomas.core.errors import DPLibrary, InvalidQueryError
from lomas.core.metadata import (
    AnyColumn,
    BooleanMetadata,
    FloatMetadata,
    IntCategoricalMetadata,
    IntMetadata,
    Metadata,
    StrCategoricalMetadata,
)
from lomas.core.requests import DiffPrivLibCostRequest, DiffPrivLibDummyQueryRequest
from lomas.core.responses import DiffPrivLibResult, DiffPrivLibStep
from lomas.server.config import DiffPrivLibSettings
from lomas.server.data.frame import DataFrameSource
from lomas.server.dummy import make_dummy_frame
from lomas.server.engines.base import Cost, Engine
from lomas.server.store.service import DatasetRecord

ACCEPTED_VERSIONS = ("0.6.5", "0.6.6")
_TYPE_PREFIX = "_dpl_type:"
_ACCOUNTANT = "_dpl_instance:BudgetAccountant"
_STEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
_PIPELINE_ATTRIBUTES = frozenset({"steps", "memory", "verbose", "transform_input"})
_MAX_SEED = 2**32 - 1  # numpy's RandomState takes seeds up to this
_NUMERIC_COLUMNS = (IntMetadata, IntCategoricalMetadata, FloatMetadata, BooleanMetadata)
_CLASS_COLUMNS = (StrCategoricalMetadata, IntCategoricalMetadata, BooleanMetadata)
_VALUE_COLUMNS = (IntMetadata, IntCategoricalMetadata, FloatMetadata)

TargetKind = Literal["class", "value"]


class _Refused(Exception):
    """A parameter value outside the allow-list; the message completes "parameter 'x' ..."."""


@dataclass(frozen=True)
class _StepContext:
    """What a parameter is checked against: the limits, the step's input width, the target's classes."""

    settings: DiffPrivLibSettings
    width: int
    classes: tuple[Any, ...] | None


Checker = Callable[[Any, _StepContext], Any]


# -- parameter checkers: each returns the value to pass to the constructor, or raises _Refused -----------
def _shown(value: Any) -> str:
    """The caller's own value, cut short, to say which one was refused."""
    return json.dumps(value)[:40]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(f"must be a finite number, not {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        number = math.inf
    if not math.isfinite(number):
        raise _Refused(f"must be a finite number, not {_shown(value)}")
    return number


def _positive(value: Any, _ctx: _StepContext) -> float:
    number = _number(value)
    if number <= 0:
        raise _Refused(f"must be positive, not {_shown(value)}")
    return number


def _non_negative(value: Any, _ctx: _StepContext) -> float:
    number = _number(value)
    if number < 0:
        raise _Refused(f"must not be negative, not {_shown(value)}")
    return number


def _required(value: Any) -> None:
    if value is None:
        raise _Refused(
            "is required: declare it, so that nothing is computed from the private data to replace it"
        )


def _data_norm(value: Any, ctx: _StepContext) -> float:
    _required(value)
    return _positive(value, ctx)


def _flag(value: Any, _ctx: _StepContext) -> bool:
    if not isinstance(value, bool):
        raise _Refused(f"must be true or false, not {_shown(value)}")
    return value


def _seed(value: Any, _ctx: _StepContext) -> int | None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SEED
    ):
        raise _Refused(f"must be null or an integer from 0 to {_MAX_SEED}, not {_shown(value)}")
    return value


def _accountant(value: Any, _ctx: _StepContext) -> None:
    """The server gives every step an accountant of its own; the request may only leave it to the server."""
    if value is not None and value != _ACCOUNTANT:
        raise _Refused(
            f'must be null or "{_ACCOUNTANT}" (the server supplies a fresh one), not {_shown(value)}'
        )


def _zero(value: Any, _ctx: _StepContext) -> int:
    if isinstance(value, bool) or value != 0:
        raise _Refused(f"must be 0, not {_shown(value)}")
    return 0


def _single_job(value: Any, _ctx: _StepContext) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value != 1):
        raise _Refused(f"must be null or 1 (the server runs one job per query), not {_shown(value)}")
    return value


def _null(value: Any, _ctx: _StepContext) -> None:
    if value is not None:
        raise _Refused(f"must be null, not {_shown(value)}")


def _int_in(low: int, limit: str) -> Checker:
    """An integer from `low` to the server setting named `limit`."""

    def check(value: Any, ctx: _StepContext) -> int:
        high = getattr(ctx.settings, limit)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Refused(
                f"must be an integer from {low} to {high} (server limit {limit}), not {_shown(value)}"
            )
        return value

    return check


def _bound_side(value: Any, width: int) -> float | tuple[float, ...]:
    if isinstance(value, list | tuple):
        if len(value) != width:
            raise _Refused(f"must give {width} values per side (one per input column), not {len(value)}")
        return tuple(_number(item) for item in value)
    return _number(value)


def _bounds_of_width(value: Any, width: int) -> tuple[Any, Any]:
    _required(value)
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise _Refused(f"must be a pair (lower, upper), not {_shown(value)}")
    lower, upper = (_bound_side(side, width) for side in value)
    if np.any(np.asarray(lower) > np.asarray(upper)):
        raise _Refused("must have each lower bound at most its upper bound")
    return lower, upper


def _bounds(value: Any, ctx: _StepContext) -> tuple[Any, Any]:
    return _bounds_of_width(value, ctx.width)


def _target_bounds(value: Any, _ctx: _StepContext) -> tuple[Any, Any]:
    return _bounds_of_width(value, 1)


def _n_components(value: Any, ctx: _StepContext) -> int | None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ctx.width
    ):
        raise _Refused(
            f"must be null or an integer from 1 to {ctx.width} (the input width), not {_shown(value)}"
        )
    return value


def _classes(value: Any, ctx: _StepContext) -> tuple[Any, ...]:
    _required(value)
    assert ctx.classes is not None  # steps that take classes need a class target, checked before
    if not isinstance(value, list | tuple) or list(value) != list(ctx.classes):
        raise _Refused(f"must be the sorted categories of the target column: {json.dumps(list(ctx.classes))}")
    return ctx.classes


def _priors(value: Any, ctx: _StepContext) -> tuple[float, ...] | None:
    if value is None:
        return None
    assert ctx.classes is not None
    if not isinstance(value, list | tuple) or len(value) != len(ctx.classes):
        raise _Refused(f"must be null or a list of {len(ctx.classes)} probabilities, one per class")
    priors = tuple(_non_negative(item, ctx) for item in value)
    if not math.isclose(math.fsum(priors), 1.0):
        raise _Refused("must sum to 1")
    return priors


def _tree_size(kwargs: Mapping[str, Any], ctx: _StepContext) -> None:
    nodes = kwargs.get("n_estimators", 1) * (2 ** (kwargs["max_depth"] + 1) - 1)
    if nodes > ctx.settings.max_tree_nodes:
        raise _Refused(
            f"asks for {nodes} tree nodes (n_estimators x (2^(max_depth+1) - 1)); "
            f"the limit is {ctx.settings.max_tree_nodes}: lower n_estimators or max_depth"
        )


# -- the allow-list ----------------------------------------------------------------------------------------
def _same_width(_kwargs: Mapping[str, Any], width: int) -> int:
    return width


@dataclass(frozen=True)
class _ModelSpec:
    """An allowed class: its parameters and their checkers, what it learns from, what it releases."""

    model: type[BaseEstimator]
    params: Mapping[str, Checker]
    target: TargetKind | None = None
    released: frozenset[str] = frozenset()  # fitted attributes ("..._") that are DP outputs or public
    output_width: Callable[[Mapping[str, Any], int], int] = _same_width
    check: Callable[[Mapping[str, Any], _StepContext], None] | None = None
    defaults: Mapping[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        signature = inspect.signature(self.model).parameters
        unknown = set(self.params) - set(signature)
        if unknown:  # the allow-list and the installed diffprivlib disagree: refuse to start
            raise RuntimeError(f"{self.model.__name__} takes no parameter {sorted(unknown)}")
        object.__setattr__(self, "defaults", {name: signature[name].default for name in self.params})

    @property
    def name(self) -> str:
        return self.model.__name__


_COMMON: dict[str, Checker] = {"epsilon": _positive, "random_state": _seed, "accountant": _accountant}
_TREE_RELEASED = frozenset({"n_features_in_", "n_outputs_", "classes_", "n_classes_"})

_SPECS: dict[str, _ModelSpec] = {
    spec.name: spec
    for spec in (
        _ModelSpec(
            models.StandardScaler,
            {**_COMMON, "bounds": _bounds, "copy": _flag, "with_mean": _flag, "with_std": _flag},
            released=frozenset({"n_features_in_", "mean_", "var_", "scale_"}),
        ),
        _ModelSpec(
            models.PCA,
            {
                **_COMMON,
                "n_components": _n_components,
                "data_norm": _data_norm,
                "centered": _flag,
                "bounds": _bounds,
                "copy": _flag,
                "whiten": _flag,
            },
            released=frozenset(
                {
                    "n_features_in_",
                    "mean_",
                    "components_",
                    "n_components_",
                    "explained_variance_",
                    "explained_variance_ratio_",
                    "noise_variance_",
                }
            ),
            output_width=lambda kwargs, width: kwargs["n_components"] or width,
        ),
        _ModelSpec(
            models.KMeans,
            {**_COMMON, "n_clusters": _int_in(1, "max_clusters"), "bounds": _bounds},
            released=frozenset({"n_features_in_", "cluster_centers_"}),
            output_width=lambda kwargs, _width: kwargs["n_clusters"],
        ),
        _ModelSpec(
            models.LogisticRegression,
            {
                **_COMMON,
                "data_norm": _data_norm,
                "tol": _positive,
                "C": _positive,
                "fit_intercept": _flag,
                "max_iter": _int_in(1, "max_iter"),
                "verbose": _zero,
                "warm_start": _flag,
                "n_jobs": _single_job,
            },
            target="class",
            released=frozenset({"n_features_in_", "classes_", "coef_", "intercept_"}),
        ),
        _ModelSpec(
            models.LinearRegression,
            {
                **_COMMON,
                "bounds_X": _bounds,
                "bounds_y": _target_bounds,
                "fit_intercept": _flag,
                "copy_X": _flag,
            },
            target="value",
            released=frozenset({"n_features_in_", "coef_", "intercept_"}),
        ),
        _ModelSpec(
            models.GaussianNB,
            {**_COMMON, "bounds": _bounds, "priors": _priors, "var_smoothing": _non_negative},
            target="class",
            released=frozenset(
                {"n_features_in_", "classes_", "epsilon_", "theta_", "var_", "class_count_", "class_prior_"}
            ),
        ),
        _ModelSpec(
            models.DecisionTreeClassifier,
            {
                **_COMMON,
                "max_depth": _int_in(1, "max_depth"),
                "bounds": _bounds,
                "classes": _classes,
                "criterion": _null,
            },
            target="class",
            released=_TREE_RELEASED | {"tree_"},
            check=_tree_size,
        ),
        _ModelSpec(
            models.RandomForestClassifier,
            {
                **_COMMON,
                "n_estimators": _int_in(1, "max_estimators"),
                "max_depth": _int_in(1, "max_depth"),
                "bounds": _bounds,
                "classes": _classes,
                "n_jobs": _single_job,
                "verbose": _zero,
                "warm_start": _flag,
                "shuffle": _flag,
            },
            target="class",
            released=_TREE_RELEASED | {"estimators_", "estimator_"},
            check=_tree_size,
        ),
    )
}
_SPECS_BY_MODEL = {spec.model: spec for spec in _SPECS.values()}


# -- plans ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Step:
    name: str
    spec: _ModelSpec
    kwargs: Mapping[str, Any]  # checked constructor arguments, without the accountant
    epsilon: float


@dataclass(frozen=True)
class _Target:
    column: str
    classes: tuple[Any, ...] | None  # sorted declared categories of a class target; None for a numeric one
    fill: Any  # the value a missing target gets when imputing


@dataclass(frozen=True)
class DiffPrivLibPlan:
    steps: tuple[_Step, ...]
    features: tuple[str, ...]
    feature_fills: np.ndarray | None  # None: rows with missing values are dropped
    target: _Target | None
    test_size: float
    split_seed: int
    score_metadata: Metadata  # the metadata of the used columns, for the dummy score
    score_rows: int
    cost: Cost


@dataclass(frozen=True)
class _RawStep:
    name: str
    spec: _ModelSpec
    params: dict[str, Any]


class DiffPrivLibEngine(Engine[DiffPrivLibCostRequest, DiffPrivLibPlan]):
    library: ClassVar[DPLibrary] = DPLibrary.DIFFPRIVLIB
    runs_long: ClassVar[bool] = True

    def __init__(self, settings: DiffPrivLibSettings) -> None:
        self.settings = settings
        # Once per process (idempotent: the same filter replaces itself). The plan already refuses what
        # would warn; this turns a warning the plan missed into a failed query instead of a leak.
        warnings.filterwarnings("error", category=PrivacyLeakWarning)

    def plan(self, request: DiffPrivLibCostRequest, dataset: DatasetRecord) -> DiffPrivLibPlan:
        metadata = dataset.metadata
        raw_steps = _parse_pipeline(request.diffprivlib_json, self.settings)
        last = raw_steps[-1].spec
        features = _features(request.feature_columns, metadata)
        target = _target(request.target_columns, last, features, metadata)
        keep_seeds = isinstance(request, DiffPrivLibDummyQueryRequest)
        steps = _checked_steps(raw_steps, len(features), target, self.settings, keep_seeds)
        used = [*features, *([target.column] if target else [])]
        fills = None
        if request.imputer_strategy != "drop":
            fills = np.array([float(_public_fill(metadata.columns[name])) for name in features])
        return DiffPrivLibPlan(
            steps=steps,
            features=features,
            feature_fills=fills,
            target=target,
            test_size=request.test_size,
            split_seed=request.test_train_split_seed,
            score_metadata=metadata.model_copy(
                update={"columns": {name: metadata.columns[name] for name in used}}
            ),
            score_rows=self.settings.score_rows,
            cost=Cost(math.fsum(step.epsilon for step in steps), 0.0),
        )

    def cost(self, plan: DiffPrivLibPlan) -> Cost:
        return plan.cost

    def run(self, plan: DiffPrivLibPlan, data: DataFrameSource) -> DiffPrivLibResult:
        features, target = _arrays(data.frame, plan)
        train, _test = next(
            ShuffleSplit(n_splits=1, test_size=plan.test_size, random_state=plan.split_seed).split(features)
        )
        pipeline = _fresh_pipeline(plan)
        pipeline.fit(features[train], None if target is None else target[train])
        _check_spending(pipeline, plan)
        score = _dummy_score(pipeline, plan)
        for _name, model in pipeline.steps:
            _withhold_unreleased(model)
        return DiffPrivLibResult(
            score=score,
            model=base64.b64encode(pickle.dumps(pipeline)).decode("ascii"),
            model_params=[
                DiffPrivLibStep(name=name, **_estimator_json(model)) for name, model in pipeline.steps
            ],
        )


# -- planning ----------------------------------------------------------------------------------------------
def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number")


def _parse_pipeline(text: str, settings: DiffPrivLibSettings) -> list[_RawStep]:
    """The steps of the diffprivlib_logger document, their classes looked up in the allow-list only."""
    if len(text) > settings.max_pipeline_length:
        raise InvalidQueryError(
            f"diffprivlib_json is {len(text)} characters long; the limit is {settings.max_pipeline_length}."
        )
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:
        raise InvalidQueryError(f"diffprivlib_json is not valid JSON: {str(error)[:200]}") from None
    if not isinstance(document, dict) or set(document) != {"module", "version", "pipeline"}:
        raise InvalidQueryError(
            'diffprivlib_json must be an object with the keys "module", "version" and "pipeline" only '
            "(as diffprivlib_logger writes it)."
        )
    if document["module"] != "diffprivlib":
        raise InvalidQueryError('diffprivlib_json: "module" must be "diffprivlib".')
    if document["version"] not in ACCEPTED_VERSIONS:
        raise InvalidQueryError(
            f"diffprivlib_json: version {_shown(document['version'])} is not supported; "
            f"use one of {list(ACCEPTED_VERSIONS)}."
        )
    steps = document["pipeline"]
    if not isinstance(steps, list) or not 1 <= len(steps) <= settings.max_steps:
        raise InvalidQueryError(
            f'diffprivlib_json: "pipeline" must be a list of 1 to {settings.max_steps} steps.'
        )
    raw_steps = [_raw_step(index, step) for index, step in enumerate(steps)]
    _check_structure(raw_steps)
    return raw_steps


def _raw_step(index: int, step: Any) -> _RawStep:
    if not isinstance(step, dict) or set(step) != {"type", "name", "params"}:
        raise InvalidQueryError(
            f'Pipeline step {index} must be an object with the keys "type", "name" and "params" only.'
        )
    kind, name, params = step["type"], step["name"], step["params"]
    class_name = (
        kind[len(_TYPE_PREFIX) :] if isinstance(kind, str) and kind.startswith(_TYPE_PREFIX) else None
    )
    if class_name not in _SPECS:
        allowed = ", ".join(_TYPE_PREFIX + allowed_name for allowed_name in _SPECS)
        raise InvalidQueryError(
            f"Pipeline step {index}: type {_shown(kind)} is not allowed; use one of {allowed}."
        )
    if (
        not isinstance(name, str)
        or not _STEP_NAME.fullmatch(name)
        or "__" in name
        or name in _PIPELINE_ATTRIBUTES
    ):
        raise InvalidQueryError(
            f"Pipeline step {index}: name {_shown(name)} must be 1 to 64 letters, digits, '_' or '-' "
            f"(no '__'), starting with a letter or digit, and not one of {sorted(_PIPELINE_ATTRIBUTES)}."
        )
    if not isinstance(params, dict):
        raise InvalidQueryError(f"Pipeline step '{name}': params must be an object.")
    try:
        decoded = {key: _decoded(value) for key, value in params.items()}
    except _Refused as refusal:
        raise InvalidQueryError(f"Pipeline step '{name}' ({class_name}): {refusal}") from None
    return _RawStep(name, _SPECS[class_name], decoded)


def _decoded(value: Any) -> Any:
    """A parameter value with diffprivlib_logger's tuples restored; no other object is accepted."""
    if isinstance(value, list):
        return [_decoded(item) for item in value]
    if isinstance(value, dict):
        if (
            set(value) == {"_tuple", "_items"}
            and value["_tuple"] is True
            and isinstance(value["_items"], list)
        ):
            return tuple(_decoded(item) for item in value["_items"])
        raise _Refused(
            "objects are not parameter values (only tuples as diffprivlib_logger writes them): "
            f"{_shown(value)}"
        )
    return value


def _names_with(method: str) -> str:
    return ", ".join(name for name, spec in _SPECS.items() if hasattr(spec.model, method))


def _check_structure(steps: list[_RawStep]) -> None:
    names = [step.name for step in steps]
    if len(set(names)) != len(names):
        raise InvalidQueryError(f"Pipeline step names must be distinct: {names}.")
    for step in steps[:-1]:
        if not hasattr(step.spec.model, "transform"):
            raise InvalidQueryError(
                f"Pipeline step '{step.name}' ({step.spec.name}) cannot come before another step: only "
                f"transformers can ({_names_with('transform')})."
            )
    last = steps[-1]
    if not hasattr(last.spec.model, "score"):
        raise InvalidQueryError(
            f"The pipeline cannot end with {last.spec.name}: its last step must be a model with a score "
            f"({_names_with('score')})."
        )


def _column(metadata: Metadata, name: str, role: str) -> AnyColumn:
    column = metadata.columns.get(name)
    if column is None:
        raise InvalidQueryError(
            f"The {role} column {name!r} is not in the dataset; its columns are {list(metadata.columns)}."
        )
    return column


def _features(names: list[str], metadata: Metadata) -> tuple[str, ...]:
    if len(set(names)) != len(names):
        raise InvalidQueryError(f"feature_columns must be distinct: {names}.")
    for name in names:
        column = _column(metadata, name, "feature")
        if not isinstance(column, _NUMERIC_COLUMNS):
            raise InvalidQueryError(
                f"The feature column {name!r} is of type {column.type}; "
                "features must be int, float or boolean columns."
            )
    return tuple(names)


def _target(
    names: list[str] | None, last: _ModelSpec, features: tuple[str, ...], metadata: Metadata
) -> _Target | None:
    if last.target is None:
        if names is not None:
            raise InvalidQueryError(
                f"The pipeline ends with {last.name}, which learns without a target: "
                "set target_columns to null."
            )
        return None
    if names is None or len(names) != 1:
        raise InvalidQueryError(
            f"The pipeline ends with {last.name}, which needs a target: set target_columns to one column."
        )
    [name] = names
    column = _column(metadata, name, "target")
    if name in features:
        raise InvalidQueryError(f"The target column {name!r} cannot also be a feature column.")
    if last.target == "value":
        if not isinstance(column, _VALUE_COLUMNS):
            raise InvalidQueryError(
                f"{last.name} predicts a number: its target column {name!r} must be an int or float column."
            )
        return _Target(name, None, _public_fill(column))
    if not isinstance(column, _CLASS_COLUMNS):
        raise InvalidQueryError(
            f"{last.name} predicts a class: its target column {name!r} must be boolean "
            "or have declared categories."
        )
    classes = (False, True) if isinstance(column, BooleanMetadata) else tuple(sorted(column.categories))
    return _Target(name, classes, _public_fill(column))


def _public_fill(column: AnyColumn) -> Any:
    """The value a missing cell gets when imputing, from the public metadata alone (see the module doc)."""
    match column:
        case StrCategoricalMetadata() | IntCategoricalMetadata():
            return column.categories[0]
        case BooleanMetadata():
            return False
        case IntMetadata() | FloatMetadata():
            return (column.lower + column.upper) / 2
    raise TypeError(f"No fill value for a {type(column).__name__} column")


def _checked_steps(
    raw_steps: list[_RawStep],
    width: int,
    target: _Target | None,
    settings: DiffPrivLibSettings,
    keep_seeds: bool,
) -> tuple[_Step, ...]:
    steps = []
    for raw in raw_steps:
        context = _StepContext(settings, width, target.classes if target else None)
        kwargs = _step_kwargs(raw, context)
        if not keep_seeds:
            kwargs["random_state"] = None  # on private data the noise comes from the secure sampler
        steps.append(_Step(raw.name, raw.spec, kwargs, kwargs["epsilon"]))
        width = raw.spec.output_width(kwargs, width)
    return tuple(steps)


def _step_kwargs(raw: _RawStep, context: _StepContext) -> dict[str, Any]:
    spec = raw.spec
    unknown = sorted(set(raw.params) - set(spec.params))
    if unknown:
        raise InvalidQueryError(
            f"Pipeline step '{raw.name}' ({spec.name}): parameters {unknown} are not allowed; "
            f"the allowed ones are {sorted(spec.params)}."
        )
    kwargs: dict[str, Any] = {}
    for param, check in spec.params.items():
        try:
            kwargs[param] = check(raw.params.get(param, spec.defaults[param]), context)
        except _Refused as refusal:
            raise InvalidQueryError(
                f"Pipeline step '{raw.name}' ({spec.name}): parameter '{param}' {refusal}."
            ) from None
    if spec.check is not None:
        try:
            spec.check(kwargs, context)
        except _Refused as refusal:
            raise InvalidQueryError(f"Pipeline step '{raw.name}' ({spec.name}) {refusal}.") from None
    del kwargs["accountant"]
    return kwargs


# -- running -----------------------------------------------------------------------------------------------
def _arrays(frame: pd.DataFrame, plan: DiffPrivLibPlan) -> tuple[np.ndarray, np.ndarray | None]:
    """Features as float64 and the target, missing values dropped or filled as the plan says."""
    features = frame[list(plan.features)].to_numpy(dtype=np.float64, na_value=np.nan)
    missing = np.isnan(features)
    target, target_missing = (
        (None, None) if plan.target is None else _target_values(frame[plan.target.column], plan.target)
    )
    if plan.feature_fills is not None:
        np.copyto(features, np.broadcast_to(plan.feature_fills, features.shape), where=missing)
        return features, target
    keep = ~missing.any(axis=1)
    if target_missing is not None:
        keep &= ~target_missing
    return features[keep], None if target is None else target[keep]


def _target_values(series: pd.Series, target: _Target) -> tuple[np.ndarray, np.ndarray]:
    """The target with missing values set to the fill value, and where they were missing."""
    if target.classes is None:
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(values)
        values[missing] = target.fill
        return values, missing
    codes = pd.Categorical(series, categories=target.classes).codes
    missing = codes < 0  # missing, or a value outside the declared categories
    codes = np.where(missing, target.classes.index(target.fill), codes)
    return np.asarray(target.classes)[codes], missing


def _fresh_pipeline(plan: DiffPrivLibPlan) -> Pipeline:
    """New estimators, each with an accountant of its own capped at the step's declared budget."""
    return Pipeline(
        [
            (
                step.name,
                step.spec.model(**step.kwargs, accountant=BudgetAccountant(epsilon=step.epsilon, delta=0.0)),
            )
            for step in plan.steps
        ]
    )


def _check_spending(pipeline: Pipeline, plan: DiffPrivLibPlan) -> None:
    for step, (_name, model) in zip(plan.steps, pipeline.steps, strict=True):
        epsilon, delta = model.accountant.total()
        if epsilon > step.epsilon or delta > 0:
            raise RuntimeError(
                f"step {step.name} spent ({epsilon}, {delta}), more than its declared ({step.epsilon}, 0)"
            )


def _dummy_score(pipeline: Pipeline, plan: DiffPrivLibPlan) -> float:
    """The pipeline's score on dummy data from the metadata: free, and no statistic of private data."""
    features, target = _arrays(make_dummy_frame(plan.score_metadata, plan.score_rows, plan.split_seed), plan)
    return float(pipeline.score(features, target))


def _withhold_unreleased(model: BaseEstimator) -> None:
    """Delete the fitted attributes that are not DP outputs, in the model and in the models it holds."""
    released = _SPECS_BY_MODEL[type(model)].released
    for name in [name for name in vars(model) if name.endswith("_") and name not in released]:
        delattr(model, name)
    for value in vars(model).values():
        for inner in value if isinstance(value, list) else [value]:
            if isinstance(inner, BaseEstimator):
                _withhold_unreleased(inner)


def _estimator_json(model: BaseEstimator) -> dict[str, Any]:
    params = model.get_params(deep=False)
    del params["accountant"]
    fitted = {
        name: value for name, value in vars(model).items() if name not in params and name != "accountant"
    }
    return {
        "type": type(model).__name__,
        "params": {name: _to_json(value) for name, value in params.items()},
        "fitted": {name: _to_json(value) for name, value in fitted.items()},
    }


def _to_json(value: Any) -> Any:
    """A parameter or fitted attribute in the tagged JSON of `DiffPrivLibStep`."""
    match value:
        case None | bool() | int() | float() | str():
            return value
        case np.ndarray():
            return {"_ndarray": value.ravel().tolist(), "dtype": value.dtype.str, "shape": list(value.shape)}
        case np.generic():
            return value.item()
        case tuple():
            return {"_tuple": True, "_items": [_to_json(item) for item in value]}
        case list():
            return [_to_json(item) for item in value]
        case Tree():
            return {"_tree": _tree_json(value)}
        case BaseEstimator():
            return {"_estimator": _estimator_json(value)}
    raise TypeError(f"No JSON form for a {type(value).__name__}")


def _tree_json(tree: Tree) -> dict[str, Any]:
    state = tree.__getstate__()
    nodes = state["nodes"]
    return {
        "n_features": int(tree.n_features),
        "n_classes": tree.n_classes.tolist(),
        "n_outputs": int(tree.n_outputs),
        "max_depth": int(state["max_depth"]),
        "nodes": {name: nodes[name].tolist() for name in nodes.dtype.names},
        "values": _to_json(state["values"]),
    }
