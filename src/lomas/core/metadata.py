"""The Lomas (SmartNoise-style) metadata format that describes a private dataset publicly.

Metadata is public: the cost of a query and the dummy data are computed from it alone.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator


_EARLIEST, _LATEST = datetime(1678, 1, 1), datetime(2261, 12, 31)  # what nanosecond timestamps hold


class ColumnType(StrEnum):
    """Column types of the metadata format (categorical ones are inferred from `cardinality`)."""

    STRING = "string"
    CAT_STRING = "categorical_string"
    INT = "int"
    CAT_INT = "categorical_int"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DATETIME = "datetime"


class Precision(IntEnum):
    """Bit width of integer and float columns."""

    SINGLE = 32
    DOUBLE = 64


class ColumnMetadata(BaseModel):
    """Fields every column may carry."""

    model_config = ConfigDict(extra="forbid")

    private_id: bool = False
    nullable: bool = False
    max_partition_length: Annotated[int, Field(gt=0)] | None = None
    max_influenced_partitions: Annotated[int, Field(gt=0)] | None = None
    max_partition_contributions: Annotated[int, Field(gt=0)] | None = None


class _Categorical(ColumnMetadata):
    @model_validator(mode="after")
    def _categories_match_cardinality(self) -> _Categorical:
        categories = getattr(self, "categories")
        if len(categories) != getattr(self, "cardinality"):
            raise ValueError("Number of categories should be equal to cardinality.")
        if len(set(categories)) != len(categories):
            raise ValueError("Categories must be distinct.")
        return self


class _Bounded(ColumnMetadata):
    @model_validator(mode="after")
    def _lower_below_upper(self) -> _Bounded:
        if getattr(self, "lower") > getattr(self, "upper"):
            raise ValueError("Lower bound cannot be larger than upper bound.")
        return self


class StrMetadata(ColumnMetadata):
    type: Literal[ColumnType.STRING]


class StrCategoricalMetadata(_Categorical):
    type: Literal[ColumnType.STRING]
    cardinality: Annotated[int, Field(gt=0)]
    categories: list[str]


class IntMetadata(_Bounded):
    type: Literal[ColumnType.INT]
    precision: Precision = Precision.DOUBLE
    lower: int
    upper: int

    @model_validator(mode="after")
    def _bounds_fit_precision(self) -> IntMetadata:
        limit = 2 ** (self.precision.value - 1)
        if not (-limit <= self.lower and self.upper < limit):
            raise ValueError(f"Bounds must fit in a {self.precision.value}-bit integer.")
        return self


class IntCategoricalMetadata(_Categorical):
    type: Literal[ColumnType.INT]
    precision: Precision = Precision.DOUBLE
    cardinality: Annotated[int, Field(gt=0)]
    categories: list[int]


class FloatMetadata(_Bounded):
    type: Literal[ColumnType.FLOAT]
    precision: Precision = Precision.DOUBLE
    lower: float
    upper: float


class BooleanMetadata(ColumnMetadata):
    type: Literal[ColumnType.BOOLEAN]


class DatetimeMetadata(_Bounded):
    type: Literal[ColumnType.DATETIME]
    lower: datetime
    upper: datetime

    @model_validator(mode="after")
    def _bounds_in_supported_range(self) -> DatetimeMetadata:
        for bound in (self.lower, self.upper):
            if not (_EARLIEST <= bound.replace(tzinfo=None) <= _LATEST):
                raise ValueError("Datetime bounds must lie between 1678-01-01 and 2261-12-31.")
        return self


def _column_tag(value: Any) -> str | None:
    """Tell the column model apart: `string`/`int` with a `cardinality` are categorical."""
    if isinstance(value, dict):
        col_type, has_cardinality = value.get("type"), "cardinality" in value
    else:
        col_type, has_cardinality = getattr(value, "type", None), hasattr(value, "cardinality")
    if col_type in (ColumnType.STRING, ColumnType.INT) and has_cardinality:
        return f"categorical_{col_type}"
    return col_type if isinstance(col_type, str) else None


AnyColumn = Annotated[
    Union[
        Annotated[StrMetadata, Tag(ColumnType.STRING)],
        Annotated[StrCategoricalMetadata, Tag(ColumnType.CAT_STRING)],
        Annotated[IntMetadata, Tag(ColumnType.INT)],
        Annotated[IntCategoricalMetadata, Tag(ColumnType.CAT_INT)],
        Annotated[FloatMetadata, Tag(ColumnType.FLOAT)],
        Annotated[BooleanMetadata, Tag(ColumnType.BOOLEAN)],
        Annotated[DatetimeMetadata, Tag(ColumnType.DATETIME)],
    ],
    Discriminator(_column_tag),
]

CATEGORICAL_COLUMNS = (StrCategoricalMetadata, IntCategoricalMetadata)


class Metadata(BaseModel):
    """Table-level metadata of a dataset (one table, named `df` in SQL queries).

    `censor_dims` defaults to true: GROUP BY keys are thresholded unless the administrator
    declares the dataset's categories public by setting it to false.
    """

    model_config = ConfigDict(extra="forbid")

    max_ids: Annotated[int, Field(gt=0)]
    rows: Annotated[int, Field(gt=0)]
    row_privacy: bool
    censor_dims: bool = True
    columns: dict[str, AnyColumn]

    def has_public_keys(self, group_by: list[str] | tuple[str, ...]) -> bool:
        """Whether grouping by these columns may release its keys without a threshold.

        Only what the administrator declared is public: the categories of one column, with
        `censor_dims: false`. Which *combinations* of categories occur, and whether a nullable column holds
        nulls, are facts about the private data: grouping by several columns, or by a nullable one, is
        thresholded like any other key.
        """
        if self.censor_dims or len(group_by) != 1:
            return False
        column = self.columns.get(group_by[0])
        return isinstance(column, CATEGORICAL_COLUMNS) and not column.nullable

    @model_validator(mode="after")
    def _has_columns(self) -> Metadata:
        if not self.columns:
            raise ValueError("Metadata must describe at least one column.")
        return self
