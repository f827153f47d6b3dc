"""A checked SmartNoise-Synth request: what `SmartnoiseSynthEngine.plan` returns and the training uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from snsynth.transform.table import TableTransformer

from lomas.server.engines.base import Cost
from lomas.server.engines.smartnoise_synth.condition import Condition
from lomas.server.engines.smartnoise_synth.dp_sgd import DpSgd
from lomas.server.engines.smartnoise_synth.sampling import OutputColumn


@dataclass(frozen=True)
class Release:
    """What is released: the pickled model, or `nb_samples` rows (meeting `condition`, if any)."""

    return_model: bool
    nb_samples: int
    condition: Condition | None


@dataclass(frozen=True)
class SynthPlan:
    """A checked request: the synthesizer, its arguments, the encoding of each column and what to release.

    `transformer` is fitted on public values only; run() sends a copy to the training process.
    """

    synth: str
    epsilon: float
    cost: Cost
    columns: tuple[str, ...]
    drop_null_rows: bool
    transformer: TableTransformer
    synth_kwargs: Mapping[str, Any]
    dp_sgd: DpSgd | None
    outputs: tuple[OutputColumn, ...]
    release: Release
