"""SmartNoise-Synth queries: differentially private synthetic samples, or the trained synthesizer.

The method names and arguments are those of lomas-client 0.4.1. Synthesizers: "aim", "mwem", "mst" (samples
only), "dpctgan", "pategan" (datasets of 1000 rows or more) and "dpgan"; the server refuses "pacsynth" and
"patectgan". See https://docs.smartnoise.org/synth/ for what each synthesizer and transformer does.
"""

from __future__ import annotations

import base64
import inspect
import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, overload

from lomas.client.http import LomasHttp
from lomas.client.results import Answer, QueryResult
from lomas.core.errors import DPLibrary
from lomas.core.frames import frame_from_tight
from lomas.core.requests import (
    DUMMY_NB_ROWS,
    DUMMY_SEED,
    SSYNTH_CONSTRAINTS_MODULE,
    SSYNTH_TRANSFORMER_PREFIX,
    SynthName,
)
from lomas.core.responses import CostResponse, SmartnoiseSynthModel, SmartnoiseSynthSamples

NB_SAMPLES = 200
_DEFAULT_SSYNTH_VERSION = "1.0.8"  # the server's; used when smartnoise-synth is not installed here


@dataclass(frozen=True)
class SynthModelResult(Answer):
    """A trained synthesizer (call `model.sample(n)`) and what it cost."""

    model: Any


def serialise_constraints(constraints: Mapping[str, Any]) -> str:
    """Column constraints as smartnoise_synth_logger JSON, the form lomas-client 0.4.1 sends.

    A constraint is a string ("categorical", "ordinal", "continuous", "drop", a transformer class name or a
    Faker method name) or a snsynth column transformer (`snsynth.transform`), chains included.
    """
    body = {
        "module": SSYNTH_CONSTRAINTS_MODULE,
        "version": _ssynth_version(),
        "constraints": {
            column: constraint if isinstance(constraint, str) else _transformer_json(constraint)
            for column, constraint in constraints.items()
        },
    }
    return json.dumps(body)


def _ssynth_version() -> str:
    try:
        return version("smartnoise-synth")
    except PackageNotFoundError:
        return _DEFAULT_SSYNTH_VERSION


def _transformer_json(transformer: Any) -> dict[str, Any]:
    """A transformer as its class name and constructor arguments (duck-typed: snsynth is not imported)."""
    name = type(transformer).__name__
    params: Any
    if name == "ChainTransformer":
        params = [_transformer_json(step) for step in transformer.transformers]
    elif name == "AnonymizationTransformer":
        params = {"fake": transformer.fake.__name__}
    else:
        accepted = inspect.signature(type(transformer)).parameters
        params = {key: value for key, value in vars(transformer).items() if key in accepted}
    return {"type": SSYNTH_TRANSFORMER_PREFIX + name, "params": params}


