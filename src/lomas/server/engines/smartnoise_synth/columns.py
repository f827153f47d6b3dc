"""The selected columns as the synthesizers see them: their public domain from the metadata, and values.

Datetimes are synthesized as days since 1970-01-01, within their declared bounds. Private identifiers are
never selected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lomas.core.errors import InvalidQueryError
from lomas.core.metadata import (
    AnyColumn,
    BooleanMetadata,
    DatetimeMetadata,
    FloatMetadata,
    IntCategoricalMetadata,
    IntMetadata,
    Metadata,
    StrCategoricalMetadata,
    StrMetadata,
)

_EPOCH = pd.Timestamp("1970-01-01")
_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Domain:
    """One selected column as the synthesizers see it, from the public metadata alone.

    `categories` is a finite public domain (declared categories, booleans, short integer ranges);
    `bounds` the numeric range (datetimes in days since 1970-01-01). Either may be missing.
    """

    name: str
    column: AnyColumn
    nullable: bool
    categories: tuple[Any, ...] | None
    bounds: tuple[float, float] | None

    @property
    def is_text(self) -> bool:
        return isinstance(self.column, StrMetadata | StrCategoricalMetadata)

    def fit_values(self, numeric: bool) -> list[Any]:
        """Public values a transformer is fitted on: the whole finite domain, or the two bounds."""
        values: list[Any] = list(self.categories) if self.categories is not None and not numeric else []
        if not values and self.bounds is not None:
            values = list(self.bounds)
        return values + [None] if self.nullable else values


def naive_utc(moment: Any) -> pd.Timestamp:
    """A datetime (or ISO text) as the data loader holds it: naive, in UTC."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_convert(None) if stamp.tzinfo is not None else stamp


def _days(moment: Any) -> float:
    """Days since 1970-01-01, the number a datetime column is synthesized as."""
    return float((naive_utc(moment) - _EPOCH) / _DAY)


def column_domain(name: str, column: AnyColumn, nullable: bool, max_categories: int) -> Domain:
    """The column's public domain; `nullable` is the request's (false leaves out rows with a missing value)."""
    nullable = nullable and column.nullable
    match column:
        case StrCategoricalMetadata():
            return Domain(name, column, nullable, tuple(column.categories), None)
        case IntCategoricalMetadata():
            bounds = (min(column.categories), max(column.categories))
            return Domain(name, column, nullable, tuple(column.categories), bounds)
        case BooleanMetadata():
            return Domain(name, column, nullable, (False, True), None)
        case IntMetadata():
            short = column.upper - column.lower < max_categories
            categories = tuple(range(column.lower, column.upper + 1)) if short else None
            return Domain(name, column, nullable, categories, (column.lower, column.upper))
        case FloatMetadata():
            return Domain(name, column, nullable, None, (column.lower, column.upper))
        case DatetimeMetadata():
            return Domain(name, column, nullable, None, (_days(column.lower), _days(column.upper)))
    return Domain(name, column, nullable, None, None)


def selected_columns(select_cols: list[str], metadata: Metadata) -> list[tuple[str, AnyColumn]]:
    """`select_cols` in the caller's order, or every column that is not a private identifier."""
    if not select_cols:
        return [(name, column) for name, column in metadata.columns.items() if not column.private_id]
    if len(set(select_cols)) != len(select_cols):
        raise InvalidQueryError("select_cols names a column twice.")
    selected = []
    for name in select_cols:
        column = metadata.columns.get(name)
        if column is None:
            raise InvalidQueryError(
                f"select_cols: unknown column {name!r}; the columns are {list(metadata.columns)}."
            )
        if column.private_id:
            raise InvalidQueryError(
                f"select_cols: column {name!r} is a private identifier and is never synthesized."
            )
        selected.append((name, column))
    return selected


def training_frame(frame: pd.DataFrame, columns: Sequence[str], drop_null_rows: bool) -> pd.DataFrame:
    """Plain Python values with None for missing ones, as snsynth's transformers expect; datetimes in days."""
    if drop_null_rows:
        frame = frame.dropna()
    values = {}
    for name in columns:
        series = frame[name]
        if pd.api.types.is_datetime64_any_dtype(series):
            series = (series - _EPOCH) / _DAY
        values[name] = series.astype(object).where(series.notna(), None)
    return pd.DataFrame(values, index=frame.index)
