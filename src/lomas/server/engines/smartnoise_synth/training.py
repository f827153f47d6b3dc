"""Training and release in a child process, forked from a clean, single-threaded fork server.

The server kills the child after `max_training_seconds`. The library's process-wide state (numpy's, Python's
and torch's global generators, which it seeds with constants such as `torch.manual_seed(0)`; OpenDP's
feature switches; printed output) never touches the server or another training, and `torch_threads` bounds
the child's threads. Each child first reseeds those generators from the operating system (a fork copies
them).

Randomness: aim, mst and mwem draw their Gaussian/Laplace measurement noise from OpenDP's samplers, but
choose what to measure (exponential mechanism) with numpy's global generator (and Python's `random` in
mwem); dpctgan and dpgan draw DP-SGD noise from torch's default generator (opacus without `secure_rng`,
seeded from the OS), pategan the PATE vote noise from `numpy.random.laplace`. The numpy,
Python and torch generators are not cryptographically secure.

Spending: dpctgan and dpgan train the epochs the DP-SGD accountant affords (see `dp_sgd`). After training,
mwem's accountant and dpctgan's epsilon list are checked against the declared epsilon. aim and mst spend by
construction (OpenDP's zCDP conversion). pategan stops after the PATE iteration that reaches
epsilon and exposes no accountant: it may overshoot by that last iteration, which cannot be checked from
outside the library. How the CTGANs pick real rows during training (by category, not uniformly as the
accountant assumes) is the library's and is not changed here.
"""

from __future__ import annotations

import base64
import contextlib
import multiprocessing
import os
import pickle
import random
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pandas as pd
from snsynth import Synthesizer
from snsynth.mwem import Histogram as MwemHistogram

from lomas.server.engines.smartnoise_synth.columns import training_frame
from lomas.server.engines.smartnoise_synth.dp_sgd import affordable_epochs, dp_sgd_epsilon
from lomas.server.engines.smartnoise_synth.plan import SynthPlan
from lomas.server.engines.smartnoise_synth.sampling import draw_samples
from lomas.server.engines.smartnoise_synth.stripping import withhold_private_state

_TOLERANCE = 1e-9  # relative slack when comparing an accountant's spend with the declared epsilon
# Imported once by the fork server, so that every training process starts with them loaded.
_TRAINING_MODULES = [
    __name__,
    "snsynth.mwem",
    "snsynth.aim",
    "snsynth.mst.mst",
    "snsynth.pytorch.nn.dpctgan",
    "snsynth.pytorch.nn.pategan",
    "snsynth.pytorch.nn.dpgan",
]
_CONTEXT = multiprocessing.get_context("forkserver")


@dataclass(frozen=True)
class Task:
    """Everything the training process needs; pickled to it."""

    plan: SynthPlan
    frame: pd.DataFrame
    torch_threads: int
    max_rounds: int
    max_draw: int


class TrainingError(RuntimeError):
    """The training process failed or was stopped; the message may quote the library (shown on dummy data)."""


def preload_fork_server() -> None:
    """Have the fork server import the training modules once (it starts with the first training)."""
    _CONTEXT.set_forkserver_preload(_TRAINING_MODULES)


def run_in_child(task: Task, timeout: float) -> pd.DataFrame | str:
    """Train and sample (or pickle) in a process forked from the fork server; kill it after `timeout`."""
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=_child_main, args=(sender, task), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise TrainingError(
                f"Training stopped: it took longer than the limit of {timeout:g} s "
                "(smartnoise_synth.max_training_seconds)."
            )
        outcome, payload = receiver.recv()
    except EOFError:
        process.join(5)
        raise TrainingError(
            f"The training process ended without an answer (exit code {process.exitcode})."
        ) from None
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        receiver.close()
    if outcome != "ok":
        raise TrainingError(payload)
    return payload


