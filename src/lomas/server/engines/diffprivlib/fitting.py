"""Fitting a plan: the arrays it trains on, fresh accountants, a check of their spending, the dummy score."""

from __future__ import annotations

import numpy as np
import pandas as pd
from diffprivlib import BudgetAccountant
from sklearn.pipeline import Pipeline

from lomas.server.dummy import make_dummy_frame
from lomas.server.engines.diffprivlib.plan import DiffPrivLibPlan, Target


def arrays(frame: pd.DataFrame, plan: DiffPrivLibPlan) -> tuple[np.ndarray, np.ndarray | None]:
    """Features as float64 and the target, missing values dropped or filled as the plan says."""
    features = frame[list(plan.features)].to_numpy(dtype=np.float64, na_value=np.nan)
    missing = np.isnan(features)
    target, target_missing = (
        (None, None) if plan.target is None else _target_values(frame[plan.target.column], plan.target)
    )
    if plan.feature_fills is not None:
        np.copyto(features, np.broadcast_to(plan.feature_fills, features.shape), where=missing)
        return features, target
    keep = ~missing.any(axis=1)
    if target_missing is not None:
        keep &= ~target_missing
    return features[keep], None if target is None else target[keep]


def _target_values(series: pd.Series, target: Target) -> tuple[np.ndarray, np.ndarray]:
    """The target with missing values set to the fill value, and where they were missing."""
    if target.classes is None:
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(values)
        values[missing] = target.fill
        return values, missing
    codes = pd.Categorical(series, categories=target.classes).codes
    missing = codes < 0  # missing, or a value outside the declared categories
    codes = np.where(missing, target.classes.index(target.fill), codes)
    return np.asarray(target.classes)[codes], missing


def fresh_pipeline(plan: DiffPrivLibPlan) -> Pipeline:
    """New estimators, each with an accountant of its own capped at the step's declared budget."""
    return Pipeline(
        [
            (
                step.name,
                step.spec.model(**step.kwargs, accountant=BudgetAccountant(epsilon=step.epsilon, delta=0.0)),
            )
            for step in plan.steps
        ]
    )


def check_spending(pipeline: Pipeline, plan: DiffPrivLibPlan) -> None:
    """Fail if a step spent more than its declared (epsilon, 0)."""
    for step, (_name, model) in zip(plan.steps, pipeline.steps, strict=True):
        epsilon, delta = model.accountant.total()
        if epsilon > step.epsilon or delta > 0:
            raise RuntimeError(
                f"step {step.name} spent ({epsilon}, {delta}), more than its declared ({step.epsilon}, 0)"
            )


def dummy_score(pipeline: Pipeline, plan: DiffPrivLibPlan) -> float:
    """The pipeline's score on dummy data from the metadata: free, and no statistic of private data."""
    features, target = arrays(make_dummy_frame(plan.score_metadata, plan.score_rows, plan.split_seed), plan)
    return float(pipeline.score(features, target))
