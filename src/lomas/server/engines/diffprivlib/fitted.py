"""The released form of a fitted pipeline: non-DP attributes withheld, then pickled and written as JSON."""

from __future__ import annotations

import base64
import pickle

from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from lomas.core.diffprivlib_models import estimator_json
from lomas.core.responses import DiffPrivLibResult, DiffPrivLibStep
from lomas.server.engines.diffprivlib.allow_list import SPECS_BY_MODEL


def released_result(pipeline: Pipeline, score: float) -> DiffPrivLibResult:
    """The result: the pipeline, its non-DP attributes removed, as the 0.4 pickle and as JSON."""
    for _name, model in pipeline.steps:
        _withhold_unreleased(model)
    return DiffPrivLibResult(
        score=score,
        model=base64.b64encode(pickle.dumps(pipeline)).decode("ascii"),
        model_params=[
            DiffPrivLibStep(name=name, **estimator_json(model)) for name, model in pipeline.steps
        ],
    )


def _withhold_unreleased(model: BaseEstimator) -> None:
    """Delete the fitted attributes that are not DP outputs, in the model and in the models it holds."""
    released = SPECS_BY_MODEL[type(model)].released
    for name in [name for name in vars(model) if name.endswith("_") and name not in released]:
        delattr(model, name)
    for value in vars(model).values():
        for inner in value if isinstance(value, list) else [value]:
            if isinstance(inner, BaseEstimator):
                _withhold_unreleased(inner)
