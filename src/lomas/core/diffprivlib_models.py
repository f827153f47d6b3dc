"""The DiffPrivLib pipeline formats that the client and the server share.

Requests carry a pipeline as diffprivlib_logger JSON (what lomas-client 0.4.1 sends): each step's type is
`TYPE_PREFIX` + a class name of `MODELS`, accountants are `ACCOUNTANT` or null, and tuples are tagged as
`tuple_json` writes them. Answers carry the fitted pipeline as `DiffPrivLibStep`s: the server writes each
model with `estimator_json` and the client rebuilds it with `estimator_from_json`, from the classes of
`MODELS` only; the tags are described in `DiffPrivLibStep`.

This module imports diffprivlib and scikit-learn: only the client and the server's DiffPrivLib engine
import it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from diffprivlib import BudgetAccountant, models
from sklearn.base import BaseEstimator
from sklearn.tree._tree import NODE_DTYPE, Tree

# The classes of `diffprivlib.models` a pipeline may hold, by the name both formats give them.
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
TYPE_PREFIX = "_dpl_type:"
ACCOUNTANT = "_dpl_instance:BudgetAccountant"
_DTYPE_KINDS = frozenset("biufUO")  # plain numbers, text and Python objects (filled from JSON values only)


def tuple_json(items: list[Any]) -> dict[str, Any]:
    """A tuple, its items already in JSON form, tagged as in both formats."""
    return {"_tuple": True, "_items": items}


def tuple_items(value: dict[str, Any]) -> list[Any] | None:
    """The items of a tuple tagged as `tuple_json` writes it, or None if `value` is no such tuple."""
    if set(value) == {"_tuple", "_items"} and value["_tuple"] is True and isinstance(value["_items"], list):
        return value["_items"]
    return None


# -- the answer: a fitted model as JSON (written by the server) -------------------------------------------
def estimator_json(model: BaseEstimator) -> dict[str, Any]:
    """The `type`, `params` and `fitted` of a `DiffPrivLibStep`, the accountant left out."""
    params = model.get_params(deep=False)
    del params["accountant"]
    fitted = {
        name: value for name, value in vars(model).items() if name not in params and name != "accountant"
    }
    return {
        "type": type(model).__name__,
        "params": {name: _to_json(value) for name, value in params.items()},
        "fitted": {name: _to_json(value) for name, value in fitted.items()},
    }


def _to_json(value: Any) -> Any:
    """A parameter or fitted attribute in the tagged JSON of `DiffPrivLibStep`."""
    match value:
        case None | bool() | int() | float() | str():
            return value
        case np.ndarray():
            return {"_ndarray": value.ravel().tolist(), "dtype": value.dtype.str, "shape": list(value.shape)}
        case np.generic():
            return value.item()
        case tuple():
            return tuple_json([_to_json(item) for item in value])
        case list():
            return [_to_json(item) for item in value]
        case Tree():
            return {"_tree": _tree_json(value)}
        case BaseEstimator():
            return {"_estimator": estimator_json(value)}
    raise TypeError(f"No JSON form for a {type(value).__name__}")


def _tree_json(tree: Tree) -> dict[str, Any]:
    state = tree.__getstate__()
    nodes = state["nodes"]
    return {
        "n_features": int(tree.n_features),
        "n_classes": tree.n_classes.tolist(),
        "n_outputs": int(tree.n_outputs),
        "max_depth": int(state["max_depth"]),
        "nodes": {name: nodes[name].tolist() for name in nodes.dtype.names},
        "values": _to_json(state["values"]),
    }


# -- the answer: a fitted model rebuilt from JSON (by the client) -----------------------------------------
def estimator_from_json(type_name: str, params: dict[str, Any], fitted: dict[str, Any]) -> BaseEstimator:
    """The model that `estimator_json` wrote, built with a class of `MODELS` only."""
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
    items = tuple_items(value)
    if items is not None:
        return tuple(_from_json(item) for item in items)
    if "_tree" in value:
        return _tree(value["_tree"])
    if "_estimator" in value:
        estimator = value["_estimator"]
        return estimator_from_json(estimator["type"], estimator["params"], estimator["fitted"])
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