class SmartnoiseSynthClient:
    def __init__(self, http: LomasHttp) -> None:
        self._http = http

    def cost(
        self,
        synth_name: SynthName,
        epsilon: float,
        delta: float | None = None,
        select_cols: Sequence[str] | None = None,
        synth_params: Mapping[str, Any] | None = None,
        nullable: bool = True,
        constraints: Mapping[str, Any] | str | None = None,
    ) -> CostResponse:
        """What training the synthesizer would cost, computed without training it.

        mwem spends no delta (its cost reports 0). Without a delta, aim and mst use 1e-9 and the GANs
        1 / (rows * sqrt(rows)) from the dataset's metadata; the cost says which.
        """
        fields = _fields(synth_name, epsilon, delta, select_cols, synth_params, nullable, constraints)
        return self._http.cost(DPLibrary.SMARTNOISE_SYNTH, fields)

    @overload
    def query(
        self,
        synth_name: SynthName,
        epsilon: float,
        delta: float | None = ...,
        select_cols: Sequence[str] | None = ...,
        synth_params: Mapping[str, Any] | None = ...,
        nullable: bool = ...,
        constraints: Mapping[str, Any] | str | None = ...,
        dummy: bool = ...,
        return_model: Literal[False] = ...,
        condition: str = ...,
        nb_samples: int = ...,
        nb_rows: int = ...,
        seed: int = ...,
    ) -> QueryResult: ...

    @overload
    def query(
        self,
        synth_name: SynthName,
        epsilon: float,
        delta: float | None = ...,
        select_cols: Sequence[str] | None = ...,
        synth_params: Mapping[str, Any] | None = ...,
        nullable: bool = ...,
        constraints: Mapping[str, Any] | str | None = ...,
        dummy: bool = ...,
        *,
        return_model: Literal[True],
        condition: str = ...,
        nb_samples: int = ...,
        nb_rows: int = ...,
        seed: int = ...,
    ) -> SynthModelResult: ...

    def query(
        self,
        synth_name: SynthName,
        epsilon: float,
        delta: float | None = None,
        select_cols: Sequence[str] | None = None,
        synth_params: Mapping[str, Any] | None = None,
        nullable: bool = True,
        constraints: Mapping[str, Any] | str | None = None,
        dummy: bool = False,
        return_model: bool = False,
        condition: str = "",
        nb_samples: int = NB_SAMPLES,
        nb_rows: int = DUMMY_NB_ROWS,
        seed: int = DUMMY_SEED,
    ) -> QueryResult | SynthModelResult:
        """Train a synthesizer on the private data (charged), or with `dummy=True` on dummy data (free).

        Returns `nb_samples` synthetic rows as `.df`, or with `return_model=True` the trained synthesizer as
        `.model`. `select_cols` defaults to every column that is not a private identifier; free-text columns
        must be left out or constrained ("drop", or an AnonymizationTransformer). `synth_params` are the
        synthesizer's own arguments except epsilon and delta (dpctgan and dpgan train at most as many epochs
        as epsilon allows). `nullable=False` trains on the rows without missing values. `condition` keeps
        the samples that meet it, in SQL: `species = 'Gentoo' AND body_mass_g > 4000`,
        `island IN ('Dream', 'Biscoe')`, `sex IS NULL`, `year BETWEEN 2008 AND 2009`; a condition that is
        rarely met may return fewer rows.

        Training may take minutes: the query runs as a background job of the server. The model arrives as
        a pickle, which this client unpickles: unpickling runs code of the sender's choosing, and this
        client trusts the server it was pointed at to send only what it trained.
        """
        fields = _fields(synth_name, epsilon, delta, select_cols, synth_params, nullable, constraints)
        fields.update(return_model=return_model, condition=condition, nb_samples=nb_samples)
        response = self._http.query(DPLibrary.SMARTNOISE_SYNTH, fields, dummy, nb_rows, seed, as_job=True)
        result = response.result
        if isinstance(result, SmartnoiseSynthModel):
            model = pickle.loads(base64.b64decode(result.model))  # trusted: our own server's model
            return SynthModelResult(response.epsilon, response.delta, response.requested_by, model)
        assert isinstance(result, SmartnoiseSynthSamples)
        frame = frame_from_tight(result.df_samples)
        return QueryResult(response.epsilon, response.delta, response.requested_by, frame)


def _fields(
    synth_name: SynthName,
    epsilon: float,
    delta: float | None,
    select_cols: Sequence[str] | None,
    synth_params: Mapping[str, Any] | None,
    nullable: bool,
    constraints: Mapping[str, Any] | str | None,
) -> dict[str, Any]:
    if constraints and not isinstance(constraints, str):
        constraints = serialise_constraints(constraints)
    return {
        "synth_name": synth_name,
        "epsilon": epsilon,
        "delta": delta,
        "select_cols": list(select_cols or []),
        "synth_params": dict(synth_params or {}),
        "nullable": nullable,
        "constraints": constraints or "",
    }
