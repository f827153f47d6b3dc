"""The SmartNoise-Synth engine: `plan` checks a request against the metadata, `cost` prices it, `run` trains."""

from __future__ import annotations

import threading
from typing import ClassVar

from snsynth.transform import DropTransformer
from snsynth.transform.table import TableTransformer

from lomas.core.errors import DPLibrary, InvalidQueryError
from lomas.core.frames import frame_to_tight
from lomas.core.requests import DummyMixin, SmartnoiseSynthCostRequest, SmartnoiseSynthQueryRequest
from lomas.core.responses import SmartnoiseSynthModel, SmartnoiseSynthSamples
from lomas.server.config import SmartnoiseSynthSettings
from lomas.server.data.base import DataSource
from lomas.server.engines.base import Cost, Engine
from lomas.server.engines.smartnoise_synth.columns import Domain, column_domain, selected_columns
from lomas.server.engines.smartnoise_synth.condition import parse_condition
from lomas.server.engines.smartnoise_synth.constraints import parse_constraints, transformer_checkers
from lomas.server.engines.smartnoise_synth.encoding import Style, check_style, column_transformer
from lomas.server.engines.smartnoise_synth.limits import check_limits
from lomas.server.engines.smartnoise_synth.params import (
    CUBE_SYNTHESIZERS,
    check_synthesizer,
    checked_synth_params,
    synth_delta,
    synth_param_checkers,
)
from lomas.server.engines.smartnoise_synth.plan import Release, SynthPlan
from lomas.server.engines.smartnoise_synth.sampling import OutputColumn, output_column
from lomas.server.engines.smartnoise_synth.training import Task, preload_fork_server, run_in_child
from lomas.server.store.service import DatasetRecord


class SmartnoiseSynthEngine(Engine[SmartnoiseSynthCostRequest, SynthPlan]):
    library: ClassVar[DPLibrary] = DPLibrary.SMARTNOISE_SYNTH
    runs_long: ClassVar[bool] = True  # training may take minutes: the job workers run it

    def __init__(self, settings: SmartnoiseSynthSettings) -> None:
        self.settings = settings
        self._synth_params = synth_param_checkers(settings)
        self._transformers = transformer_checkers(settings)
        self._trainings = threading.BoundedSemaphore(settings.max_concurrent_trainings)
        preload_fork_server()

    def plan(self, request: SmartnoiseSynthCostRequest, dataset: DatasetRecord) -> SynthPlan:
        metadata, synth = dataset.metadata, request.synth_name
        check_synthesizer(request)
        rows = request.dummy_nb_rows if isinstance(request, DummyMixin) else metadata.rows
        delta = synth_delta(synth, request.delta, metadata.rows)
        style: Style = "cube" if synth in CUBE_SYNTHESIZERS else "gan"
        domains = [
            column_domain(name, column, request.nullable, self.settings.max_categories)
            for name, column in selected_columns(request.select_cols, metadata)
        ]
        constraints = (
            parse_constraints(request.constraints, self._transformers, self.settings.max_constraints_length)
            if request.constraints
            else {}
        )
        unknown = set(constraints) - {domain.name for domain in domains}
        if unknown:
            raise InvalidQueryError(f"constraints name columns that are not selected: {sorted(unknown)}.")
        transformers = [
            column_transformer(constraints.get(domain.name), domain, style, self.settings.default_bins)
            for domain in domains
        ]
        check_style(transformers, [domain.name for domain in domains], synth)
        table = TableTransformer(transformers)
        kwargs = checked_synth_params(synth, request.synth_params, self._synth_params)
        if synth != "mwem":
            kwargs["delta"] = delta
        dp_sgd = check_limits(synth, kwargs, table, rows, request.epsilon, delta, self.settings)
        outputs = tuple(
            output_column(domain)
            for domain, transformer in zip(domains, transformers)
            if not isinstance(transformer, DropTransformer)
        )
        return SynthPlan(
            synth=synth,
            epsilon=request.epsilon,
            cost=Cost(request.epsilon, delta),
            columns=tuple(domain.name for domain in domains),
            drop_null_rows=not request.nullable,
            transformer=table,
            synth_kwargs=kwargs,
            dp_sgd=dp_sgd,
            outputs=outputs,
            release=self._release(request, domains, outputs),
        )

    def cost(self, plan: SynthPlan) -> Cost:
        return plan.cost

    def run(self, plan: SynthPlan, data: DataSource) -> SmartnoiseSynthSamples | SmartnoiseSynthModel:
        task = Task(
            plan=plan,
            frame=data.frame()[list(plan.columns)],
            torch_threads=self.settings.torch_threads,
            max_rounds=self.settings.max_condition_rounds,
            max_draw=self.settings.max_samples,
        )
        with self._trainings:
            released = run_in_child(task, self.settings.max_training_seconds)
        if isinstance(released, str):
            return SmartnoiseSynthModel(model=released)
        return SmartnoiseSynthSamples(df_samples=frame_to_tight(released))

    def _release(
        self, request: SmartnoiseSynthCostRequest, domains: list[Domain], outputs: tuple[OutputColumn, ...]
    ) -> Release:
        if not isinstance(request, SmartnoiseSynthQueryRequest):
            return Release(return_model=False, nb_samples=0, condition=None)
        if request.return_model:
            if request.condition:
                raise InvalidQueryError(
                    "condition applies to samples only; leave it empty with return_model=true."
                )
            return Release(return_model=True, nb_samples=0, condition=None)
        if request.nb_samples > self.settings.max_samples:
            raise InvalidQueryError(
                f"nb_samples is {request.nb_samples}; the limit is {self.settings.max_samples}."
            )
        condition = None
        if request.condition:
            if len(request.condition) > self.settings.max_condition_length:
                raise InvalidQueryError(
                    f"condition is {len(request.condition)} characters long; "
                    f"the limit is {self.settings.max_condition_length}."
                )
            sampled = {output.name for output in outputs}
            columns = {domain.name: domain.column for domain in domains if domain.name in sampled}
            condition = parse_condition(request.condition, columns)
        return Release(return_model=False, nb_samples=request.nb_samples, condition=condition)
