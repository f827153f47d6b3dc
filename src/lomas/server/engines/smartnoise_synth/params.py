"""Which synthesizers are served, the allow-list of their `synth_params`, and the cost rules.

`synth_params` are checked against an allow-list per synthesizer (types, ranges, server limits); `epsilon`
and `delta` come from the request fields only and `disabled_dp` may not be switched on.

Cost, from the request and the metadata alone: (epsilon, 0) for mwem, which uses no delta; (epsilon, delta)
for the others. When delta is left out, aim and mst take snsynth's default 1e-9 and the GANs
1 / (rows * sqrt(rows)) with the metadata's `rows` (snsynth would compute it from the private row count).
That delta is what the synthesizer is given and what is charged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lomas.core.errors import InvalidQueryError
from lomas.core.requests import SmartnoiseSynthCostRequest, SmartnoiseSynthQueryRequest
from lomas.server.config import SmartnoiseSynthSettings
from lomas.server.engines.smartnoise_synth.checkers import (
    AllowList,
    Checker,
    Refused,
    flag,
    integer,
    one_of,
    real,
    widths,
)

CUBE_SYNTHESIZERS = ("mwem", "aim", "mst")  # one categorical code per column; the others are GANs
DP_SGD_SYNTHESIZERS = ("dpctgan", "dpgan")
MARGINAL_DEFAULT_DELTA = 1e-9  # snsynth's default delta of aim and mst


def check_synthesizer(request: SmartnoiseSynthCostRequest) -> None:
    """Refuse pacsynth and patectgan, and a returned mst model."""
    if request.synth_name == "pacsynth":
        raise InvalidQueryError(
            "pacsynth is not supported: it can crash the server process (a Rust panic). "
            "Choose aim, mwem, mst, dpctgan, pategan or dpgan."
        )
    if request.synth_name == "patectgan":
        raise InvalidQueryError(
            "patectgan is not supported: its privacy accounting runs a whole PATE iteration before it checks "
            "epsilon, which can spend hundreds of times the declared epsilon, and its teachers and student "
            "share one network. Choose aim, mwem, mst, dpctgan, pategan or dpgan."
        )
    if (
        isinstance(request, SmartnoiseSynthQueryRequest)
        and request.return_model
        and request.synth_name == "mst"
    ):
        raise InvalidQueryError(
            "mst models cannot be returned (they do not pickle); ask for samples (return_model=false)."
        )


def synth_delta(synth: str, declared: float | None, rows: int) -> float:
    """The delta the synthesizer is given and that is charged; `rows` is the metadata's."""
    if synth == "mwem":
        return 0.0
    if declared == 0:
        raise InvalidQueryError(
            f"{synth} needs delta > 0 (for example 1e-5), or no delta to use the default."
        )
    if declared is not None:
        return declared
    if synth in CUBE_SYNTHESIZERS:
        return MARGINAL_DEFAULT_DELTA
    return 1 / (rows * math.sqrt(rows))


def synth_param_checkers(s: SmartnoiseSynthSettings) -> dict[str, dict[str, Checker]]:
    """The allow-list of `synth_params`, per synthesizer (everything else is refused)."""
    width = integer(1, s.max_layer_width, "max_layer_width")
    layers = widths(s.max_layers, s.max_layer_width)
    rate = real(0.0, 1.0, low_open=True)
    decay = real(0.0, 1.0)
    batch = integer(2, s.max_batch_size, "max_batch_size")
    epochs = integer(1, s.max_epochs, "max_epochs")
    iterations = integer(1, s.max_iterations, "max_iterations")
    ctgan = {
        "embedding_dim": width,
        "generator_dim": layers,
        "discriminator_dim": layers,
        "generator_lr": rate,
        "generator_decay": decay,
        "discriminator_lr": rate,
        "discriminator_decay": decay,
        "batch_size": batch,
        "pac": integer(1, 64),
    }
    return {
        "mwem": {
            "iterations": iterations,
            "q_count": integer(1, s.max_queries, "max_queries"),
            "split_factor": integer(1, 1_000),
            "marginal_width": integer(1, 3),
            "add_ranges": flag,
            "measure_only": flag,
            "max_retries_exp_mechanism": integer(1, 1_000),
            "mult_weights_iterations": iterations,
        },
        "aim": {
            "rounds": iterations,
            "degree": integer(1, 3),
            "max_model_size": real(0.0, s.max_model_size_mb, low_open=True),
            "max_cells": integer(1, s.max_marginal_cells, "max_marginal_cells"),
        },
        "mst": {},
        "dpctgan": {
            **ctgan,
            "epochs": epochs,
            "sigma": real(0.0, 1_000.0, low_open=True),
            "max_per_sample_grad_norm": real(0.0, 1_000.0, low_open=True),
            "disabled_dp": one_of(False),
        },
        "pategan": {
            "latent_dim": width,
            "batch_size": batch,
            "teacher_iters": iterations,
            "student_iters": iterations,
            "binary": flag,
        },
        "dpgan": {"latent_dim": width, "batch_size": batch, "epochs": epochs, "binary": flag},
    }


def checked_synth_params(synth: str, params: Mapping[str, Any], checkers: AllowList) -> dict[str, Any]:
    """`synth_params` checked against the synthesizer's allow-list; epsilon and delta are refused here."""
    allowed = checkers[synth]
    checked = {}
    for name, value in params.items():
        if name in ("epsilon", "delta"):
            raise InvalidQueryError(
                f"synth_params: {name} is given by the request's {name} field, not in synth_params."
            )
        if name == "disabled_dp" and value is True:
            raise InvalidQueryError(
                "synth_params: disabled_dp=true would train dpctgan without differential privacy."
            )
        if name not in allowed:
            raise InvalidQueryError(
                f"synth_params: {synth} takes no parameter {name!r} here; "
                f"allowed: {sorted(allowed) or 'none'}."
            )
        try:
            checked[name] = allowed[name](value)
        except Refused as refused:
            raise InvalidQueryError(f"synth_params: {name} {refused}.") from None
    return checked
