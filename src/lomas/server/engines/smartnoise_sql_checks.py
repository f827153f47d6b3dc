"""What the SmartNoise-SQL engine refuses before any data is read, and why.

SmartNoise-SQL parses the researcher's query and writes the SQL that runs where the data is: DuckDB
over memory or a Parquet file, or PostgreSQL (`WITH df AS (...) <query>`). Two gaps open there.

* Its parser does not read SQL as these databases do. Its lexer takes `\\'` inside a string literal
  for an escaped quote, where DuckDB and PostgreSQL end the string at the quote: the rest of the
  "string" runs as SQL (other rows, other tables, other statements). It also copies quoted
  identifiers verbatim, accepts `schema.table`, and reads `a - b + c` as `a - (b + c)`.
* It lets through expressions that fail on some rows and not on others (`1 / (x - 39.1)`,
  `SQRT(x - 32.2)`, `CAST(text AS INTEGER)`, integer overflow, text compared with a number, which
  DuckDB converts row by row). Whether a query fails is then a fact about the private data, exact,
  whatever the query is charged.

So three checks stand between a query and the data, all at planning:

1. `check_query`, on the query as SmartNoise-SQL parsed it: only the bare table `df`; every token of
   a kind that DuckDB and PostgreSQL read the same way (string literals without backslash, plain
   identifiers); every column a column of the metadata; and, in the parts that run as SQL (WHERE,
   GROUP BY, the arguments of aggregates), only operations that cannot fail on any row (the rules
   are spelled out in `_Checker`).
2. `checked_sql`, on the query SmartNoise-SQL wrote from it: the same token rules, only `df`.
3. DuckDB's own parser reads that SQL text: exactly one SELECT statement, no table but `df`, no
   function outside the few that step 1 lets through.

The select list outside aggregates, HAVING, ORDER BY and LIMIT are not SQL: SmartNoise-SQL computes
them in Python on the noisy aggregates of the groups it releases (post-processing).
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, ClassVar

import duckdb
from snsql._ast.ast import (
    Aggregate,
    AliasedSubquery,
    From,
    Having,
    Limit,
    Order,
    Query,
    Relation,
    Select,
    Table,
    Top,
    Where,
)
from snsql._ast.expression import NamedExpression, NestedExpression
from snsql._ast.expressions.date import (
    CurrentDateFunction,
    CurrentTimeFunction,
    CurrentTimestampFunction,
    DayNameFunction,
    ExtractFunction,
)
from snsql._ast.expressions.logical import (
    BetweenCondition,
    BooleanCompare,
    CaseExpression,
    ChooseFunction,
    ColumnBoolean,
    IIFFunction,
    InCondition,
    IsCondition,
    LogicalNot,
    NestedBoolean,
    PredicatedExpression,
    WhenExpression,
)
from snsql._ast.expressions.numeric import (
    ArithmeticExpression,
    BareFunction,
    MathFunction,
    PowerFunction,
    RoundFunction,
    TruncFunction,
)
from snsql._ast.expressions.sql import (
    AggFunction,
    AllColumns,
    GroupingExpression,
    OverClause,
    RankingFunction,
    SortItem,
)
from snsql._ast.expressions.string import (
    CharLengthFunction,
    CoalesceFunction,
    ConcatFunction,
    LowerFunction,
    PositionFunction,
    SubstringFunction,
    TrimFunction,
    UpperFunction,
)
from snsql._ast.expressions.types import CastFunction
from snsql._ast.tokens import Column, FuncName, Identifier, Literal, Op, Seq, Sql, SqlRel, Token

from lomas.core.errors import InvalidQueryError
from lomas.core.metadata import (
    AnyColumn,
    BooleanMetadata,
    DatetimeMetadata,
    FloatMetadata,
    IntCategoricalMetadata,
    IntMetadata,
    Metadata,
)
from lomas.server.data.base import TABLE_NAME

# Bounds on the numbers in arithmetic, and on how far a value computed from the rows may grow
# (`MAX_GAIN`) or shrink (`MAX_SHRINK`) relative to them (see `_Value`). Within them, float arithmetic
# fails (PostgreSQL raises on float overflow and underflow) only on data within a factor 1e12 of the
# largest float or on subnormal data (|x| < 1e-317); integers are never computed on.
MAX_FACTOR = 1e6
MIN_FACTOR = 1e-6
MAX_TERM = 1e9
MAX_GAIN = 1e12
MAX_SHRINK = 1e6

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\"[A-Za-z0-9_]+\"")
_FUNCTION = re.compile(r"[A-Z][A-Z0-9_]*")
_WORD_TOKEN = re.compile(r"[A-Za-z_]+ ?")
_CHAR_TYPE = re.compile(r"N?CHAR\(\d+\)")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_STRING = re.compile(r"'[^'\\\x00]*'")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?")
_OPERATORS = {"=", "<>", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "AND", "OR"}
_COMPARISONS = {"=", "<>", "!=", "<", "<=", ">", ">="}
_PUNCTUATION = {"(", ")", ","}

# Node types SmartNoise-SQL may write into SQL. Joins, join criteria, bare fragments and metadata
# columns are refused wherever they appear (`_check_source` refuses joins first, with a clearer message).
_NODE_TYPES: frozenset[type] = frozenset({
    Query, Select, From, Where, Aggregate, Having, Order, Limit, Top, Relation, Table, AliasedSubquery,
    NamedExpression, NestedExpression, Seq, AllColumns, AggFunction, GroupingExpression, SortItem,
    RankingFunction, OverClause, BooleanCompare, ColumnBoolean, NestedBoolean, LogicalNot,
    PredicatedExpression, InCondition, BetweenCondition, IsCondition, CaseExpression, WhenExpression,
    ArithmeticExpression, MathFunction, PowerFunction, BareFunction, RoundFunction, TruncFunction,
    LowerFunction, UpperFunction, TrimFunction, CharLengthFunction, PositionFunction, SubstringFunction,
    ConcatFunction, CoalesceFunction, CurrentDateFunction, CurrentTimeFunction, CurrentTimestampFunction,
    DayNameFunction, ExtractFunction, CastFunction, ChooseFunction, IIFFunction, Literal, Column,
})  # fmt: skip

# Functions that fail on some values in PostgreSQL (negative, zero, out of range, overflow).
_FAILING_MATH = {
    "SQRT": "negative numbers", "EXP": "large numbers (overflow)", "LN": "zero and negative numbers",
    "LOG": "zero and negative numbers", "LOG10": "zero and negative numbers", "LOG2": "zero and negative numbers",
    "SIN": "infinite numbers", "COS": "infinite numbers", "TAN": "infinite numbers",
    "ASIN": "numbers outside [-1, 1]", "ACOS": "numbers outside [-1, 1]", "ATANH": "numbers outside [-1, 1]",
    "DEGREES": "large numbers (overflow)", "POWER": "negative or large numbers", "SQUARE": "large numbers (overflow)",
}  # fmt: skip
_EXTRACT_PARTS = {
    "timestamp": {"year", "month", "day", "hour", "minute", "second", "microsecond"},
    "date": {"year", "month", "day"},
    "time": {"hour", "minute", "second", "microsecond"},
}
_STRING_TYPES = {"varchar", "nvarchar", "char", "nchar"}
_INT32 = 2**31
_FLOAT_MAX = {32: 3.4e38, 64: 1.79e308}

# What DuckDB's parser may find in the SQL SmartNoise-SQL writes, once step 1 holds.
_DUCKDB_FUNCTIONS = {
    "+", "-", "*", "/", "%", "count", "count_star", "sum", "abs", "ceil", "ceiling", "floor", "sign", "atan",
    "round", "upper", "lower", "trim", "char_length", "position", "substring", "concat", "date_part", "random",
    "pi", "row_number", "sqrt", "exp", "ln", "log", "log10", "log2", "sin", "cos", "tan", "asin", "acos",
    "atanh", "degrees", "power", "current_date", "current_time", "current_timestamp", "get_current_time",
    "get_current_timestamp", "now", "today",
}  # fmt: skip
_DUCKDB_REFUSED_NODES = {
    "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE", "TABLE_FUNCTION", "JOIN", "EXPRESSION_LIST",
    "PIVOT", "SHOW_REF", "COLUMN_DATA", "DELIM_GET",
}  # fmt: skip

_KIND_NAMES = {
    "int32": "an integer", "int64": "an integer", "float32": "a float", "float64": "a float",
    "decimal": "a decimal number", "string": "text", "boolean": "a boolean", "timestamp": "a timestamp",
    "date": "a date", "time": "a time", "null": "NULL",
}  # fmt: skip
_SQUARING = {"VAR", "VARIANCE", "STD", "STDDEV", "STDEV"}  # SmartNoise-SQL sums x * x for them
_INTS = {"int32", "int64"}
_FLOATS = {"float32", "float64"}
_NUMBERS = _INTS | _FLOATS | {"decimal"}
_DATETIMES = {"timestamp", "date", "time"}

_LEAK = "which would reveal whether such rows exist"


def refuse(message: str) -> InvalidQueryError:
    return InvalidQueryError(message)


def _text(node: Any, limit: int = 80) -> str:
    text = " ".join(str(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unnested(node: Any) -> Any:
    while type(node) is NestedExpression:
        node = node.expression
    return node


def _number(node: Any) -> float | None:
    """The value of a numeric literal (parentheses allowed), None for anything else."""
    node = _unnested(node)
    if type(node) is Literal and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    return None


def _string(node: Any) -> str | None:
    node = _unnested(node)
    if type(node) is Literal and isinstance(node.value, str):
        return str(node.value)
    return None


def _is_df(name: str) -> bool:
    return name == f'"{TABLE_NAME}"' or (name.lower() == TABLE_NAME and bool(_IDENTIFIER.fullmatch(name)))


# --- 1 and 2: tokens ----------------------------------------------------------------------------


def check_tokens(node: Any) -> None:
    """Every token SmartNoise-SQL would write for this tree is of a kind that SmartNoise-SQL, DuckDB and
    PostgreSQL all read alike, and every node is of a known kind: the SQL text then has the structure
    of the tree, and no literal or identifier can hide SQL."""
    if node is None:
        return
    if isinstance(node, Literal):
        _check_literal(node)
    elif isinstance(node, Column):
        _check_column_name(str(node.name))
    elif isinstance(node, AllColumns):
        if node.table is not None:
            _check_identifier(str(node.table))
    elif isinstance(node, Identifier):
        _check_identifier(str(node))
    elif isinstance(node, Op):
        if str(node).upper() not in _OPERATORS:
            raise refuse(
                f"The operator {node!s} is refused: use =, <>, <, <=, >, >=, +, -, *, /, %, AND or OR."
            )
    elif isinstance(node, FuncName):
        if not _FUNCTION.fullmatch(str(node)):
            raise refuse(f"The function name {str(node)!r} is refused.")
    elif isinstance(node, Token):
        text = str(node)
        if not (text in _PUNCTUATION or _WORD_TOKEN.fullmatch(text) or _CHAR_TYPE.fullmatch(text)):
            raise refuse(f"{text!r} is refused in a query.")
    elif isinstance(node, Sql):
        if type(node) not in _NODE_TYPES:
            raise refuse(f"{type(node).__name__} is not supported in a query ({_text(node)}).")
        if type(node) is ArithmeticExpression:
            _check_grouping(node)
        for child in node.children():
            check_tokens(child)
    else:
        raise refuse(f"{_text(node)!r} is refused in a query.")


def _check_literal(node: Literal) -> None:
    text, value = str(node.text), node.value
    if isinstance(value, str) and text.startswith("'"):
        if "\\" in text:
            raise refuse(
                f"String literals may not contain a backslash ({_text(text, 40)}): SmartNoise-SQL reads \\' as a "
                "quote inside the string, where DuckDB and PostgreSQL end the string, and would run the rest as SQL."
            )
        if not _STRING.fullmatch(text):
            raise refuse(
                f"The string literal {_text(text, 40)} is refused: it holds a quote or a NUL character."
            )
    elif isinstance(value, bool) or value is None:
        if text.upper() not in ("TRUE", "FALSE", "NULL"):
            raise refuse(f"The literal {_text(text, 40)} is refused.")
    elif isinstance(value, int | float):
        if not math.isfinite(float(value)) or not _NUMBER.fullmatch(text):
            raise refuse(f"The number {_text(text, 40)} is refused: numbers must be finite.")
    else:
        raise refuse(f"The literal {_text(text, 40)} is refused.")


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.fullmatch(name):
        raise refuse(
            f"The identifier {_text(name, 40)} is refused: names are letters, digits and underscores, "
            'optionally in double quotes ("name"); SmartNoise-SQL copies other quoted names into the SQL verbatim.'
        )


def _check_column_name(name: str) -> None:
    parts = name.split(".")
    if len(parts) > 2:
        raise refuse(f"The column name {_text(name, 40)} is refused.")
    for part in parts:
        _check_identifier(part)


_PRECEDENCE = {"*": 2, "/": 2, "%": 2, "+": 1, "-": 1}


def _check_grouping(node: ArithmeticExpression) -> None:
    """SmartNoise-SQL's grammar ranks * above /, / above %, % above + and + above -, so it reads
    `a - b + c` as `a - (b + c)` and `a / b * c` as `a / (b * c)`, and writes them back without the
    parentheses; the databases read `(a - b) + c`. Refuse the trees that the SQL text would not keep."""
    op = _PRECEDENCE.get(str(node.op), 0)
    right, left = node.right, node.left
    if type(right) is ArithmeticExpression and _PRECEDENCE.get(str(right.op), 0) <= op:
        raise refuse(
            f"Write parentheses in {_text(node)}: SmartNoise-SQL reads it as {_text(node.left)} {node.op} "
            f"({_text(right)}), DuckDB and PostgreSQL as ({_text(node.left)} {node.op} {_text(right.left)}) "
            f"{right.op} {_text(right.right)}."
        )
    if type(left) is ArithmeticExpression and _PRECEDENCE.get(str(left.op), 0) < op:
        raise refuse(f"Write parentheses in {_text(node)}: DuckDB and PostgreSQL would group it otherwise.")


# --- 1: the query as parsed ------------------------------------------------------------------------


def check_query(query: Any, metadata: Metadata) -> None:
    """Refuse, before SmartNoise-SQL rewrites it, a query that could read anything but `df` or whose SQL
    part could fail on some rows and not on others."""
    _check_source(query)
    check_tokens(query)
    _Checker(metadata).query(query)


def _check_source(query: Any) -> None:
    relations = list(query.source.relations)
    if len(relations) != 1:
        raise refuse("Only the table df can be queried: FROM must name df alone.")
    relation = relations[0]
    if type(relation) is not Relation:
        raise refuse("Only the table df can be queried.")
    if relation.joins:
        raise refuse("Only the table df can be queried: JOIN is refused.")
    table = relation.primary
    if type(table) is not Table:
        raise refuse("Only the table df can be queried: subqueries are refused.")
    name = str(table.name)
    if not _is_df(name):
        raise refuse(
            f"Only the table df can be queried, not {_text(name, 40)}: write FROM df, without a schema "
            "(on PostgreSQL, public.df or another schema would name a table of the database, not the dataset)."
        )
    if table.alias is not None:
        _check_identifier(str(table.alias))
    others = [node for node in query.find_nodes(SqlRel) if node is not relation and node is not table]
    if others:
        raise refuse(f"Only the table df can be queried: subqueries are refused ({_text(others[0])}).")


@dataclass(frozen=True)
class _Value:
    """What the checker knows of an expression.

    `kind` is its SQL type (`_KIND_NAMES`). `constant`: made of literals only, so PostgreSQL computes
    it once while planning and DuckDB computes it without float errors, whatever the rows. For numbers,
    `gain` and `shrink` bound its size relative to the data: |value| <= gain * max(1, M) and, unless it
    is 0, |value| >= min(1, m) / shrink, where M and m are the largest and the smallest nonzero size of
    any number read from the rows (a column, a length, a date part, RANDOM()). A literal c has gain |c|
    and shrink 1 / |c|.
    """

    kind: str
    constant: bool
    gain: float = 0.0
    shrink: float = 1.0


def _data(kind: str) -> _Value:
    """A value read from the rows."""
    return _Value(kind, constant=False, gain=1.0, shrink=1.0)


def _sized(kind: str, number: float) -> _Value:
    """A constant number."""
    size = abs(number)
    return _Value(kind, constant=True, gain=size, shrink=1 / size if size else 1.0)


class _Checker:
    """Types the SQL parts of a query and refuses every operation that can fail on some rows and not on
    others. The rules:

    * Columns: plain names of metadata columns (`species`, or `"species"` with the exact case); no
      qualified names (SmartNoise-SQL does not resolve them either).
    * Conditions: comparisons, IN, BETWEEN, IS [NOT] NULL of values of the same type (numbers with
      numbers, text with text, booleans with booleans, dates and timestamps with each other or with a
      well-formed 'YYYY-MM-DD[ HH:MM[:SS[.ffffff]]]' literal); a bare column or IS TRUE/FALSE only on
      booleans. DuckDB converts the *column* when text meets a number or a boolean, which fails on the
      rows that do not convert.
    * Arithmetic (+ - * / %) needs a float operand: a float column or CAST(integer AS FLOAT). Integer
      and decimal arithmetic overflows on some values (DuckDB and PostgreSQL raise). Division and
      modulo only by a number between 1e-6 and 1e6 in absolute value (division by zero raises); a
      product needs such a number as one factor (or 0); added numbers stay within 1e9; and no value
      computed from the rows (a column, but also CASE WHEN ... THEN 1 ELSE 0 END, a length) may grow
      more than 1e12 times, or shrink more than 1e6 times: PostgreSQL raises on float overflow and
      underflow. Parentheses where SmartNoise-SQL and SQL group differently.
    * Functions: ABS (of floats), CEIL, CEILING, FLOOR, SIGN, ATAN, ROUND on numbers; SQRT, EXP, LN,
      LOG, LOG10, LOG2, SIN, COS, TAN, ASIN, ACOS, ATANH, DEGREES, POWER only of constants; UPPER,
      LOWER, TRIM, CHAR_LENGTH, POSITION of text; SUBSTRING(text FROM int FOR int >= 0) with number
      literals; CONCAT of anything; COALESCE and CASE of one type; EXTRACT of the parts a timestamp,
      date or time has (not WEEKDAY); RANDOM, PI, CURRENT_DATE/TIME/TIMESTAMP. TRUNCATE, SQUARE, IIF,
      CHOOSE, DAYNAME, RAND and NEWID are refused: DuckDB or PostgreSQL lacks them.
    * CAST: to text from anything; to FLOAT from integers (DuckDB's FLOAT has 32 bits, narrowing a
      float fails beyond 3.4e38); to INTEGER from 32-bit integers; to BOOLEAN from booleans; to DATE,
      TIMESTAMP or TIME from timestamps and dates; and from a literal whose text converts.
    * Aggregates: COUNT, SUM, AVG, VAR, STDDEV of columns (SmartNoise-SQL's own rule); VAR and STDDEV
      sum squares of the clamped column, refused when its bounds let the square overflow.
    """

    def __init__(self, metadata: Metadata) -> None:
        self._columns = metadata.columns

    def query(self, query: Any) -> None:
        if query.where is not None:
            self._condition(query.where.condition)
        if query.agg is not None:
            for grouping in query.agg.groupingExpressions:
                self._value(grouping.expression)
        for named in query.select.namedExpressions:
            expression = named.expression
            aggregates = (
                [expression] if type(expression) is AggFunction else expression.find_nodes(AggFunction)
            )
            for aggregate in aggregates:
                self._aggregate(aggregate)

    # columns and aggregates

    def _column(self, node: Column) -> tuple[str, AnyColumn]:
        name = str(node.name)
        if "." in name:
            raise refuse(
                f"Qualified column names are refused ({_text(name, 40)}): write the column name alone."
            )
        key = name[1:-1] if name.startswith('"') else name.lower()
        if key not in self._columns:
            raise refuse(
                f"Unknown column {_text(name, 40)}: df has the columns {', '.join(self._columns)} "
                "(quote names that have capitals)."
            )
        return key, self._columns[key]

    def _column_value(self, node: Column) -> _Value:
        _, column = self._column(node)
        match column:
            case IntMetadata() | IntCategoricalMetadata():
                return _data(f"int{column.precision.value}")
            case FloatMetadata():
                return _data(f"float{column.precision.value}")
            case BooleanMetadata():
                return _data("boolean")
            case DatetimeMetadata():
                return _data("timestamp")
        return _data("string")

    def _aggregate(self, node: AggFunction) -> None:
        argument = node.expression
        if type(argument) is AllColumns:
            if argument.table is not None and not _is_df(str(argument.table)):
                raise refuse(f"Only the table df can be queried ({_text(node)}).")
            return
        self._value(argument)
        if type(argument) is not Column or str(node.name) not in _SQUARING:
            return
        name, column = self._column(argument)
        if isinstance(column, IntMetadata | FloatMetadata):
            square = max(float(column.lower) ** 2, float(column.upper) ** 2)
            bits = column.precision.value
            limit = float(2 ** (bits - 1)) if isinstance(column, IntMetadata) else _FLOAT_MAX[bits]
            if square >= limit:
                raise refuse(
                    f"{node.name}({name}) is refused: SmartNoise-SQL sums {name} * {name}, and within the bounds "
                    f"[{column.lower}, {column.upper}] the square overflows a {bits}-bit number on some values "
                    f"and not on others, {_LEAK}."
                )

    # conditions

    def _condition(self, node: Any) -> None:
        kind = type(node)
        if kind is BooleanCompare and str(node.op).upper() in ("AND", "OR"):
            self._condition(node.left)
            self._condition(node.right)
        elif kind is BooleanCompare:
            if str(node.op) not in _COMPARISONS:
                raise refuse(f"The operator {node.op} is refused: use =, <>, !=, <, <=, > or >=.")
            self._comparable(node, node.left, self._value(node.left), node.right, self._value(node.right))
        elif kind is NestedBoolean or kind is LogicalNot:
            self._condition(node.expression)
        elif kind is ColumnBoolean:
            value = self._value(node.expression)
            if value.kind != "boolean":
                raise refuse(
                    f"{_text(node)} holds {_KIND_NAMES[value.kind]}, it is not a condition: DuckDB would convert "
                    f"it to a boolean on every row, which fails on some rows and not on others, {_LEAK}; "
                    f"compare it (e.g. {_text(node)} = ...)."
                )
        elif kind is PredicatedExpression:
            self._predicate(node)
        elif kind is Literal and isinstance(node.value, bool):
            return
        else:
            raise refuse(f"{_text(node)} is not a condition.")

    def _predicate(self, node: PredicatedExpression) -> None:
        subject = self._value(node.expression)
        predicate = node.predicate
        if type(predicate) is InCondition:
            for item in predicate.expressions:
                self._comparable(node, node.expression, subject, item, self._value(item))
        elif type(predicate) is BetweenCondition:
            for bound in (predicate.lower, predicate.upper):
                self._comparable(node, node.expression, subject, bound, self._value(bound))
        elif type(predicate) is IsCondition:
            if predicate.value.value is not None and subject.kind != "boolean":
                raise refuse(
                    f"{_text(node)} is refused: IS TRUE and IS FALSE apply to booleans; DuckDB would convert "
                    f"{_KIND_NAMES[subject.kind]} of every row, which fails on some rows and not on others, {_LEAK}."
                )
        else:
            raise refuse(f"{_text(node)} is not supported.")

    def _comparable(self, where: Any, left: Any, a: _Value, right: Any, b: _Value) -> None:
        if self._compatible(left, a, right, b):
            return
        raise refuse(
            f"Comparing {_KIND_NAMES[a.kind]} with {_KIND_NAMES[b.kind]} is refused ({_text(where)}): the "
            f"databases would convert the values of every row, which fails on some rows and not on others, {_LEAK}; "
            "compare values of one type (text with 'text', numbers with numbers, dates with 'YYYY-MM-DD')."
        )

    def _compatible(self, left: Any, a: _Value, right: Any, b: _Value) -> bool:
        if "null" in (a.kind, b.kind) or _same_family(a.kind, b.kind):
            return True
        for node, value, other in ((left, a, b), (right, b, a)):
            text = _string(node)
            if value.kind == "string" and text is not None and other.kind in _DATETIMES:
                if not _datetime_literal(text, other.kind):
                    raise refuse(
                        f"{text!r} is not a well-formed {other.kind}: write 'YYYY-MM-DD' or 'YYYY-MM-DD HH:MM:SS' "
                        "(a time: 'HH:MM:SS')."
                    )
                return True
        return False

    # values

    def _value(self, node: Any) -> _Value:
        handler = self._handlers.get(type(node))
        if handler is None:
            raise refuse(f"{_text(node)} is not supported in WHERE, GROUP BY or an aggregate.")
        value: _Value = handler(self, node)
        return value

    def _literal(self, node: Literal) -> _Value:
        value = node.value
        if value is None:
            return _Value("null", constant=True)
        if isinstance(value, bool):
            return _Value("boolean", constant=True)
        if isinstance(value, int):
            return _sized("int64", value)
        if isinstance(value, float):
            return _sized("decimal", value)
        return _Value("string", constant=True)

    def _nested(self, node: NestedExpression) -> _Value:
        return self._value(node.expression)

    def _arithmetic(self, node: ArithmeticExpression) -> _Value:
        op = str(node.op)
        left, right = self._value(node.left), self._value(node.right)
        for value in (left, right):
            if value.kind not in _NUMBERS:
                raise refuse(
                    f"Arithmetic on {_KIND_NAMES[value.kind]} is refused ({_text(node)}): only numbers compute."
                )
        if left.kind not in _FLOATS and right.kind not in _FLOATS:
            raise refuse(
                f"Integer and decimal arithmetic is refused ({_text(node)}): their results overflow on some "
                f"values and not on others (DuckDB and PostgreSQL raise an error), {_LEAK}; compute on floats, "
                "e.g. CAST(column AS FLOAT) - 2000."
            )
        if op in ("/", "%"):
            divisor = _number(node.right)
            word = "Division" if op == "/" else "Modulo"
            if divisor is None:
                raise refuse(
                    f"{word} by a column expression is refused ({_text(node)}): it fails on some data (a zero divisor) "
                    f"and not on other, {_LEAK}; divide by a number instead."
                )
            if not MIN_FACTOR <= abs(divisor) <= MAX_FACTOR:
                raise refuse(
                    f"{word} by {divisor:g} is refused ({_text(node)}): divide by a number between {MIN_FACTOR:g} and "
                    f"{MAX_FACTOR:g} in absolute value (zero fails on every row, tiny numbers overflow on some)."
                )
            if op == "%":  # |x % c| < |c|; PostgreSQL has no % on floats at all
                return _Value(_float_kind(left), left.constant, min(left.gain, abs(divisor)), left.shrink)
            return self._scaled(node, left, 1 / divisor)
        if op == "*":
            factor, other = _number(node.right), left
            if factor is None:
                factor, other = _number(node.left), right
            if factor is None:
                raise refuse(
                    f"Multiplying two column expressions is refused ({_text(node)}): the product overflows on some "
                    f"values and not on others, {_LEAK}; multiply by a number."
                )
            if factor != 0 and not MIN_FACTOR <= abs(factor) <= MAX_FACTOR:
                raise refuse(
                    f"Multiplying by {factor:g} is refused ({_text(node)}): use a factor between {MIN_FACTOR:g} and "
                    f"{MAX_FACTOR:g} in absolute value, beyond which the product overflows on some values and not on others."
                )
            return self._scaled(node, other, factor)
        for side in (node.left, node.right):
            term = _number(side)
            if term is not None and abs(term) > MAX_TERM:
                raise refuse(
                    f"Adding {term:g} is refused ({_text(node)}): added numbers stay within {MAX_TERM:g}."
                )
        constant = left.constant and right.constant
        value = _Value(
            _float_kind(left, right), constant, left.gain + right.gain, max(left.shrink, right.shrink)
        )
        return self._bounded(node, value, underflows=False)  # PostgreSQL checks + and - for overflow only

    def _scaled(self, node: Any, value: _Value, factor: float) -> _Value:
        """`value` multiplied by a number: its gain grows by |factor|, its shrink by 1 / |factor|."""
        kind = _float_kind(value)
        if factor == 0:
            return _Value(kind, value.constant)  # x * 0 is 0 (or NaN), which never fails
        size = abs(factor)
        return self._bounded(node, _Value(kind, value.constant, value.gain * size, value.shrink / size))

    def _bounded(self, node: Any, value: _Value, underflows: bool = True) -> _Value:
        """Refuse a value computed from the rows that can grow or shrink too far relative to them: PostgreSQL
        raises on float overflow (+ - * /) and underflow (* /), on some rows and not on others."""
        if value.constant:
            return value
        if value.gain > MAX_GAIN:
            raise refuse(
                f"{_text(node)} is refused: it can grow the values it is computed from more than {MAX_GAIN:g} times, "
                f"and overflows on large values (PostgreSQL raises an error) and not on others, {_LEAK}."
            )
        if underflows and value.shrink > MAX_SHRINK:
            raise refuse(
                f"{_text(node)} is refused: it can shrink the values it is computed from more than {MAX_SHRINK:g} "
                f"times, and underflows on small values (PostgreSQL raises an error) and not on others, {_LEAK}."
            )
        return value

    def _math(self, node: MathFunction) -> _Value:
        name = str(node.name).upper()
        value = self._value(node.expression)
        if value.kind not in _NUMBERS:
            raise refuse(f"{name} applies to numbers, not {_KIND_NAMES[value.kind]} ({_text(node)}).")
        if name == "SQUARE":
            raise refuse("SQUARE is not available in DuckDB and PostgreSQL: multiply by a number instead.")
        if name == "ABS":
            if value.kind in _INTS:
                raise refuse(
                    f"ABS of an integer is refused ({_text(node)}): it overflows on the smallest integer, {_LEAK}; "
                    "use ABS(CAST(column AS FLOAT))."
                )
            return value
        if name == "SIGN":
            return _Value(value.kind, value.constant, 1.0, 1.0)
        if name == "ATAN":
            return _Value("float64", value.constant, 2.0, value.shrink)
        if name in ("CEIL", "CEILING", "FLOOR"):
            return _Value(value.kind, value.constant, value.gain + 1, 1.0)  # an integer, or 0
        return self._constant_only(node, name, value)

    def _power(self, node: PowerFunction) -> _Value:
        value = self._value(node.expression)
        if value.kind not in _NUMBERS:
            raise refuse(f"POWER applies to numbers, not {_KIND_NAMES[value.kind]} ({_text(node)}).")
        return self._constant_only(node, "POWER", value)

    def _constant_only(self, node: Any, name: str, value: _Value) -> _Value:
        if not value.constant:
            raise refuse(
                f"{name} of a column expression is refused ({_text(node)}): it fails on {_FAILING_MATH[name]} and not "
                f"on other values, {_LEAK}."
            )
        return _Value("float64", True, math.inf, math.inf)  # some constant, of a size not worked out here

    def _round(self, node: RoundFunction) -> _Value:
        value = self._value(node.expression)
        if value.kind not in _NUMBERS:
            raise refuse(f"ROUND applies to numbers, not {_KIND_NAMES[value.kind]} ({_text(node)}).")
        digits = _number(node.decimals) if node.decimals is not None else None
        return _Value(value.kind, value.constant, value.gain + 1, 10.0 ** min(max(digits or 0.0, 0.0), 300.0))

    def _bare(self, node: BareFunction) -> _Value:
        name = str(node.name).upper()
        if name == "PI":
            return _sized("float64", math.pi)
        if name == "RANDOM":
            return _data("float64")
        raise refuse(f"{name}() is not available in DuckDB and PostgreSQL; use RANDOM().")

    def _unavailable(self, node: Any) -> _Value:
        names = {
            TruncFunction: "TRUNCATE (use FLOOR or ROUND)",
            IIFFunction: "IIF (use CASE)",
            ChooseFunction: "CHOOSE (use CASE)",
            DayNameFunction: "DAYNAME (use EXTRACT)",
        }
        raise refuse(f"{names[type(node)]} is not available in both DuckDB and PostgreSQL ({_text(node)}).")

    def _text_function(self, node: Any) -> _Value:
        value = self._value(node.expression)
        name = _text(node).split(" ")[0]
        if value.kind not in ("string", "null"):
            raise refuse(f"{name} applies to text, not {_KIND_NAMES[value.kind]} ({_text(node)}).")
        if type(node) is CharLengthFunction:
            return _Value("int64", value.constant, 1.0, 1.0)
        return _Value("string", value.constant)

    def _position(self, node: PositionFunction) -> _Value:
        values = [self._value(node.search), self._value(node.source)]
        if any(value.kind not in ("string", "null") for value in values):
            raise refuse(f"POSITION applies to text ({_text(node)}).")
        return _Value("int64", all(value.constant for value in values), 1.0, 1.0)

    def _substring(self, node: SubstringFunction) -> _Value:
        value = self._value(node.source)
        if value.kind not in ("string", "null"):
            raise refuse(f"SUBSTRING applies to text, not {_KIND_NAMES[value.kind]} ({_text(node)}).")
        start = _number(node.start)
        length = None if node.length is None else _number(node.length)
        bad_length = node.length is not None and (length is None or not length.is_integer() or length < 0)
        if start is None or not start.is_integer() or bad_length:
            raise refuse(
                f"SUBSTRING is refused ({_text(node)}): its start and length must be integers, the length not "
                f"negative (PostgreSQL fails on a negative length, on the rows where it is computed, {_LEAK})."
            )
        return _Value("string", value.constant)

    def _concat(self, node: ConcatFunction) -> _Value:
        values = [self._value(expression) for expression in node.expressions]
        return _Value("string", all(value.constant for value in values))

    def _coalesce(self, node: CoalesceFunction) -> _Value:
        return self._unified(node, [self._value(expression) for expression in node.expressions])

    def _unified(self, node: Any, values: list[_Value]) -> _Value:
        """The type of CASE or COALESCE: one for all its values (the databases would convert the others)."""
        kinds = {value.kind for value in values} - {"null"}
        constant = all(value.constant for value in values)
        gain, shrink = max(value.gain for value in values), max(value.shrink for value in values)
        if not kinds:
            return _Value("null", constant)
        first = min(kinds)
        for kind in kinds:
            if not _same_family(first, kind):
                raise refuse(
                    f"{_text(node)} mixes {_KIND_NAMES[first]} and {_KIND_NAMES[kind]}: the databases would convert "
                    f"the values of every row, which fails on some rows and not on others, {_LEAK}."
                )
        if kinds <= _NUMBERS:
            kind = _float_kind(*values) if kinds & _FLOATS else ("decimal" if "decimal" in kinds else "int64")
        else:
            kind = "timestamp" if len(kinds) > 1 else first
        return _Value(kind, constant, gain, shrink)

    def _case(self, node: CaseExpression) -> _Value:
        if node.expression is not None:
            base = self._value(node.expression)
            for when in node.when_exprs:
                self._comparable(node, node.expression, base, when.expression, self._value(when.expression))
        else:
            for when in node.when_exprs:
                self._condition(when.expression)
        results = [when.then for when in node.when_exprs]
        if node.else_expr is not None:
            results.append(node.else_expr)
        value = self._unified(node, [self._value(result) for result in results])
        # The branch taken depends on the rows: CASE WHEN <condition> THEN 1 ELSE 0 END is data, never a
        # constant, and at least as large and as small as data.
        return _Value(value.kind, False, max(value.gain, 1.0), max(value.shrink, 1.0))

    def _current(self, node: Any) -> _Value:
        kinds = {
            CurrentDateFunction: "date",
            CurrentTimeFunction: "time",
            CurrentTimestampFunction: "timestamp",
        }
        return _Value(kinds[type(node)], constant=False)

    def _extract(self, node: ExtractFunction) -> _Value:
        value = self._value(node.expression)
        part = str(node.date_part).lower()
        if value.kind not in _DATETIMES:
            raise refuse(
                f"EXTRACT applies to timestamps, dates and times, not {_KIND_NAMES[value.kind]} ({_text(node)})."
            )
        if part not in _EXTRACT_PARTS[value.kind]:
            raise refuse(
                f"EXTRACT({part.upper()} FROM {_KIND_NAMES[value.kind]}) is refused ({_text(node)}): PostgreSQL fails on "
                f"it on the rows where it is computed, {_LEAK}; a {value.kind} has "
                f"{', '.join(sorted(part.upper() for part in _EXTRACT_PARTS[value.kind]))}."
            )
        return _Value("int64", value.constant, 1.0, 1.0)

    def _cast(self, node: CastFunction) -> _Value:
        target = str(node.dbtype).lower()
        value = self._value(node.expression)
        literal = _unnested(node.expression)
        text = literal.value if type(literal) is Literal and isinstance(literal.value, str) else None
        if target in _STRING_TYPES or _CHAR_TYPE.fullmatch(target.upper()):
            return _Value("string", value.constant)
        if target == "float":
            if value.kind in _INTS or value.kind == "null":
                return _Value("float32", value.constant, value.gain, value.shrink)
            number = _number(literal)
            if number is None and text is not None and _NUMBER.fullmatch(text):
                number = float(text)
            if number is not None and abs(number) <= MAX_TERM:
                return _sized("float32", number)
            reason = (
                "narrowing a float to DuckDB's 32-bit FLOAT fails beyond 3.4e38"
                if value.kind in _FLOATS
                else f"converting {_KIND_NAMES[value.kind]} to FLOAT fails on the values that do not convert"
            )
            raise refuse(f"{_text(node)} is refused: {reason}, on some rows and not on others, {_LEAK}.")
        if target == "integer":
            if value.kind in ("int32", "null"):
                return _Value("int32", value.constant, value.gain, value.shrink)
            digits = (
                str(literal.value) if type(literal) is Literal and type(literal.value) in (int, str) else ""
            )
            if re.fullmatch(r"-?\d{1,10}", digits) and -_INT32 <= int(digits) < _INT32:
                return _sized("int32", int(digits))
            raise refuse(
                f"{_text(node)} is refused: converting to a 32-bit INTEGER fails on values that are too large, "
                f"not numbers or NaN, on some rows and not on others, {_LEAK}; use FLOOR, CEIL or ROUND."
            )
        if target == "boolean":
            if value.kind in ("boolean", "null") or (text is not None and text.lower() in ("true", "false")):
                return _Value("boolean", value.constant)
            raise refuse(
                f"{_text(node)} is refused: only booleans (and 'true', 'false') convert to BOOLEAN without failing."
            )
        if target in _DATETIMES:
            from_datetime = value.kind in ("timestamp", "date") and target in ("timestamp", "date")
            if value.kind == "null" or from_datetime or (value.kind == "timestamp" and target == "time"):
                return _Value(target, value.constant)
            if text is not None and _datetime_literal(text, target):
                return _Value(target, constant=True)
            raise refuse(
                f"{_text(node)} is refused: converting {_KIND_NAMES[value.kind]} to {target.upper()} fails on the "
                f"values that do not convert, on some rows and not on others, {_LEAK}."
            )
        raise refuse(
            f"CAST to {target.upper()} is refused ({_text(node)}): use INTEGER, FLOAT, BOOLEAN, DATE, TIMESTAMP, "
            "TIME, VARCHAR or CHAR(n)."
        )

    def _refused(self, node: Any) -> _Value:
        if type(node) is AggFunction:
            raise refuse(f"Aggregates are refused in WHERE and GROUP BY ({_text(node)}).")
        if type(node) is AliasedSubquery:
            raise refuse(f"Only the table df can be queried: subqueries are refused ({_text(node)}).")
        raise refuse(f"{_text(node)} is not supported in WHERE, GROUP BY or an aggregate.")

    _handlers: ClassVar[dict[type, Any]] = {
        Literal: _literal, Column: _column_value, NestedExpression: _nested, ArithmeticExpression: _arithmetic,
        MathFunction: _math, PowerFunction: _power, RoundFunction: _round, BareFunction: _bare,
        TruncFunction: _unavailable, IIFFunction: _unavailable, ChooseFunction: _unavailable,
        DayNameFunction: _unavailable, LowerFunction: _text_function, UpperFunction: _text_function,
        TrimFunction: _text_function, CharLengthFunction: _text_function, PositionFunction: _position,
        SubstringFunction: _substring, ConcatFunction: _concat, CoalesceFunction: _coalesce,
        CaseExpression: _case, CurrentDateFunction: _current, CurrentTimeFunction: _current,
        CurrentTimestampFunction: _current, ExtractFunction: _extract, CastFunction: _cast,
        AggFunction: _refused, AliasedSubquery: _refused, AllColumns: _refused, RankingFunction: _refused,
    }  # fmt: skip


def _float_kind(*values: _Value) -> str:
    """The float type of arithmetic on these values (DuckDB keeps 32-bit floats with numbers)."""
    kinds = {value.kind for value in values}
    return "float32" if "float32" in kinds and "float64" not in kinds else "float64"


_FAMILIES = (_NUMBERS, {"string"}, {"boolean"}, {"timestamp", "date"}, {"time"})


def _same_family(a: str, b: str) -> bool:
    return any(a in family and b in family for family in _FAMILIES)


def _datetime_literal(text: str, kind: str) -> bool:
    """Whether `text` is a date, timestamp or time that DuckDB and PostgreSQL both read."""
    try:
        if kind == "date":
            return bool(_DATE.fullmatch(text)) and date.fromisoformat(text) is not None
        if kind == "time":
            return bool(_TIME.fullmatch(text)) and time.fromisoformat(text) is not None
        return bool(_TIMESTAMP.fullmatch(text)) and datetime.fromisoformat(text) is not None
    except ValueError:
        return False


# --- 2 and 3: the SQL SmartNoise-SQL wrote --------------------------------------------------------

_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None


def checked_sql(subquery: Any) -> str:
    """The SQL text of the rewritten (exact aggregates) query, once its tokens, its tables and DuckDB's
    reading of it are checked. None of these checks should ever fail after `check_query`."""
    check_tokens(subquery)
    for table in subquery.find_nodes(Table):
        if not _is_df(str(table.name)):
            raise refuse(f"Only the table df can be queried, not {_text(table.name, 40)}.")
    sql = str(subquery)
    _check_with_duckdb(sql)
    return sql


def _check_with_duckdb(sql: str) -> None:
    def unsafe(problem: str) -> InvalidQueryError:
        return refuse(
            f"The SQL written for this query is refused: DuckDB does not read it as one SELECT on df ({problem}): "
            f"{_text(sql, 200)}"
        )

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise unsafe(f"it does not parse: {error}") from error
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise unsafe(
            f"{len(statements)} statements, the first of type {statements[0].type.name if statements else None}"
        )
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect(":memory:", config={"enable_external_access": False})
        serialized = _parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree: dict[str, Any] = json.loads(serialized[0]) if serialized else {"error": True}
    parsed: list[Any] = tree.get("statements") or []
    if tree.get("error") or len(parsed) != 1:
        raise unsafe("it does not parse")
    problem = _duckdb_problem(parsed[0])
    if problem is not None:
        raise unsafe(problem)


def _duckdb_problem(node: Any) -> str | None:
    if isinstance(node, list):
        for item in node:
            problem = _duckdb_problem(item)
            if problem is not None:
                return problem
        return None
    if not isinstance(node, dict):
        return None
    kind = node.get("type")
    if kind in _DUCKDB_REFUSED_NODES:
        return f"a {kind}"
    if kind == "BASE_TABLE" and (
        str(node.get("table_name", "")).lower() != TABLE_NAME
        or node.get("schema_name")
        or node.get("catalog_name")
    ):
        path = ".".join(
            str(node.get(key)) for key in ("catalog_name", "schema_name", "table_name") if node.get(key)
        )
        return f"the table {path}"
    if isinstance(node.get("cte_map"), dict) and node["cte_map"].get("map"):
        return "a WITH clause"
    if "function_name" in node and (
        str(node["function_name"]).lower() not in _DUCKDB_FUNCTIONS
        or node.get("schema")
        or node.get("catalog")
    ):
        return f"the function {node['function_name']}"
    return _duckdb_problem(list(node.values()))
