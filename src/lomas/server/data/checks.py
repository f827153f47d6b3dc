"""Does the data match its metadata? Checks an administrator runs before registering a dataset, and later.

The metadata is what the server promises about the data: the DP libraries clamp to its bounds, encode
its categories, assume non-nullable columns hold values and OpenDP polars assumes at most `rows` rows.
Data that breaks these promises makes answers wrong (or, for `rows`, the privacy accounting unsound),
so the administrator fixes the data or the metadata before researchers query it.

Everything is computed by one aggregate SQL query over the table `df` (plus one small query per
categorical column that holds undeclared values, to name them), in SQL that DuckDB and PostgreSQL both
run, so a PostgreSQL table is checked inside the database. Column names and types are not checked
here: opening the source (`lomas.server.data.sources.open_source`) already refuses missing columns and
values that cannot be cast to their metadata type.

Messages quote values of the data (extremes, undeclared categories, the row count): they are for the
administrator, the data owner, and are never shown to researchers.

The rule for `rows`: more rows than the metadata declares is a problem (OpenDP polars margins and
SmartNoise-Synth's delta rely on `rows` as an upper bound); fewer rows is only a warning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from lomas.core.metadata import (
    CATEGORICAL_COLUMNS,
    AnyColumn,
    DatetimeMetadata,
    FloatMetadata,
    IntMetadata,
    Metadata,
)
from lomas.server.data.base import TABLE_NAME, DataSource
from lomas.server.data.dtypes import quoted

MAX_NAMED_CATEGORIES = 5
_NAN = "CAST('NaN' AS DOUBLE PRECISION)"


@dataclass(frozen=True)
class DataReport:
    """What the checks found: `problems` must be fixed before the data is served, `warnings` need not."""

    rows: int
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def data_problems(source: DataSource, metadata: Metadata) -> list[str]:
    """Everything in the data that contradicts the metadata (empty when the data matches)."""
    return check_data(source, metadata).problems


def check_data(source: DataSource, metadata: Metadata) -> DataReport:
    """Run the checks: bounds, categories, nulls and the row count (see the module for the rules)."""
    aggregates = _Aggregates()
    row_count = aggregates.add("COUNT(*)")
    readers = [_column_reader(name, column, aggregates) for name, column in metadata.columns.items()]
    _, result = source.sql(f"SELECT {', '.join(aggregates.expressions)} FROM {TABLE_NAME}")
    values = result[0]
    problems = [problem for read in readers for problem in read(values, source)]
    rows, warnings = int(values[row_count]), []
    if rows > metadata.rows:
        problems.append(
            f"the data has {rows} rows but the metadata declares rows: {metadata.rows}, and the server relies "
            f"on it as an upper bound; set rows to at least {rows} in the metadata."
        )
    elif rows < metadata.rows:
        warnings.append(
            f"the data has {rows} rows and the metadata declares rows: {metadata.rows}; the difference is "
            "allowed (rows is an upper bound), but dummy data and size limits follow the metadata."
        )
    return DataReport(rows, problems, warnings)


# -- the query -----------------------------------------------------------------------------------
class _Aggregates:
    """The select list of the one aggregate query; `add` returns the position of its result."""

    def __init__(self) -> None:
        self.expressions: list[str] = []

    def add(self, expression: str) -> int:
        self.expressions.append(expression)
        return len(self.expressions) - 1


Reader = Callable[[Sequence[Any], DataSource], list[str]]


def _literal(value: str | int) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"Categories are strings or integers, not {type(value).__name__}.")
    return str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"


def _column_reader(name: str, column: AnyColumn, aggregates: _Aggregates) -> Reader:
    """Add the aggregates one column needs; return what turns their results into problems."""
    col = quoted(name)
    is_float = isinstance(column, FloatMetadata)
    missing = f"{col} IS NULL OR {col} = {_NAN}" if is_float else f"{col} IS NULL"
    nulls = None if column.nullable else aggregates.add(f"COUNT(CASE WHEN {missing} THEN 1 END)")
    extremes: tuple[int, int] | None = None
    if isinstance(column, (IntMetadata, FloatMetadata, DatetimeMetadata)):
        value = f"CASE WHEN {col} = {_NAN} THEN NULL ELSE {col} END" if is_float else col
        extremes = aggregates.add(f"MIN({value})"), aggregates.add(f"MAX({value})")
    undeclared: tuple[int, int, str] | None = None
    if isinstance(column, CATEGORICAL_COLUMNS):
        condition = f"{col} NOT IN ({', '.join(_literal(value) for value in column.categories)})"
        undeclared = (
            aggregates.add(f"COUNT(CASE WHEN {condition} THEN 1 END)"),
            aggregates.add(f"COUNT(DISTINCT CASE WHEN {condition} THEN {col} END)"),
            condition,
        )

    def read(values: Sequence[Any], source: DataSource) -> list[str]:
        problems = []
        if nulls is not None and values[nulls]:
            what = "(null or NaN)" if is_float else "(null)"
            problems.append(
                f"column {name!r}: {_count(values[nulls], 'missing value')} {what}, but the metadata does not "
                "declare it nullable; "
                "set nullable: true in the metadata, or fill them in the data."
            )
        if extremes is not None:
            problems.extend(_bounds_problem(name, column, values[extremes[0]], values[extremes[1]]))
        if undeclared is not None and values[undeclared[0]]:
            rows, distinct, condition = values[undeclared[0]], values[undeclared[1]], undeclared[2]
            _, found = source.sql(
                f"SELECT {col}, COUNT(*) FROM {TABLE_NAME} WHERE {condition} GROUP BY {col} "
                f"ORDER BY COUNT(*) DESC, {col} LIMIT {MAX_NAMED_CATEGORIES}"
            )
            named = ", ".join(f"{value!r} ({_count(count, 'row')})" for value, count in found)
            more = f", and {distinct - len(found)} more" if distinct > len(found) else ""
            problems.append(
                f"column {name!r}: {_count(distinct, 'value')} not among the declared categories, in "
                f"{_count(rows, 'row')}: "
                f"{named}{more}; add them to categories (and cardinality) in the metadata, or fix the data."
            )
        return problems

    return read


def _bounds_problem(name: str, column: AnyColumn, smallest: Any, largest: Any) -> list[str]:
    """The data's range when it leaves [lower, upper] (no problem for a column with no value)."""
    assert isinstance(column, (IntMetadata, FloatMetadata, DatetimeMetadata))
    if smallest is None or largest is None:
        return []
    lower: Any = column.lower
    upper: Any = column.upper
    if isinstance(column, DatetimeMetadata):
        lower, upper = _naive_utc(column.lower), _naive_utc(column.upper)
        smallest, largest = _naive_utc(smallest), _naive_utc(largest)
    below, above = smallest < lower, largest > upper
    if not (below or above):
        return []
    sides = " and ".join(
        side
        for side, out in (
            (f"the minimum is {_shown(smallest)} (below lower)", below),
            (f"the maximum is {_shown(largest)} (above upper)", above),
        )
        if out
    )
    bounds = f"lower: {_shown(lower)}, upper: {_shown(upper)}"
    return [f"column {name!r}: values outside the declared bounds {bounds}: {sides}; {_WIDEN}"]


_WIDEN = "widen lower/upper in the metadata, or fix the data."


def _naive_utc(moment: datetime | date) -> datetime:
    """Datetimes compared as the server holds them: naive, in UTC (a naive value is taken as UTC)."""
    if not isinstance(moment, datetime):
        return datetime(moment.year, moment.month, moment.day)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _shown(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return str(value)
