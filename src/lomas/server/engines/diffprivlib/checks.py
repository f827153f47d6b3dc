"""Checkers for the parameter values of allowed steps.

Each checker takes the value the request gives (or the class default) and the step's context, and returns
the value to pass to the constructor, or raises `Refused` with a message that completes
"parameter 'x' ...".
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lomas.core.diffprivlib_models import ACCOUNTANT
from lomas.server.config import DiffPrivLibSettings

_MAX_SEED = 2**32 - 1  # numpy's RandomState takes seeds up to this


class Refused(Exception):
    """A parameter value outside the allow-list; the message completes "parameter 'x' ..."."""


@dataclass(frozen=True)
class StepContext:
    """What a parameter is checked against: the limits, the step's input width, the target's classes."""

    settings: DiffPrivLibSettings
    width: int
    classes: tuple[Any, ...] | None


Checker = Callable[[Any, StepContext], Any]


def shown(value: Any) -> str:
    """The caller's own value, cut short, to say which one was refused."""
    return json.dumps(value)[:40]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused(f"must be a finite number, not {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        number = math.inf
    if not math.isfinite(number):
        raise Refused(f"must be a finite number, not {shown(value)}")
    return number


def positive(value: Any, _ctx: StepContext) -> float:
    number = _number(value)
    if number <= 0:
        raise Refused(f"must be positive, not {shown(value)}")
    return number


def epsilon(value: Any, ctx: StepContext) -> float:
    number = positive(value, ctx)
    if number < ctx.settings.min_epsilon:
        raise Refused(f"must be at least {ctx.settings.min_epsilon} (the server's min_epsilon), not {shown(value)}")
    return number


def non_negative(value: Any, _ctx: StepContext) -> float:
    number = _number(value)
    if number < 0:
        raise Refused(f"must not be negative, not {shown(value)}")
    return number


def _required(value: Any) -> None:
    if value is None:
        raise Refused(
            "is required: declare it, so that nothing is computed from the private data to replace it"
        )


def data_norm(value: Any, ctx: StepContext) -> float:
    _required(value)
    return positive(value, ctx)


def flag(value: Any, _ctx: StepContext) -> bool:
    if not isinstance(value, bool):
        raise Refused(f"must be true or false, not {shown(value)}")
    return value


def seed(value: Any, _ctx: StepContext) -> int | None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SEED
    ):
        raise Refused(f"must be null or an integer from 0 to {_MAX_SEED}, not {shown(value)}")
    return value


def accountant(value: Any, _ctx: StepContext) -> None:
    """The server gives every step an accountant of its own; the request may only leave it to the server."""
    if value is not None and value != ACCOUNTANT:
        raise Refused(
            f'must be null or "{ACCOUNTANT}" (the server supplies a fresh one), not {shown(value)}'
        )


def zero(value: Any, _ctx: StepContext) -> int:
    if isinstance(value, bool) or value != 0:
        raise Refused(f"must be 0, not {shown(value)}")
    return 0


def single_job(value: Any, _ctx: StepContext) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value != 1):
        raise Refused(f"must be null or 1 (the server runs one job per query), not {shown(value)}")
    return value


def null(value: Any, _ctx: StepContext) -> None:
    if value is not None:
        raise Refused(f"must be null, not {shown(value)}")


def int_in(low: int, limit: str) -> Checker:
    """An integer from `low` to the server setting named `limit`."""

    def check(value: Any, ctx: StepContext) -> int:
        high = getattr(ctx.settings, limit)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Refused(
                f"must be an integer from {low} to {high} (server limit {limit}), not {shown(value)}"
            )
        return value

    return check


def _bound_side(value: Any, width: int) -> float | tuple[float, ...]:
    if isinstance(value, list | tuple):
        if len(value) != width:
            raise Refused(f"must give {width} values per side (one per input column), not {len(value)}")
        return tuple(_number(item) for item in value)
    return _number(value)


def _bounds_of_width(value: Any, width: int) -> tuple[Any, Any]:
    _required(value)
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise Refused(f"must be a pair (lower, upper), not {shown(value)}")
    lower, upper = (_bound_side(side, width) for side in value)
    if np.any(np.asarray(lower) > np.asarray(upper)):
        raise Refused("must have each lower bound at most its upper bound")
    return lower, upper


def bounds(value: Any, ctx: StepContext) -> tuple[Any, Any]:
    return _bounds_of_width(value, ctx.width)


def target_bounds(value: Any, _ctx: StepContext) -> tuple[Any, Any]:
    return _bounds_of_width(value, 1)


def n_components(value: Any, ctx: StepContext) -> int | None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ctx.width
    ):
        raise Refused(
            f"must be null or an integer from 1 to {ctx.width} (the input width), not {shown(value)}"
        )
    return value


def classes(value: Any, ctx: StepContext) -> tuple[Any, ...]:
    _required(value)
    assert ctx.classes is not None  # steps that take classes need a class target, checked before
    if not isinstance(value, list | tuple) or list(value) != list(ctx.classes):
        raise Refused(f"must be the sorted categories of the target column: {json.dumps(list(ctx.classes))}")
    return ctx.classes


def priors(value: Any, ctx: StepContext) -> tuple[float, ...]:
    """Required: without them GaussianNB derives its priors from noisy class counts that diffprivlib
    forces to sum to the exact number of training rows, so the model would reveal that number."""
    _required(value)
    assert ctx.classes is not None
    if not isinstance(value, list | tuple) or len(value) != len(ctx.classes):
        raise Refused(f"must be a list of {len(ctx.classes)} probabilities, one per class")
    probabilities = tuple(non_negative(item, ctx) for item in value)
    if not math.isclose(math.fsum(probabilities), 1.0):
        raise Refused("must sum to 1")
    return probabilities


def tree_size(kwargs: Mapping[str, Any], ctx: StepContext) -> None:
    """The whole step, once its parameters are checked: trees no larger than the server allows."""
    nodes = kwargs.get("n_estimators", 1) * (2 ** (kwargs["max_depth"] + 1) - 1)
    if nodes > ctx.settings.max_tree_nodes:
        raise Refused(
            f"asks for {nodes} tree nodes (n_estimators x (2^(max_depth+1) - 1)); "
            f"the limit is {ctx.settings.max_tree_nodes}: lower n_estimators or max_depth"
        )
