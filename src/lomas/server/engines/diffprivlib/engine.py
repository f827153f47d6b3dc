"""The DiffPrivLib engine: plan a request against the metadata, price it, fit it on the data."""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import numpy as np
from diffprivlib.utils import PrivacyLeakWarning
from sklearn.model_selection import ShuffleSplit

from lomas.core.errors import DPLibrary
from lomas.core.requests import DiffPrivLibCostRequest, DiffPrivLibDummyQueryRequest
from lomas.core.responses import DiffPrivLibResult
from lomas.server.config import DiffPrivLibSettings
from lomas.server.data.base import DataSource
from lomas.server.engines.base import Cost, Engine
from lomas.server.engines.diffprivlib.fitted import released_result
from lomas.server.engines.diffprivlib.fitting import arrays, check_spending, dummy_score, fresh_pipeline
from lomas.server.engines.diffprivlib.pipeline import parse_pipeline
from lomas.server.engines.diffprivlib.plan import (
    DiffPrivLibPlan,
    checked_steps,
    feature_columns,
    public_fill,
    target_column,
)
from lomas.server.store.service import DatasetRecord


class DiffPrivLibEngine(Engine[DiffPrivLibCostRequest, DiffPrivLibPlan]):
    library: ClassVar[DPLibrary] = DPLibrary.DIFFPRIVLIB
    runs_long: ClassVar[bool] = True

    def __init__(self, settings: DiffPrivLibSettings) -> None:
        self.settings = settings
        # Once per process (idempotent: the same filter replaces itself). The plan already refuses what
        # would warn; this turns a warning the plan missed into a failed query instead of a leak.
        warnings.filterwarnings("error", category=PrivacyLeakWarning)

    def plan(self, request: DiffPrivLibCostRequest, dataset: DatasetRecord) -> DiffPrivLibPlan:
        metadata = dataset.metadata
        raw_steps = parse_pipeline(request.diffprivlib_json, self.settings)
        last = raw_steps[-1].spec
        features = feature_columns(request.feature_columns, metadata)
        target = target_column(request.target_columns, last, features, metadata)
        keep_seeds = isinstance(request, DiffPrivLibDummyQueryRequest)
        steps = checked_steps(raw_steps, len(features), target, self.settings, keep_seeds)
        used = [*features, *([target.column] if target else [])]
        fills = None
        if request.imputer_strategy != "drop":
            fills = np.array([float(public_fill(metadata.columns[name])) for name in features])
        return DiffPrivLibPlan(
            steps=steps,
            features=features,
            feature_fills=fills,
            target=target,
            test_size=request.test_size,
            split_seed=request.test_train_split_seed,
            score_metadata=metadata.model_copy(
                update={"columns": {name: metadata.columns[name] for name in used}}
            ),
            score_rows=self.settings.score_rows,
            cost=Cost(math.fsum(step.epsilon for step in steps), 0.0),
        )

    def cost(self, plan: DiffPrivLibPlan) -> Cost:
        return plan.cost

    def run(self, plan: DiffPrivLibPlan, data: DataSource) -> DiffPrivLibResult:
        features, target = arrays(data.frame(), plan)
        train, _test = next(
            ShuffleSplit(n_splits=1, test_size=plan.test_size, random_state=plan.split_seed).split(features)
        )
        pipeline = fresh_pipeline(plan)
        pipeline.fit(features[train], None if target is None else target[train])
        check_spending(pipeline, plan)
        return released_result(pipeline, dummy_score(pipeline, plan))
