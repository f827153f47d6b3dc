"""Samples from a fitted synthesizer: typed as the metadata's columns, and filtered by the condition.

With a condition, samples are drawn in a bounded number of rejection-sampling rounds, each at most ten times
the rows asked for and `max_samples`; fewer rows than asked may come back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from lomas.core.metadata import DatetimeMetadata, IntCategoricalMetadata, IntMetadata
from lomas.server.data.dtypes import column_dtype
from lomas.server.engines.smartnoise_synth.columns import Domain
from lomas.server.engines.smartnoise_synth.condition import Condition, mask


@dataclass(frozen=True)
class OutputColumn:
    """A column of the samples and the dtype it is given (the metadata's, as the data loader holds it)."""

    name: str
    dtype: str
    kind: Literal["datetime", "int", "other"]


def output_column(domain: Domain) -> OutputColumn:
    kind: Literal["datetime", "int", "other"] = "other"
    if isinstance(domain.column, DatetimeMetadata):
        kind = "datetime"
    elif isinstance(domain.column, IntMetadata | IntCategoricalMetadata):
        kind = "int"
    return OutputColumn(domain.name, column_dtype(domain.column), kind)


def draw_samples(
    synthesizer: Any,
    outputs: Sequence[OutputColumn],
    nb_samples: int,
    condition: Condition | None,
    max_rounds: int,
    max_draw: int,
) -> pd.DataFrame:
    """`nb_samples` typed rows, those that meet the condition if there is one (at most `max_rounds` draws)."""
    if condition is None:
        return _typed_samples(synthesizer.sample(nb_samples), outputs)
    kept, drawn, accepted = [], 0, 0
    for _ in range(max_rounds):
        missing = nb_samples - accepted
        if missing <= 0:
            break
        size = missing if drawn == 0 else _next_draw(missing, nb_samples, accepted / drawn, max_draw)
        batch = _typed_samples(synthesizer.sample(size), outputs)
        batch = batch[mask(condition, batch)]
        kept.append(batch)
        drawn, accepted = drawn + size, accepted + len(batch)
    return pd.concat(kept, ignore_index=True).head(nb_samples)


def _next_draw(missing: int, wanted: int, rate: float, max_draw: int) -> int:
    """Enough rows to find the missing ones at the acceptance rate seen so far (with a margin), but at most
    ten times the rows asked for (as snsynth's own conditional sampling) and `max_samples`."""
    ceiling = min(max_draw, 10 * wanted)
    return ceiling if rate == 0 else max(missing, min(ceiling, math.ceil(1.2 * missing / rate)))


def _typed_samples(samples: pd.DataFrame, outputs: Sequence[OutputColumn]) -> pd.DataFrame:
    return pd.DataFrame({output.name: _typed(samples[output.name], output) for output in outputs})


def _typed(values: pd.Series, output: OutputColumn) -> pd.Series:
    """The column in its metadata dtype where the values allow it (datetimes come back as days)."""
    try:
        if output.kind == "datetime":
            return pd.to_datetime(pd.to_numeric(values), unit="D").astype(output.dtype)
        if output.kind == "int":
            return pd.to_numeric(values).round().astype(output.dtype)
        return values.astype(output.dtype)
    except (TypeError, ValueError, OverflowError):
        return values