def _child_main(sender: Connection, task: Task) -> None:
    try:
        _fresh_process_state(task.torch_threads)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome: tuple[str, Any] = ("ok", _train_and_release(task))
    except BaseException as error:  # reported to the server, which decides what the caller may see
        outcome = ("error", f"{type(error).__name__}: {error}")
    sender.send(outcome)
    sender.close()


def _fresh_process_state(torch_threads: int) -> None:
    """Reseed the global generators the library draws from (the fork copied the fork server's state)."""
    import torch

    np.random.seed()
    random.seed()
    torch.seed()
    torch.set_num_threads(torch_threads)


def _train_and_release(task: Task) -> pd.DataFrame | str:
    plan = task.plan
    frame = training_frame(task.frame, plan.columns, plan.drop_null_rows)
    kwargs = dict(plan.synth_kwargs)
    if plan.dp_sgd is not None:
        if len(frame) < plan.dp_sgd.batch_size:
            raise ValueError(
                f"batch_size {plan.dp_sgd.batch_size} is larger than the {len(frame)} training rows."
            )
        kwargs["epochs"] = affordable_epochs(plan.dp_sgd, len(frame), plan.epsilon)
        if kwargs["epochs"] == 0:
            raise ValueError(f"one epoch on {len(frame)} rows would spend more than epsilon {plan.epsilon}.")
    synthesizer = Synthesizer.create(plan.synth, epsilon=plan.epsilon, **kwargs)
    if plan.synth == "mwem":
        _histograms_over_public_ranges(synthesizer, plan.transformer.cardinality)
    synthesizer.fit(frame, transformer=plan.transformer, preprocessor_eps=0.0)
    if plan.synth == "mwem":
        del synthesizer._histogram_from_data_attributes  # a closure: the model must still pickle
    _check_spent(plan, synthesizer, len(frame))
    withhold_private_state(plan.synth, synthesizer)
    release = plan.release
    if release.return_model:
        return base64.b64encode(pickle.dumps(synthesizer)).decode("ascii")
    return draw_samples(
        synthesizer, plan.outputs, release.nb_samples, release.condition, task.max_rounds, task.max_draw
    )


def _histograms_over_public_ranges(synthesizer: Any, cardinality: list[int]) -> None:
    """Make mwem size each histogram from the columns' public cardinalities.

    snsynth's `_histogram_from_data_attributes` takes each column's range from the smallest and largest
    encoded value of the private data and keeps it (`mins_maxes`), so a model, and even its samples,
    revealed the data's extremes (with narrow bins, at any precision). This is the same histogram over the
    public range 0..cardinality-1 of each encoded column.
    """

    def histograms(data: np.ndarray, splits: Any = ()) -> list[Any]:
        made = []
        for split in splits:
            sizes = [cardinality[column] for column in split]
            for column, size in zip(split, sizes):
                synthesizer.mins_maxes[str(column)] = (0, size - 1)
                synthesizer.scale[str(column)] = 1
            ranges = [(-0.5, size - 0.5) for size in sizes]  # bin k holds the code k
            histogram, bins = np.histogramdd(data[:, split], bins=sizes, range=ranges)
            made.append(MwemHistogram(histogram, sizes, bins, split))
        return made

    synthesizer._histogram_from_data_attributes = histograms


def _check_spent(plan: SynthPlan, synthesizer: Any, rows: int) -> None:
    """Where snsynth exposes its accountant, it must not have spent more than the declared epsilon."""
    limit = plan.epsilon * (1 + _TOLERANCE)
    spent: list[float] = []
    if plan.synth == "mwem":
        spent = [synthesizer.spent]
    elif plan.synth == "dpctgan" and plan.dp_sgd is not None:
        spent = [*synthesizer.epsilon_list, dp_sgd_epsilon(plan.dp_sgd, rows, len(synthesizer.epsilon_list))]
    if any(value > limit for value in spent):
        raise RuntimeError(
            f"{plan.synth} spent epsilon {max(spent):.6g}, more than the declared {plan.epsilon}."
        )
