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
from diffprivlib import BudgetAccountant, models
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.tree._tree import NODE_DTYPE, Tree

from lomas.client.http import LomasHttp
from lomas.core.requests import (
    DUMMY_NB_ROWS,
    DUMMY_SEED,
    DiffPrivLibCostRequest,
    DiffPrivLibDummyQueryRequest,
    DiffPrivLibQueryRequest,
    ImputerStrategy,
)
from lomas.core.responses import CostResponse, DiffPrivLibResult, DiffPrivLibStep, QueryResponse

MODELS: dict[str, type[BaseEstimator]] = {
    model.__name__: model
    for model in (
        models.StandardScaler,
        models.PCA,
        models.KMeans,
        models.LogisticRegression,
        models.LinearRegression,
        models.GaussianNB,
        models.DecisionTreeClassifier,
        models.RandomForestClassifier,
    )
}
_DTYPE_KINDS = frozenset("biufUO")  # plain numbers, text and Python objects (filled from JSON values only)


@dataclass(frozen=True)
class DiffPrivLibQueryResult:
    """A pipeline fitted with differential privacy, and what it cost.

    `score` is computed by the server on a dummy dataset (never on private data): it tells whether the
    pipeline runs, not how well it fits the private data.
    """

    epsilon: float
    delta: float
    requested_by: str
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
        body = DiffPrivLibCostRequest(
            dataset_name=self._http.dataset_name,
            diffprivlib_json=serialise_pipeline(pipeline),
            feature_columns=feature_columns,
            target_columns=target_columns,
            test_size=test_size,
            test_train_split_seed=test_train_split_seed,
            imputer_strategy=imputer_strategy,
        )
        return CostResponse.model_validate(self._http.post("estimate_diffprivlib_cost", body))

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
        fields: dict[str, Any] = dict(
            dataset_name=self._http.dataset_name,
            diffprivlib_json=serialise_pipeline(pipeline),
            feature_columns=feature_columns,
            target_columns=target_columns,
            test_size=test_size,
            test_train_split_seed=test_train_split_seed,
            imputer_strategy=imputer_strategy,
        )
        if dummy:
            body: DiffPrivLibQueryRequest = DiffPrivLibDummyQueryRequest(
                **fields, dummy_nb_rows=nb_rows, dummy_seed=seed
            )
            endpoint = "dummy_diffprivlib_query"
        else:
            body, endpoint = DiffPrivLibQueryRequest(**fields), "diffprivlib_query"
        response = QueryResponse.model_validate(self._http.post_job(endpoint, body))
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
                "type": f"_dpl_type:{type(step).__name__}",
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
        return {"_tuple": True, "_items": [_param_json(item, where) for item in value]}
    if isinstance(value, list):
        return [_param_json(item, where) for item in value]
    raise TypeError(
        f"{where} is a {type(value).__name__}; "
        "parameters must be numbers, text, lists or tuples (random_state an int)."
    )


# -- the response: a fitted pipeline rebuilt from `model_params` ---------------------------------------------
def pipeline_from_params(steps: list[DiffPrivLibStep]) -> Pipeline:
    """The fitted pipeline, rebuilt from its JSON form with the classes of `diffprivlib.models` only."""
    return Pipeline([(step.name, _estimator(step.type, step.params, step.fitted)) for step in steps])


def _estimator(type_name: str, params: dict[str, Any], fitted: dict[str, Any]) -> BaseEstimator:
    model_class = MODELS.get(type_name)
    if model_class is None:
        raise ValueError(f"Unexpected model type {type_name!r} in the server's answer.")
    model = model_class(
        **{key: _from_json(value) for key, value in params.items()}, accountant=BudgetAccountant()
    )
    for key, value in fitted.items():
        if not key.isidentifier() or key.startswith("__"):
            raise ValueError(f"Unexpected attribute name {key!r} in the server's answer.")
        setattr(model, key, _from_json(value))
    return model


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "_ndarray" in value:
        return _array(value)
    if "_tuple" in value:
        return tuple(_from_json(item) for item in value["_items"])
    if "_tree" in value:
        return _tree(value["_tree"])
    if "_estimator" in value:
        estimator = value["_estimator"]
        return _estimator(estimator["type"], estimator["params"], estimator["fitted"])
    raise ValueError(f"Unexpected object in the server's answer: keys {sorted(value)}")


def _array(value: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(value["dtype"])
    if dtype.kind not in _DTYPE_KINDS:
        raise ValueError(f"Unexpected array type {value['dtype']!r} in the server's answer.")
    return np.asarray(value["_ndarray"], dtype=dtype).reshape(value["shape"])


def _tree(value: dict[str, Any]) -> Tree:
    """A scikit-learn tree from its node arrays (fields unknown here are dropped, missing ones zero)."""
    node_fields = value["nodes"]
    nodes = np.zeros(len(node_fields["left_child"]), dtype=NODE_DTYPE)
    for name in NODE_DTYPE.names:
        if name in node_fields:
            nodes[name] = node_fields[name]
    tree = Tree(value["n_features"], np.asarray(value["n_classes"], dtype=np.intp), value["n_outputs"])
    values = np.ascontiguousarray(_array(value["values"]), dtype=np.float64)
    tree.__setstate__(
        {"max_depth": value["max_depth"], "node_count": len(nodes), "nodes": nodes, "values": values}
    )
    return tree
