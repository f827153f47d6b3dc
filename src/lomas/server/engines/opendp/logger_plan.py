"""The vocabulary of the opendp_logger pipelines: allow-listed constructors and the plan `parse` returns.

A `Constructor` is one entry of the allow-lists (`logger_constructors`): its wire name, what it returns,
its parameters and the OpenDP function that builds it. A `Param` checks its value with a `Check`
(`logger_checks`). `parse` (`logger_ast`) turns a request into `Call`/`Then` nodes; `build` runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lomas.core.errors import InvalidQueryError

SEPARATOR = ","  # the server feeds the dataset as CSV text with this separator, without header


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


@dataclass(frozen=True)
class Walk:
    """What the checks need to know besides the value: the dialect, the dataset's columns, the limits, and
    the parser of nested constructors (given by `logger_ast`, so that the checks need not import it)."""

    dialect: Dialect
    columns: tuple[str, ...]
    limits: AstLimits
    parse_node: Callable[[Any, Walk, str], Node]


Check = Callable[[Any, Walk, str], Any]


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


def node_category(node: Node) -> Category:
    return node.constructor.category


def node_name(node: Node) -> str:
    """The constructor's name as the request wrote it."""
    name = node.constructor.name
    return f"then_{name.removeprefix('make_')}" if isinstance(node, Then) else name


# -- messages ----------------------------------------------------------------------------------------------
def refuse(path: str, message: str) -> InvalidQueryError:
    return InvalidQueryError(f"Invalid OpenDP pipeline at {path}: {message}")


def describe(value: Any) -> str:
    """A short description of a request value for messages (never a long echo of the payload)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"a string of {len(value)} characters"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
