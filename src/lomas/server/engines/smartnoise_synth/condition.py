"""Conditions on the samples: a small SQL WHERE grammar, parsed here and evaluated with pandas.

Comparisons of output columns with literals, IN lists, IS NULL, BETWEEN, and AND/OR/NOT; literals are typed
against the column they meet. The parsed condition is applied to the samples with vectorised pandas
operations; client text never reaches an evaluator.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from lomas.core.errors import InvalidQueryError
from lomas.core.metadata import AnyColumn, ColumnType
from lomas.server.engines.smartnoise_synth.checkers import shown
from lomas.server.engines.smartnoise_synth.columns import naive_utc

_MAX_DEPTH = 20


@dataclass(frozen=True)
class _Comparison:
    column: str
    op: str
    value: Any


@dataclass(frozen=True)
class _Membership:
    column: str
    values: tuple[Any, ...]
    negated: bool


@dataclass(frozen=True)
class _NullTest:
    column: str
    negated: bool


@dataclass(frozen=True)
class _Not:
    operand: Condition


@dataclass(frozen=True)
class _Junction:
    op: Literal["and", "or"]
    operands: tuple[Condition, ...]


Condition = _Comparison | _Membership | _NullTest | _Not | _Junction

_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FLIPPED = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<string>'(?:[^']|'')*')
      | (?P<name>"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><=|>=|<>|!=|==|=|<|>)
      | (?P<punct>[(),\[\]])
    )""",
    re.VERBOSE,
)
_KEYWORDS = ("AND", "OR", "NOT", "IN", "IS", "NULL", "TRUE", "FALSE", "BETWEEN")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    position: int


def _tokens(text: str) -> list[_Token]:
    tokens, position = [], 0
    while text[position:].strip():
        match = _TOKEN.match(text, position)
        if match is None:
            where = len(text) - len(text[position:].lstrip())
            raise InvalidQueryError(f"condition: unexpected character {text[where]!r} at position {where}.")
        kind = match.lastgroup or ""
        value, start = match.group(kind), match.start(kind)
        if kind == "name" and not value.startswith('"') and value.upper() in _KEYWORDS:
            kind, value = "keyword", value.upper()
        tokens.append(_Token(kind, value, start))
        position = match.end()
    return tokens


