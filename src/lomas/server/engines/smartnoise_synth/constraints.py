"""Column constraints: smartnoise_synth_logger JSON, parsed as data against an allow-list of transformers.

The JSON is that of lomas-client 0.4.1 (snsynth 1.0.4) or of our client (1.0.8). No name in it is ever
looked up in a module: each transformer class and parameter must be on the allow-list, and transformers
that would spend budget on their own (StandardScaler, bounds to be inferred) are refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lomas.core.errors import InvalidQueryError
from lomas.core.requests import SSYNTH_CONSTRAINTS_MODULE, SSYNTH_TRANSFORMER_PREFIX
from lomas.server.config import SmartnoiseSynthSettings
from lomas.server.engines.smartnoise_synth.checkers import (
    AllowList,
    Checker,
    Refused,
    flag,
    integer,
    no_budget,
    null,
    one_of,
    optional,
    real,
    shown,
)

ACCEPTED_VERSIONS = ("1.0.4", "1.0.8")  # snsynth of lomas-client 0.4.1, and of this server
WHOLE_COLUMN = ("DropTransformer", "AnonymizationTransformer")  # never read the values; not in chains
_MAX_CHAIN = 4
_ALIASES = ("categorical", "ordinal", "continuous")
_REFUSED_TRANSFORMERS = {
    "StandardScaler": "always spends budget on preprocessing; use MinMaxTransformer",
    "TableTransformer": "is a table transformer, not a column transformer",
    "NoTransformer": "is a table transformer, not a column transformer",
}


@dataclass(frozen=True)
class Step:
    """One allow-listed transformer class and its checked parameters."""

    name: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Chain:
    steps: tuple[Step, ...]


Constraint = str | Step | Chain  # "categorical"/"ordinal"/"continuous", a transformer, or a chain of them


def transformer_checkers(s: SmartnoiseSynthSettings) -> dict[str, dict[str, Checker]]:
    """The allow-list of column transformers and their parameters (as smartnoise_synth_logger writes them)."""
    bound = optional(real(-math.inf, math.inf))
    bounded = {"lower": bound, "upper": bound, "nullable": flag, "epsilon": no_budget, "odometer": null}
    return {
        "LabelTransformer": {"nullable": flag},
        "OneHotEncoder": {},
        "MinMaxTransformer": {**bounded, "negative": flag},
        "BinTransformer": {**bounded, "bins": integer(2, s.max_bins, "max_bins")},
        "LogTransformer": {},
        "ClampTransformer": {"lower": bound, "upper": bound},
        "DropTransformer": {},
        "AnonymizationTransformer": {"fake": one_of(*s.faker_providers)},
    }


def parse_constraints(text: str, checkers: AllowList, max_length: int) -> dict[str, Constraint]:
    """The constraint of each column named in the JSON; refusals become `InvalidQueryError`."""
    if len(text) > max_length:
        raise InvalidQueryError(f"constraints is {len(text)} characters long; the limit is {max_length}.")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise InvalidQueryError(f"constraints is not valid JSON: {error}") from None
    if not isinstance(body, dict) or body.get("module") != SSYNTH_CONSTRAINTS_MODULE:
        raise InvalidQueryError(
            f'constraints must be smartnoise_synth_logger JSON with "module": "{SSYNTH_CONSTRAINTS_MODULE}".'
        )
    if body.get("version") not in ACCEPTED_VERSIONS:
        raise InvalidQueryError(
            f"constraints were written for smartnoise-synth {shown(body.get('version'))}; "
            f"accepted: {list(ACCEPTED_VERSIONS)}."
        )
    constraints = body.get("constraints")
    if not isinstance(constraints, dict):
        raise InvalidQueryError(
            'constraints must have a "constraints" object mapping columns to constraints.'
        )
    parsed = {}
    for column, value in constraints.items():
        try:
            parsed[column] = _constraint(value, checkers)
        except Refused as refused:
            raise InvalidQueryError(f"constraints: column {column!r}: {refused}") from None
    return parsed


def _constraint(value: Any, checkers: AllowList) -> Constraint:
    if isinstance(value, str):
        return _named_constraint(value, checkers)
    if not isinstance(value, dict) or set(value) != {"type", "params"}:
        raise Refused('must be a string or an object {"type": ..., "params": ...}')
    name = _transformer_name(value["type"])
    if name == "ChainTransformer":
        steps = value["params"]
        if not isinstance(steps, list) or not 1 <= len(steps) <= _MAX_CHAIN:
            raise Refused(f"ChainTransformer takes a list of 1 to {_MAX_CHAIN} transformers")
        return Chain(tuple(_chained_step(step, checkers) for step in steps))
    return _step(name, value["params"], checkers)


def _named_constraint(value: str, checkers: AllowList) -> Constraint:
    """snsynth's string constraints: a type alias, "drop", a transformer class, or a Faker method."""
    if value.lower() in _ALIASES:
        return value.lower()
    if value.lower() == "drop":
        return Step("DropTransformer", {})
    if value in checkers or value in _REFUSED_TRANSFORMERS:
        return _step(value, {}, checkers)
    if _is_provider(value, checkers):
        return Step("AnonymizationTransformer", {"fake": value})
    raise Refused(
        f"{shown(value)} is not {', '.join(_ALIASES)}, drop, an allowed transformer ({', '.join(checkers)}) "
        "or an allowed Faker method"
    )


def _is_provider(value: str, checkers: AllowList) -> bool:
    try:
        checkers["AnonymizationTransformer"]["fake"](value)
    except Refused:
        return False
    return True


def _transformer_name(tag: Any) -> str:
    if not isinstance(tag, str) or not tag.startswith(SSYNTH_TRANSFORMER_PREFIX):
        raise Refused(f'"type" must be "{SSYNTH_TRANSFORMER_PREFIX}<transformer class>", not {shown(tag)}')
    return tag[len(SSYNTH_TRANSFORMER_PREFIX) :]


def _chained_step(value: Any, checkers: AllowList) -> Step:
    if not isinstance(value, dict) or set(value) != {"type", "params"}:
        raise Refused('ChainTransformer items must be objects {"type": ..., "params": ...}')
    step = _step(_transformer_name(value["type"]), value["params"], checkers)
    if step.name in WHOLE_COLUMN:
        raise Refused(f"{step.name} cannot be part of a ChainTransformer")
    return step


def _step(name: str, params: Any, checkers: AllowList) -> Step:
    if name in _REFUSED_TRANSFORMERS:
        raise Refused(f"{name} {_REFUSED_TRANSFORMERS[name]}")
    allowed = checkers.get(name)
    if allowed is None:
        raise Refused(
            f"unknown transformer {shown(name)}; allowed: {', '.join([*checkers, 'ChainTransformer'])}"
        )
    if not isinstance(params, dict):
        raise Refused(f"{name} params must be an object")
    checked = {}
    for key, value in params.items():
        if key not in allowed:
            raise Refused(f"{name} takes no parameter {shown(key)}; allowed: {sorted(allowed)}")
        try:
            checked[key] = allowed[key](value)
        except Refused as refused:
            raise Refused(f"{name} parameter {key!r} {refused}") from None
    if name == "AnonymizationTransformer" and "fake" not in checked:
        raise Refused("AnonymizationTransformer needs a Faker method name in 'fake'")
    if name == "ClampTransformer" and checked.get("lower") is None and checked.get("upper") is None:
        raise Refused("ClampTransformer needs a lower or an upper bound")
    return Step(name, checked)
