"""What is removed from, or neutralised in, a fitted synthesizer before it is sampled or pickled.

A fitted synthesizer keeps some of the private data itself: mwem its copy of the training data and true
histograms (its synthetic histograms are scaled to sum 1, as their total is the exact row count; the range
of each histogram comes from the public cardinalities, see `training`); aim and
mst the exact row count; the CTGANs their losses, epsilon list (from which the row count follows), copy of
the training data and exact category frequencies, from which snsynth would otherwise draw the condition of
every generated row (the frequencies become uniform, the rows a public stand-in), and dpctgan the number of
epochs its budget afforded; pategan its number of teachers (its teacher list still has that length).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def withhold_private_state(synth: str, synthesizer: Any) -> None:
    """Remove or neutralise what a fitted synthesizer keeps of the private data (see the module docstring)."""
    if synth == "mwem":
        synthesizer.data = None
        synthesizer.histograms = []
        synthesizer.synthetic_histograms = [
            (fake / fake.sum(), None, split) for fake, _real, split in synthesizer.synthetic_histograms
        ]
    elif synth in ("aim", "mst"):
        synthesizer.num_rows = None
    elif synth == "dpctgan":
        _neutralise_sampler(synthesizer._data_sampler)
        synthesizer.loss_d_list, synthesizer.loss_g_list = [], []
        synthesizer.epsilon_list, synthesizer.alpha_list = [], []
        synthesizer._epochs = None  # the epochs epsilon afforded depend on the private row count
    elif synth == "pategan":
        synthesizer.num_teachers = None  # one teacher per 1000 private rows


def _neutralise_sampler(sampler: Any) -> None:
    """The CTGAN data sampler holds the training data and its exact category frequencies; keep neither.

    An identity matrix stands in for the training rows, a public table that picks every category of every
    column.
    """
    tallest = max(sampler._discrete_column_n_category, default=1)
    sampler._data = np.eye(tallest, sampler._data.shape[1])
    sampler._rid_by_cat_cols = []
    probabilities = sampler._discrete_column_category_prob
    for column, width in enumerate(sampler._discrete_column_n_category):
        probabilities[column, :] = 0.0
        probabilities[column, :width] = 1.0 / width