class _ConditionParser:
    """Recursive descent over the tokens; literals are typed against the output column they meet."""

    def __init__(self, text: str, columns: Mapping[str, AnyColumn]) -> None:
        self._tokens = _tokens(text)
        self._at = 0
        self._columns = columns

    def parse(self) -> Condition:
        if not self._tokens:
            raise InvalidQueryError("condition is empty.")
        condition = self._disjunction(0)
        if self._at < len(self._tokens):
            self._fail("unexpected text")
        return condition

    # grammar
    def _disjunction(self, depth: int) -> Condition:
        operands = [self._conjunction(depth)]
        while self._keyword("OR"):
            operands.append(self._conjunction(depth))
        return operands[0] if len(operands) == 1 else _Junction("or", tuple(operands))

    def _conjunction(self, depth: int) -> Condition:
        operands = [self._negation(depth)]
        while self._keyword("AND"):
            operands.append(self._negation(depth))
        return operands[0] if len(operands) == 1 else _Junction("and", tuple(operands))

    def _negation(self, depth: int) -> Condition:
        if depth > _MAX_DEPTH:
            self._fail(f"nested more than {_MAX_DEPTH} levels deep")
        if self._keyword("NOT"):
            return _Not(self._negation(depth + 1))
        if self._punct("("):
            inner = self._disjunction(depth + 1)
            self._expect_punct(")")
            return inner
        return self._predicate()

    def _predicate(self) -> Condition:
        token = self._peek()
        if token is not None and token.kind != "name":
            value = self._literal()
            op = self._operator()
            column = self._column()
            return _Comparison(column, _FLIPPED[op], self._typed(column, value))
        column = self._column()
        if self._keyword("IS"):
            negated = self._keyword("NOT")
            self._expect_keyword("NULL")
            return _NullTest(column, negated)
        negated = self._keyword("NOT")
        if self._keyword("IN"):
            return _Membership(column, self._list(column), negated)
        if self._keyword("BETWEEN"):
            low = self._typed(column, self._literal())
            self._expect_keyword("AND")
            high = self._typed(column, self._literal())
            between = _Junction("and", (_Comparison(column, ">=", low), _Comparison(column, "<=", high)))
            return _Not(between) if negated else between
        if negated:
            self._fail("expected IN or BETWEEN after NOT")
        op = self._operator()
        return _Comparison(column, op, self._typed(column, self._literal()))

    def _list(self, column: str) -> tuple[Any, ...]:
        closing = (
            ")" if self._punct("(") else "]" if self._punct("[") else self._fail("expected a list after IN")
        )
        values = [self._typed(column, self._literal())]
        while self._punct(","):
            values.append(self._typed(column, self._literal()))
        self._expect_punct(closing)
        return tuple(values)

    # terminals
    def _column(self) -> str:
        token = self._next("a column name")
        name = token.text[1:-1].replace('""', '"') if token.text.startswith('"') else token.text
        if token.kind != "name" or name not in self._columns:
            self._fail(f"unknown column {name!r}; the samples have {list(self._columns)}", token)
        return name

    def _operator(self) -> str:
        token = self._next("a comparison")
        if token.kind != "op":
            self._fail("expected a comparison (=, !=, <, <=, >, >=), IN, BETWEEN or IS", token)
        return {"==": "=", "<>": "!="}.get(token.text, token.text)

    def _literal(self) -> Any:
        token = self._next("a value")
        if token.kind == "number":
            number = float(token.text)
            if not math.isfinite(number):
                self._fail("numbers must be finite", token)
            return int(token.text) if re.fullmatch(r"[-+]?\d+", token.text) else number
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'")
        if token.kind == "keyword" and token.text in ("TRUE", "FALSE"):
            return token.text == "TRUE"
        return self._fail("expected a number, a 'quoted' string, TRUE or FALSE", token)

    def _typed(self, column: str, value: Any) -> Any:
        """The literal in the column's type, or a refusal that names both."""
        match self._columns[column].type:  # categorical columns have the type of their values
            case ColumnType.STRING:
                if isinstance(value, str):
                    return value
            case ColumnType.BOOLEAN:
                if isinstance(value, bool):
                    return value
            case ColumnType.INT | ColumnType.FLOAT:
                if isinstance(value, int | float) and not isinstance(value, bool):
                    return value
            case ColumnType.DATETIME:
                if isinstance(value, str):
                    with contextlib.suppress(ValueError):
                        return naive_utc(value)
        return self._fail(
            f"column {column!r} ({self._columns[column].type}) cannot be compared with {shown(value)}"
        )

    # token helpers
    def _peek(self) -> _Token | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def _next(self, expected: str) -> _Token:
        token = self._peek()
        if token is None:
            self._fail(f"expected {expected} at the end")
        self._at += 1
        return token  # type: ignore[return-value]

    def _accept(self, kind: str, text: str) -> bool:
        """Consume the next token if it is this keyword or punctuation mark."""
        token = self._peek()
        if token is not None and token.kind == kind and token.text == text:
            self._at += 1
            return True
        return False

    def _keyword(self, word: str) -> bool:
        return self._accept("keyword", word)

    def _punct(self, mark: str) -> bool:
        return self._accept("punct", mark)

    def _expect_keyword(self, word: str) -> None:
        if not self._keyword(word):
            self._fail(f"expected {word}")

    def _expect_punct(self, mark: str) -> None:
        if not self._punct(mark):
            self._fail(f"expected {mark!r}")

    def _fail(self, problem: str, token: _Token | None = None) -> Any:
        token = token or self._peek()
        where = f" at position {token.position}" if token is not None else ""
        raise InvalidQueryError(f"condition: {problem}{where}.")


def parse_condition(text: str, columns: Mapping[str, AnyColumn]) -> Condition:
    """The condition over the output `columns`; anything else is an `InvalidQueryError`."""
    return _ConditionParser(text, columns).parse()


def mask(condition: Condition, samples: pd.DataFrame) -> np.ndarray:
    """Rows that meet the condition; a comparison with a missing value is false."""
    match condition:
        case _Comparison(column, op, value):
            result = _COMPARISONS[op](samples[column], value)
        case _Membership(column, values, negated):
            result = samples[column].isin(values)
            if negated:
                result = ~result & samples[column].notna()
        case _NullTest(column, negated):
            result = samples[column].notna() if negated else samples[column].isna()
        case _Not(operand):
            return ~mask(operand, samples)
        case _Junction(op, operands):
            combine = np.logical_and if op == "and" else np.logical_or
            return np.asarray(functools.reduce(combine, (mask(operand, samples) for operand in operands)))
    return pd.Series(result).to_numpy(dtype=bool, na_value=False)
