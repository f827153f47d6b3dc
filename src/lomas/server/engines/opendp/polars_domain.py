"""The server's side of a polars query: the dataset's polars schema, its OpenDP input domain and margins.

Everything here comes from the metadata, never from the request: the types of the columns, what the
metadata makes public (row counts, public categories) and so the margins OpenDP may rely on.
"""

from __future__ import annotations

from typing import Any

import opendp.prelude as dp
import polars as pl
from opendp.extras.polars import Margin

from lomas.core.metadata import Metadata
from lomas.server.data.dtypes import polars_schema

# The OpenDP type names of the polars dtypes the server holds data in (server/data/dtypes.py).
_OPENDP_TYPES: dict[type[pl.DataType], str] = {
    pl.String: "String", pl.Int32: "i32", pl.Int64: "i64", pl.Float32: "f32", pl.Float64: "f64",
    pl.Boolean: "bool",
}  # fmt: skip


def _element_domain(dtype: pl.DataType) -> Any:
    """Any value of the column's type, or null: OpenDP does not check the data against its domain, so the
    domain claims only what holds by construction (types from the metadata, NaN turned to null by
    every `DataSource.lazy()`), not the metadata's `nullable`."""
    if dtype == pl.Datetime:
        domain = dp.datetime_domain("ns")
    elif dtype.is_float():
        domain = dp.atom_domain(T=_OPENDP_TYPES[type(dtype)], nan=False)
    else:
        domain = dp.atom_domain(T=_OPENDP_TYPES[type(dtype)])
    return dp.option_domain(domain)


def _margins(metadata: Metadata, group_keys: set[tuple[str, ...]]) -> list[Margin]:
    """What the metadata makes public: at most `rows` rows (per group: `max_partition_length`), and the
    keys of the groupings whose keys the metadata declares public (`Metadata.has_public_keys`). OpenDP
    releases other groups only above a noisy threshold.

    The number of groups is bounded by `rows`, not by the categories: data may hold nulls or other values.
    """
    margins = [Margin(by=[], max_length=metadata.rows)]
    for keys in sorted(group_keys):
        columns = [metadata.columns[key] for key in keys if key in metadata.columns]
        if len(columns) != len(keys):
            continue  # OpenDP reports the unknown column
        public = metadata.has_public_keys(keys)
        lengths = [column.max_partition_length for column in columns if column.max_partition_length]
        margins.append(
            Margin(
                by=list(keys),
                max_length=min(lengths, default=metadata.rows),
                max_groups=metadata.rows,
                invariant="keys" if public else None,
            )
        )
    return margins


def input_domain(metadata: Metadata, group_keys: set[tuple[str, ...]]) -> Any:
    """The dataset as OpenDP sees it: a LazyFrame of the metadata's columns, with the margins above."""
    domain = dp.lazyframe_domain(
        [dp.series_domain(name, _element_domain(dtype)) for name, dtype in polars_schema(metadata).items()]
    )
    for margin in _margins(metadata, group_keys):
        domain = dp.with_margin(domain, margin)
    return domain
