"""The DP-SGD accountant of dpctgan and dpgan, as opacus computes it with the orders snsynth gives it.

They train at most as many epochs as the accountant allows within epsilon for the actual number of rows;
snsynth itself would stop only after the epoch that crossed it.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

# The Renyi orders snsynth gives opacus.
_OPACUS_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


@dataclass(frozen=True)
class DpSgd:
    """What the DP-SGD accountant of dpctgan and dpgan depends on, besides the number of rows."""

    batch_size: int
    noise_multiplier: float
    delta: float
    drop_last: bool  # dpgan's loader drops the last partial batch; dpctgan runs at least one batch per epoch
    max_epochs: int


@functools.cache
def _opacus_accountant() -> ModuleType:
    """opacus' RDP accountant, loaded on its own: the module is plain Python, but importing it through the
    opacus package would load torch into the server process, which never trains anything itself."""
    package = importlib.util.find_spec("opacus")
    assert package is not None and package.submodule_search_locations is not None
    path = Path(next(iter(package.submodule_search_locations))) / "privacy_analysis.py"
    spec = importlib.util.spec_from_file_location("_lomas_opacus_privacy_analysis", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dp_sgd_epsilon(dp_sgd: DpSgd, rows: int, epochs: int) -> float:
    """What opacus reports after `epochs` epochs; the discriminator steps twice per batch (fake, real)."""
    privacy_analysis = _opacus_accountant()
    batches = rows // dp_sgd.batch_size if dp_sgd.drop_last else max(rows // dp_sgd.batch_size, 1)
    rdp = privacy_analysis.compute_rdp(
        dp_sgd.batch_size / rows, dp_sgd.noise_multiplier, 2 * batches * epochs, _OPACUS_ORDERS
    )
    epsilon, _ = privacy_analysis.get_privacy_spent(_OPACUS_ORDERS, rdp, dp_sgd.delta)
    return float(epsilon)


def affordable_epochs(dp_sgd: DpSgd, rows: int, epsilon: float) -> int:
    """The most epochs (up to the requested ones) whose DP-SGD spend stays within epsilon."""
    low, high = 0, dp_sgd.max_epochs
    while low < high:
        middle = (low + high + 1) // 2
        if dp_sgd_epsilon(dp_sgd, rows, middle) <= epsilon:
            low = middle
        else:
            high = middle - 1
    return low
