"""The allow-list: the classes a pipeline may hold, each with the parameters it may take and their checkers.

The parameters that keep a model from looking at the data to find its own bounds (`bounds`, `bounds_X`,
`bounds_y`, `data_norm`, and `classes` for trees) are required by their checkers. Every allowed class
spends (epsilon, 0).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sklearn.base import BaseEstimator

import lomas.server.engines.diffprivlib.checks as checks
from lomas.core.diffprivlib_models import MODELS
from lomas.server.engines.diffprivlib.checks import Checker, StepContext

TargetKind = Literal["class", "value"]


def _same_width(_kwargs: Mapping[str, Any], width: int) -> int:
    return width


@dataclass(frozen=True)
class ModelSpec:
    """An allowed class: its parameters and their checkers, what it learns from, what it releases."""

    name: str  # a class of `MODELS`, the table the client shares
    params: Mapping[str, Checker]
    target: TargetKind | None = None
    released: frozenset[str] = frozenset()  # fitted attributes ("..._") that are DP outputs or public
    output_width: Callable[[Mapping[str, Any], int], int] = _same_width
    check: Callable[[Mapping[str, Any], StepContext], None] | None = None
    model: type[BaseEstimator] = field(init=False)
    defaults: Mapping[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        model = MODELS[self.name]
        signature = inspect.signature(model).parameters
        unknown = set(self.params) - set(signature)
        if unknown:  # the allow-list and the installed diffprivlib disagree: refuse to start
            raise RuntimeError(f"{self.name} takes no parameter {sorted(unknown)}")
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "defaults", {name: signature[name].default for name in self.params})


_COMMON: dict[str, Checker] = {
    "epsilon": checks.epsilon,
    "random_state": checks.seed,
    "accountant": checks.accountant,
}
_TREE_RELEASED = frozenset({"n_features_in_", "n_outputs_", "classes_", "n_classes_"})

SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "StandardScaler",
            {
                **_COMMON,
                "bounds": checks.bounds,
                "copy": checks.flag,
                "with_mean": checks.flag,
                "with_std": checks.flag,
            },
            released=frozenset({"n_features_in_", "mean_", "var_", "scale_"}),
        ),
        ModelSpec(
            "PCA",
            {
                **_COMMON,
                "n_components": checks.n_components,
                "data_norm": checks.data_norm,
                "centered": checks.flag,
                "bounds": checks.bounds,
                "copy": checks.flag,
                "whiten": checks.flag,
            },
            released=frozenset(
                {
                    "n_features_in_",
                    "mean_",
                    "components_",
                    "n_components_",
                    "explained_variance_",
                    "explained_variance_ratio_",
                    "noise_variance_",
                }
            ),
            output_width=lambda kwargs, width: kwargs["n_components"] or width,
        ),
        ModelSpec(
            "KMeans",
            {**_COMMON, "n_clusters": checks.int_in(1, "max_clusters"), "bounds": checks.bounds},
            released=frozenset({"n_features_in_", "cluster_centers_"}),
            output_width=lambda kwargs, _width: kwargs["n_clusters"],
        ),
        ModelSpec(
            "LogisticRegression",
            {
                **_COMMON,
                "data_norm": checks.data_norm,
                "tol": checks.positive,
                "C": checks.positive,
                "fit_intercept": checks.flag,
                "max_iter": checks.int_in(1, "max_iter"),
                "verbose": checks.zero,
                "warm_start": checks.flag,
                "n_jobs": checks.single_job,
            },
            target="class",
            released=frozenset({"n_features_in_", "classes_", "coef_", "intercept_"}),
        ),
        ModelSpec(
            "LinearRegression",
            {
                **_COMMON,
                "bounds_X": checks.bounds,
                "bounds_y": checks.target_bounds,
                "fit_intercept": checks.flag,
                "copy_X": checks.flag,
            },
            target="value",
            released=frozenset({"n_features_in_", "coef_", "intercept_"}),
        ),
        ModelSpec(
            "GaussianNB",
            {
                **_COMMON,
                "bounds": checks.bounds,
                "priors": checks.priors,
                "var_smoothing": checks.non_negative,
            },
            target="class",
            released=frozenset(
                {"n_features_in_", "classes_", "epsilon_", "theta_", "var_", "class_prior_"}
            ),
        ),
        ModelSpec(
            "DecisionTreeClassifier",
            {
                **_COMMON,
                "max_depth": checks.int_in(1, "max_depth"),
                "bounds": checks.bounds,
                "classes": checks.classes,
                "criterion": checks.null,
            },
            target="class",
            released=_TREE_RELEASED | {"tree_"},
            check=checks.tree_size,
        ),
        ModelSpec(
            "RandomForestClassifier",
            {
                **_COMMON,
                "n_estimators": checks.int_in(1, "max_estimators"),
                "max_depth": checks.int_in(1, "max_depth"),
                "bounds": checks.bounds,
                "classes": checks.classes,
                "n_jobs": checks.single_job,
                "verbose": checks.zero,
                "warm_start": checks.flag,
                "shuffle": checks.flag,
            },
            target="class",
            released=_TREE_RELEASED | {"estimators_", "estimator_"},
            check=checks.tree_size,
        ),
    )
}
SPECS_BY_MODEL = {spec.model: spec for spec in SPECS.values()}
