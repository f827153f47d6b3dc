"""Planning against the metadata: the plan's parts, the feature and target columns, their public fill
values, and the steps' checked constructor arguments. Nothing here reads data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lomas.core.errors import InvalidQueryError
from lomas.core.metadata import (
    AnyColumn,
    BooleanMetadata,
    FloatMetadata,
    IntCategoricalMetadata,
    IntMetadata,
    Metadata,
    StrCategoricalMetadata,
)
from lomas.server.config import DiffPrivLibSettings
from lomas.server.engines.base import Cost
from lomas.server.engines.diffprivlib.allow_list import ModelSpec
from lomas.server.engines.diffprivlib.checks import Refused, StepContext
from lomas.server.engines.diffprivlib.pipeline import RawStep

_NUMERIC_COLUMNS = (IntMetadata, IntCategoricalMetadata, FloatMetadata, BooleanMetadata)
_CLASS_COLUMNS = (StrCategoricalMetadata, IntCategoricalMetadata, BooleanMetadata)
_VALUE_COLUMNS = (IntMetadata, IntCategoricalMetadata, FloatMetadata)


@dataclass(frozen=True)
class Step:
    name: str
    spec: ModelSpec
    kwargs: Mapping[str, Any]  # checked constructor arguments, without the accountant
    epsilon: float


@dataclass(frozen=True)
class Target:
    column: str
    classes: tuple[Any, ...] | None  # sorted declared categories of a class target; None for a numeric one
    fill: Any  # the value a missing target gets when imputing


@dataclass(frozen=True)
class DiffPrivLibPlan:
    steps: tuple[Step, ...]
    features: tuple[str, ...]
    feature_fills: np.ndarray | None  # None: rows with missing values are dropped
    target: Target | None
    test_size: float
    split_seed: int
    score_metadata: Metadata  # the metadata of the used columns, for the dummy score
    score_rows: int
    cost: Cost


def _column(metadata: Metadata, name: str, role: str) -> AnyColumn:
    column = metadata.columns.get(name)
    if column is None:
        raise InvalidQueryError(
            f"The {role} column {name!r} is not in the dataset; its columns are {list(metadata.columns)}."
        )
    return column


def feature_columns(names: list[str], metadata: Metadata) -> tuple[str, ...]:
    """The feature columns, each a numeric or boolean column of the dataset."""
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


def target_column(
    names: list[str] | None, last: ModelSpec, features: tuple[str, ...], metadata: Metadata
) -> Target | None:
    """The target column the last step learns from, or None if it learns without one."""
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
        return Target(name, None, public_fill(column))
    if not isinstance(column, _CLASS_COLUMNS):
        raise InvalidQueryError(
            f"{last.name} predicts a class: its target column {name!r} must be boolean "
            "or have declared categories."
        )
    classes = (False, True) if isinstance(column, BooleanMetadata) else tuple(sorted(column.categories))
    return Target(name, classes, public_fill(column))


def public_fill(column: AnyColumn) -> Any:
    """The value a missing cell gets when imputing, from the public metadata alone (see the package doc)."""
    match column:
        case StrCategoricalMetadata() | IntCategoricalMetadata():
            return column.categories[0]
        case BooleanMetadata():
            return False
        case IntMetadata() | FloatMetadata():
            return (column.lower + column.upper) / 2
    raise TypeError(f"No fill value for a {type(column).__name__} column")


def checked_steps(
    raw_steps: list[RawStep],
    width: int,
    target: Target | None,
    settings: DiffPrivLibSettings,
    keep_seeds: bool,
) -> tuple[Step, ...]:
    """The steps with their parameters checked; seeds are kept on dummy data only."""
    steps = []
    for raw in raw_steps:
        context = StepContext(settings, width, target.classes if target else None)
        kwargs = _step_kwargs(raw, context)
        if not keep_seeds:
            kwargs["random_state"] = None  # on private data the noise comes from the secure sampler
        steps.append(Step(raw.name, raw.spec, kwargs, kwargs["epsilon"]))
        width = raw.spec.output_width(kwargs, width)
    return tuple(steps)


def _step_kwargs(raw: RawStep, context: StepContext) -> dict[str, Any]:
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
        except Refused as refusal:
            raise InvalidQueryError(
                f"Pipeline step '{raw.name}' ({spec.name}): parameter '{param}' {refusal}."
            ) from None
    if spec.check is not None:
        try:
            spec.check(kwargs, context)
        except Refused as refusal:
            raise InvalidQueryError(f"Pipeline step '{raw.name}' ({spec.name}) {refusal}.") from None
    del kwargs["accountant"]
    return kwargs
