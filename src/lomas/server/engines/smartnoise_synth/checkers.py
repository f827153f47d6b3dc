"""Value checkers for the allow-lists of `synth_params` and of transformer parameters.

A checker returns the value it accepts (possibly normalised) or raises `Refused`, whose message completes
"<what> ...", so that the caller can say which parameter of which column or synthesizer it was.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

Checker = Callable[[Any], Any]
AllowList = Mapping[str, Mapping[str, Checker]]  # the parameter checkers of each synthesizer or transformer


class Refused(Exception):
    """A value outside the allow-list; the message completes "<what> ..."."""


def shown(value: Any) -> str:
    """A short JSON rendering of a client value, for error messages."""
    return json.dumps(value, default=str)[:60]


def integer(low: int, high: int, limit: str | None = None) -> Checker:
    where = f" (server limit {limit})" if limit else ""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Refused(f"must be an integer from {low} to {high}{where}, not {shown(value)}")
        return value

    return check


def real(low: float, high: float, *, low_open: bool = False) -> Checker:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise Refused(f"must be a finite number, not {shown(value)}")
        if value < low or value > high or (low_open and value == low):
            side = "above" if low_open else "from"
            raise Refused(f"must be a number {side} {low} up to {high}, not {shown(value)}")
        return float(value)

    return check


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Refused(f"must be true or false, not {shown(value)}")
    return value


def one_of(*choices: Any) -> Checker:
    def check(value: Any) -> Any:
        if not any(type(value) is type(choice) and value == choice for choice in choices):
            raise Refused(f"must be one of {json.dumps(list(choices))}, not {shown(value)}")
        return value

    return check


def optional(checker: Checker) -> Checker:
    return lambda value: None if value is None else checker(value)


def widths(max_layers: int, max_width: int) -> Checker:
    width = integer(1, max_width, "max_layer_width")

    def check(value: Any) -> tuple[int, ...]:
        if not isinstance(value, list | tuple) or not 1 <= len(value) <= max_layers:
            raise Refused(f"must be a list of 1 to {max_layers} layer widths (server limit max_layers)")
        return tuple(width(item) for item in value)

    return check


def no_budget(value: Any) -> float:
    """A transformer's own epsilon: the server never spends budget on preprocessing."""
    if value is not None and (isinstance(value, bool) or value != 0):
        raise Refused(f"must be 0 or null (preprocessing spends no budget here), not {shown(value)}")
    return 0.0


def null(value: Any) -> None:
    if value is not None:
        raise Refused(f"must be null, not {shown(value)}")
