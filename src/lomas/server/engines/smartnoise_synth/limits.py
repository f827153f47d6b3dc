"""Checks of a synthesizer's arguments against the encoded columns and the dataset, before any data is read.

They refuse what the library would fail on, or what would exceed the server's memory limits (mwem's
histograms, aim's and mst's marginals), and fill in snsynth defaults that would depend on private data.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from snsynth.transform.table import TableTransformer

from lomas.core.errors import InvalidQueryError
from lomas.server.config import SmartnoiseSynthSettings
from lomas.server.engines.smartnoise_synth.dp_sgd import DpSgd, dp_sgd_epsilon
from lomas.server.engines.smartnoise_synth.params import DP_SGD_SYNTHESIZERS

PATEGAN_MIN_ROWS = 1_000  # pategan makes one teacher per 1000 rows, and fails without any
PATE_MOMENTS_ORDER = 100  # the largest Renyi order of snsynth's PATE accountants
DPGAN_NOISE_MULTIPLIER = 3.5  # fixed by snsynth's DPGAN


def check_limits(
    synth: str,
    kwargs: dict[str, Any],
    table: TableTransformer,
    rows: int,
    epsilon: float,
    delta: float,
    settings: SmartnoiseSynthSettings,
) -> DpSgd | None:
    """Check (and complete) `kwargs`; returns the DP-SGD accounting of dpctgan and dpgan."""
    if synth == "mwem":
        _check_mwem(kwargs, _cube_cardinalities(table), rows, settings.max_histogram_cells)
    elif synth == "aim":
        _check_aim(kwargs, _cube_cardinalities(table))
    elif synth == "mst":
        _check_mst(_cube_cardinalities(table), settings.max_marginal_cells)
    else:
        return _check_gan(synth, kwargs, rows, epsilon, delta)
    return None


def _cube_cardinalities(table: TableTransformer) -> list[int]:
    cards = table.cardinality
    assert all(card is not None for card in cards) and len(cards) == table.output_width
    return [int(card) for card in cards]


def _check_mwem(kwargs: dict[str, Any], cards: list[int], rows: int, max_cells: int) -> None:
    """mwem's memory is one histogram per split of `split_factor` consecutive encoded columns."""
    # snsynth's default iterations, from the public row count rather than the private one
    kwargs.setdefault("iterations", math.ceil(math.log10(max(rows, 2))) * 10)
    if kwargs.get("q_count", kwargs["iterations"]) < kwargs["iterations"]:
        raise InvalidQueryError(
            "synth_params: mwem needs q_count >= iterations (it measures a new query each iteration)."
        )
    factor = kwargs.get("split_factor", len(cards))
    for start in range(0, len(cards), factor):
        cells = math.prod(card + 2 for card in cards[start : start + factor])  # numpy adds 2 outlier bins
        if cells > max_cells:
            raise InvalidQueryError(
                f"mwem would build a histogram of {cells:,} cells; the limit is {max_cells:,} "
                "(max_histogram_cells). "
                "Select fewer columns, bin them more coarsely, or set a smaller synth_params split_factor."
            )


def _check_aim(kwargs: dict[str, Any], cards: list[int]) -> None:
    if kwargs.get("rounds", len(cards)) < len(cards):
        raise InvalidQueryError(f"synth_params: aim needs rounds >= {len(cards)} (one per encoded column).")
    degree, max_cells = kwargs.get("degree", 2), kwargs.get("max_cells", 10_000)
    if degree > len(cards) or not any(
        math.prod(clique) <= max_cells for clique in itertools.combinations(cards, degree)
    ):
        raise InvalidQueryError(
            f"aim finds no marginal of degree {degree} within max_cells={max_cells}; "
            "lower degree or bin more coarsely."
        )


def _check_mst(cards: list[int], max_cells: int) -> None:
    largest = sorted(cards)[-2:]
    if math.prod(largest) > max_cells:
        raise InvalidQueryError(
            f"mst measures every pair of columns; the largest pair has {math.prod(largest):,} cells, "
            "the limit is "
            f"{max_cells:,} (max_marginal_cells). Select fewer categories or bin more coarsely."
        )


def _check_gan(synth: str, kwargs: dict[str, Any], rows: int, epsilon: float, delta: float) -> DpSgd | None:
    """GAN checks before any data is read; returns the DP-SGD accounting of dpctgan and dpgan."""
    batch_size = kwargs.get("batch_size", 500 if synth == "dpctgan" else 64)
    if synth == "dpctgan":
        kwargs["verbose"] = False
        if batch_size % 2 or batch_size % kwargs.get("pac", 1):
            raise InvalidQueryError(f"synth_params: {synth} needs an even batch_size that pac divides.")
    if synth == "pategan" and rows < PATEGAN_MIN_ROWS:
        raise InvalidQueryError(
            f"pategan needs at least {PATEGAN_MIN_ROWS} rows (one teacher per 1000); this dataset has {rows}."
        )
    if synth == "pategan" and epsilon <= math.log(1 / delta) / PATE_MOMENTS_ORDER:
        raise InvalidQueryError(
            f"{synth} needs epsilon > ln(1/delta)/{PATE_MOMENTS_ORDER} = "
            f"{math.log(1 / delta) / PATE_MOMENTS_ORDER:.3g}."
        )
    if synth not in DP_SGD_SYNTHESIZERS:
        return None
    if batch_size > rows:
        raise InvalidQueryError(
            f"synth_params: batch_size {batch_size} is larger than the dataset ({rows} rows)."
        )
    noise = kwargs.get("sigma", 5.0) if synth == "dpctgan" else DPGAN_NOISE_MULTIPLIER
    dp_sgd = DpSgd(
        batch_size, noise, delta, synth == "dpgan", kwargs.get("epochs", 300 if synth == "dpctgan" else 1000)
    )
    one_epoch = dp_sgd_epsilon(dp_sgd, rows, 1)
    if one_epoch > epsilon:
        raise InvalidQueryError(
            f"{synth}: one epoch on {rows} rows already spends epsilon {one_epoch:.3g} > {epsilon}; "
            "raise epsilon" + (", sigma or batch_size." if synth == "dpctgan" else " or batch_size.")
        )
    return dp_sgd
