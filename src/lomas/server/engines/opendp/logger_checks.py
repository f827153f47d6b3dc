"""The checks of constructor arguments: each takes a request value, refuses it or returns it checked.

A check is called with the value, the `Walk` (dialect, dataset columns, limits) and the path of the value
in the request, for messages. Factories (`int_in`, `optional`, `type_name`, `node_of`) make checks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from lomas.server.engines.opendp.logger_plan import (
    SEPARATOR,
    Category,
    Check,
    Node,
    Walk,
    describe,
    node_category,
    node_name,
    refuse,
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite_number(value: Any, walk: Walk, path: str) -> int | float:
    if not _is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
        raise refuse(path, f"expected a finite number, got {describe(value)}.")
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise refuse(path, "the integer does not fit in 64 bits.")
    return value


def non_negative_float(value: Any, walk: Walk, path: str) -> float:
    number = finite_number(value, walk, path)
    if number < 0:
        raise refuse(path, "expected a number >= 0.")
    return float(number)


def probability(value: Any, walk: Walk, path: str) -> float:
    number = finite_number(value, walk, path)
    if not 0 <= number < 1:
        raise refuse(path, "expected a number in [0, 1).")
    return float(number)


def int_in(lower: int, upper: int) -> Check:
    def check(value: Any, walk: Walk, path: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not lower <= value <= upper:
            raise refuse(path, f"expected an integer between {lower} and {upper}, got {describe(value)}.")
        return value

    return check


def size(value: Any, walk: Walk, path: str) -> int:
    return int_in(0, walk.limits.max_size)(value, walk, path)


def boolean(value: Any, walk: Walk, path: str) -> bool:
    if not isinstance(value, bool):
        raise refuse(path, f"expected true or false, got {describe(value)}.")
    return value


def scalar(value: Any, walk: Walk, path: str) -> str | int | float | bool:
    if isinstance(value, (str, bool)):
        return value
    if not _is_number(value):
        raise refuse(path, f"expected a string, a number or a boolean, got {describe(value)}.")
    return finite_number(value, walk, path)


def optional(check: Check) -> Check:
    def optional(value: Any, walk: Walk, path: str) -> Any:
        return None if value is None else check(value, walk, path)

    return optional


def items(value: Any, path: str) -> list[Any]:
    """The items of a JSON array or of an opendp_logger `{"_type": "list"|"tuple", "_items": [...]}`."""
    if (
        isinstance(value, dict)
        and value.get("_type") in ("list", "tuple")
        and set(value) == {"_type", "_items"}
    ):
        value = value["_items"]
    if not isinstance(value, list):
        raise refuse(path, f"expected a list, got {describe(value)}.")
    return value


def categories(value: Any, walk: Walk, path: str) -> list[str | int | bool]:
    values = items(value, path)
    for index, item in enumerate(values):
        if not isinstance(item, (str, int)):
            raise refuse(
                f"{path}[{index}]", f"a category is a string, an integer or a boolean, not {describe(item)}."
            )
    if len({type(item) for item in values}) > 1:
        raise refuse(path, "all categories must have the same type.")
    return [scalar(item, walk, path) for item in values]  # type: ignore[misc]  # type checked above


def bounds(value: Any, walk: Walk, path: str) -> tuple[int | float, int | float]:
    values = items(value, path)
    if len(values) != 2:
        raise refuse(path, f"bounds are [lower, upper], got {len(values)} values.")
    lower, upper = (finite_number(item, walk, f"{path}[{index}]") for index, item in enumerate(values))
    return lower, upper


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PYTHON_TYPE_NAMES = {"int": "i32", "float": "f64", "str": "String"}  # as OpenDP reads Python types


def type_name(allowed: frozenset[str], rename: Mapping[str, str] | None = None) -> Check:
    """A type name from `allowed`, as a string or an opendp_logger `{"_type": "type", "name": ...}`."""

    def type_name(value: Any, walk: Walk, path: str) -> str:
        if isinstance(value, dict) and value.get("_type") == "type" and set(value) == {"_type", "name"}:
            value = value["name"]
        if not isinstance(value, str):
            raise refuse(path, f"expected a type name, got {describe(value)}.")
        name = _IDENTIFIER.sub(lambda match: _PYTHON_TYPE_NAMES.get(match.group(), match.group()), value)
        if name not in allowed:
            raise refuse(path, f"type {value!r} is not allowed here; use one of {sorted(allowed)}.")
        return (rename or {}).get(name, name)

    return type_name


def node_of(*allowed: Category) -> Check:
    """A nested constructor (domain, metric, transformation...) of one of `categories`, parsed."""

    def node(value: Any, walk: Walk, path: str) -> Node:
        parsed = walk.parse_node(value, walk, path)
        if node_category(parsed) not in allowed:
            wanted = " or ".join(allowed)
            raise refuse(path, f"expected a {wanted}, got the {node_category(parsed)} {node_name(parsed)}.")
        return parsed

    return node


def separator(value: Any, walk: Walk, path: str) -> str:
    if value != SEPARATOR:
        raise refuse(path, f"the dataset is fed as CSV text: separator must be {SEPARATOR!r}.")
    return value


def col_names(value: Any, walk: Walk, path: str) -> list[str]:
    names = items(value, path)
    if tuple(names) != walk.columns:
        raise refuse(
            path,
            f"col_names must be the dataset's columns, in the order of its metadata: {list(walk.columns)}.",
        )
    return list(names)


def column_key(value: Any, walk: Walk, path: str) -> str:
    if value not in walk.columns:
        raise refuse(path, f"unknown column {describe(value)}; the columns are {list(walk.columns)}.")
    return value
