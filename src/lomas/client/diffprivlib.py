"""DiffPrivLib queries: fit a pipeline of `diffprivlib.models` on the private data.

The pipeline is sent as diffprivlib_logger JSON (the format of lomas-client 0.4.1). The fitted pipeline
comes back twice: as the base64 pickle of the 0.4 protocol, which this client never unpickles (a pickle
runs whatever code its author chose), and as plain JSON (`model_params`), from which it rebuilds the
pipeline with the classes of `diffprivlib.models` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import diffprivlib
import numpy as np
from sklearn.pipeline import Pipeline

from lomas.client.http import LomasHttp
from lomas.client.results import Answer
from lomas.core.diffprivlib_models import MODELS, TYPE_PREFIX, estimator_from_json, tuple_json
from lomas.core.errors import DPLibrary
from lomas.core.requests import DUMMY_NB_ROWS, DUMMY_SEED, ImputerStrategy
from lomas.core.responses import CostResponse, DiffPrivLibResult, DiffPrivLibStep


@dataclass(frozen=True)
class DiffPrivLibQueryResult(Answer):
    """A pipeline fitted with differential privacy, and what it cost.

    `score` is computed by the server on a dummy dataset (never on private data): it tells whether the
    pipeline runs, not how well it fits the private data.
    """

    score: float
    model: Pipeline


class DiffPrivLibClient:
    def __init__(self, http: LomasHttp) -> None:
        self._http = http

    def cost(
        self,
        pipeline: Pipeline,
        feature_columns: list[str],
        target_columns: list[str] | None = None,
        test_size: float = 0.2,
        test_train_split_seed: int = 1,
        imputer_strategy: ImputerStrategy = "drop",
    ) -> CostResponse:
        """What fitting the pipeline would cost (the sum of its steps' epsilons), without fitting it."""
        fields = _fields(pipeline, feature_columns, target_columns, test_size, test_train_split_seed, imputer_strategy)
        return self._http.cost(DPLibrary.DIFFPRIVLIB, fields)

    def query(
        self,
        pipeline: Pipeline,
        feature_columns: list[str],
        target_columns: list[str] | None = None,
        test_size: float = 0.2,
        test_train_split_seed: int = 1,
        imputer_strategy: ImputerStrategy = "drop",
        dummy: bool = False,
        nb_rows: int = DUMMY_NB_ROWS,
        seed: int = DUMMY_SEED,
    ) -> DiffPrivLibQueryResult:
        """Fit the pipeline on the private data (charged), or with `dummy=True` on dummy data (free).

        Every step of `pipeline` is a `diffprivlib.models` estimator that declares its bounds (`bounds`,
        `bounds_X`, `bounds_y`, `data_norm`, and `classes` for trees): the server refuses to let a model
        compute them from the private data. `random_state` seeds are honoured on dummy data only.
        `target_columns` names one column, or is None for pipelines without a target (KMeans, PCA).
        """
        fields = _fields(pipeline, feature_columns, target_columns, test_size, test_train_split_seed, imputer_strategy)
        response = self._http.query(DPLibrary.DIFFPRIVLIB, fields, dummy, nb_rows, seed, as_job=True)
        result = response.result
        assert isinstance(result, DiffPrivLibResult)
        if result.model_params is None:
            raise ValueError(
                "The server sent the fitted pipeline as a pickle only; this client does not unpickle."
            )
        return DiffPrivLibQueryResult(
            response.epsilon,
            response.delta,
            response.requested_by,
            result.score,
            pipeline_from_params(result.model_params),
        )


def _fields(
    pipeline: Pipeline,
    feature_columns: list[str],
    target_columns: list[str] | None,
    test_size: float,
    test_train_split_seed: int,
    imputer_strategy: ImputerStrategy,
) -> dict[str, Any]:
    return {
        "diffprivlib_json": serialise_pipeline(pipeline),
        "feature_columns": feature_columns,
        "target_columns": target_columns,
        "test_size": test_size,
        "test_train_split_seed": test_train_split_seed,
        "imputer_strategy": imputer_strategy,
    }


# -- the request: a pipeline as diffprivlib_logger JSON -----------------------------------------------------
def serialise_pipeline(pipeline: Pipeline) -> str:
    """The pipeline in the diffprivlib_logger format that lomas-client 0.4.1 sends.

    Accountants are sent as null: the server gives every step a fresh one.
    """
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"pipeline must be a sklearn.pipeline.Pipeline, not {type(pipeline).__name__}")
    steps = []
    for name, step in pipeline.steps:
        if MODELS.get(type(step).__name__) is not type(step):
            raise TypeError(
                f"Step {name!r} is a {type(step).__name__}; "
                f"steps must be one of diffprivlib.models {sorted(MODELS)}."
            )
        params = step.get_params(deep=False)
        params["accountant"] = None
        steps.append(
            {
                "type": TYPE_PREFIX + type(step).__name__,
                "name": name,
                "params": {key: _param_json(value, f"{name}.{key}") for key, value in params.items()},
            }
        )
    return json.dumps({"module": "diffprivlib", "version": diffprivlib.__version__, "pipeline": steps})


def _param_json(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return tuple_json([_param_json(item, where) for item in value])
    if isinstance(value, list):
        return [_param_json(item, where) for item in value]
    raise TypeError(
        f"{where} is a {type(value).__name__}; "
        "parameters must be numbers, text, lists or tuples (random_state an int)."
    )


# -- the response: a fitted pipeline rebuilt from `model_params` ---------------------------------------------
def pipeline_from_params(steps: list[DiffPrivLibStep]) -> Pipeline:
    """The fitted pipeline, rebuilt from its JSON form with the classes of `diffprivlib.models` only."""
    return Pipeline([(step.name, estimator_from_json(step.type, step.params, step.fitted)) for step in steps])
