"""Parsing the diffprivlib_logger JSON of a request into raw steps, as plain data.

No name in the document is ever looked up in a module: step types are looked up in the allow-list only,
and parameter values may be JSON values and tagged tuples only. Versions 0.6.5 (what the 0.4.1 client
pins) and 0.6.6 (what the server runs) are accepted: the constructors of the allowed classes take the same
parameters with the same meaning in both; other versions may not, so they are refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, NoReturn

from lomas.core.diffprivlib_models import TYPE_PREFIX, tuple_items
from lomas.core.errors import InvalidQueryError
from lomas.server.config import DiffPrivLibSettings
from lomas.server.engines.diffprivlib.allow_list import SPECS, ModelSpec
from lomas.server.engines.diffprivlib.checks import Refused, shown

ACCEPTED_VERSIONS = ("0.6.5", "0.6.6")
_STEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
_PIPELINE_ATTRIBUTES = frozenset({"steps", "memory", "verbose", "transform_input"})


@dataclass(frozen=True)
class RawStep:
    """A step as the request gives it: its allowed class, and its parameters not yet checked."""

    name: str
    spec: ModelSpec
    params: dict[str, Any]


def parse_pipeline(text: str, settings: DiffPrivLibSettings) -> list[RawStep]:
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
            f"diffprivlib_json: version {shown(document['version'])} is not supported; "
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


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number")


def _raw_step(index: int, step: Any) -> RawStep:
    if not isinstance(step, dict) or set(step) != {"type", "name", "params"}:
        raise InvalidQueryError(
            f'Pipeline step {index} must be an object with the keys "type", "name" and "params" only.'
        )
    kind, name, params = step["type"], step["name"], step["params"]
    class_name = (
        kind[len(TYPE_PREFIX) :] if isinstance(kind, str) and kind.startswith(TYPE_PREFIX) else None
    )
    if class_name not in SPECS:
        allowed = ", ".join(TYPE_PREFIX + allowed_name for allowed_name in SPECS)
        raise InvalidQueryError(
            f"Pipeline step {index}: type {shown(kind)} is not allowed; use one of {allowed}."
        )
    if (
        not isinstance(name, str)
        or not _STEP_NAME.fullmatch(name)
        or "__" in name
        or name in _PIPELINE_ATTRIBUTES
    ):
        raise InvalidQueryError(
            f"Pipeline step {index}: name {shown(name)} must be 1 to 64 letters, digits, '_' or '-' "
            f"(no '__'), starting with a letter or digit, and not one of {sorted(_PIPELINE_ATTRIBUTES)}."
        )
    if not isinstance(params, dict):
        raise InvalidQueryError(f"Pipeline step '{name}': params must be an object.")
    try:
        decoded = {key: _decoded(value) for key, value in params.items()}
    except Refused as refusal:
        raise InvalidQueryError(f"Pipeline step '{name}' ({class_name}): {refusal}") from None
    return RawStep(name, SPECS[class_name], decoded)


def _decoded(value: Any) -> Any:
    """A parameter value with diffprivlib_logger's tuples restored; no other object is accepted."""
    if isinstance(value, list):
        return [_decoded(item) for item in value]
    if isinstance(value, dict):
        items = tuple_items(value)
        if items is not None:
            return tuple(_decoded(item) for item in items)
        raise Refused(
            "objects are not parameter values (only tuples as diffprivlib_logger writes them): "
            f"{shown(value)}"
        )
    return value


def _names_with(method: str) -> str:
    return ", ".join(name for name, spec in SPECS.items() if hasattr(spec.model, method))


def _check_structure(steps: list[RawStep]) -> None:
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
