"""SmartNoise-Synth engine: differentially private synthetic data, as samples or as a trained synthesizer.

Synthesizers: mwem (epsilon only), aim and mst (epsilon, delta; marginal-based, "cube" encodings) and the
GANs dpctgan, patectgan, pategan and dpgan (epsilon, delta; "gan" encodings). pacsynth is refused: it can
bring the whole process down (a Rust panic), and mst models cannot be returned (they do not pickle).

Privacy, step by step:
- Encoding: every selected column gets a snsynth column transformer built from the public metadata
  (declared categories, bounds and nullability; datetimes as days since 1970-01-01 within their declared
  bounds) and fitted on those public values before any data is read. The synthesizer therefore never fits
  a transformer on private data, no budget goes to preprocessing (`preprocessor_eps=0`), and the whole
  declared epsilon goes to the synthesizer. Free-text columns have no public domain: they must be dropped
  (`select_cols`, or a "drop" constraint) or replaced by fake values (an AnonymizationTransformer).
- Constraints are the smartnoise_synth_logger JSON of lomas-client 0.4.1 (snsynth 1.0.4) or of our client
  (1.0.8). They are parsed here as data against an allow-list of transformer classes and parameters; no
  name in them is ever looked up in a module, and transformers that would spend budget on their own
  (StandardScaler, bounds to be inferred) are refused.
- `synth_params` are checked against an allow-list per synthesizer (types, ranges, server limits);
  `epsilon` and `delta` come from the request fields only and `disabled_dp` may not be switched on.
- Cost, from the request and the metadata alone: (epsilon, 0) for mwem, which uses no delta; (epsilon,
  delta) for the others. When delta is left out, aim and mst take snsynth's default 1e-9 and the GANs
  1 / (rows * sqrt(rows)) with the metadata's `rows` (snsynth would compute it from the private row
  count). That delta is what the synthesizer is given and what is charged.
- Spending: dpctgan and dpgan train at most as many epochs as the DP-SGD accountant (opacus, with the
  orders snsynth gives it) allows within epsilon for the actual number of rows; snsynth itself would stop
  only after the epoch that crossed it. After training, mwem's accountant and dpctgan's epsilon list are
  checked against the declared epsilon. aim and mst spend by construction (OpenDP's zCDP conversion).
  patectgan and pategan stop after the PATE iteration that reaches epsilon and expose no accountant: they
  may overshoot by that last iteration, which cannot be checked from outside the library. How the CTGANs
  pick real rows during training (by category, not uniformly as the accountant assumes) is the library's
  and is not changed here.
- Release: before sampling or pickling, what a fitted synthesizer keeps of the private data itself is
  removed or neutralised: mwem's copy of the training data and true histograms (its synthetic histograms
  are scaled to sum 1, as their total is the exact row count); aim's and mst's exact row count; the
  CTGANs' losses, epsilon list (from which the row count follows), copy of the training data and exact
  category frequencies, from which snsynth would otherwise draw the condition of every generated row
  (the frequencies become uniform, the rows a public stand-in). mwem still derives each histogram's range from the smallest and largest encoded
  value in the data; that is the library's behaviour and is not hidden here.
- Conditions are parsed here (a small SQL WHERE grammar: comparisons of output columns with literals,
  IN lists, IS NULL, BETWEEN, AND/OR/NOT) and applied to the samples with vectorised pandas operations,
  with a bounded number of rejection-sampling rounds; client text never reaches an evaluator.
- Training runs in a child process forked from a clean, single-threaded fork server: the server can kill it
  after `max_training_seconds`, the library's process-wide state (numpy's, Python's and torch's global
  generators, which it seeds with constants such as `torch.manual_seed(0)`; OpenDP's feature switches;
  printed output) never touches the server or another training, and `torch_threads` bounds its threads.
  Each child first reseeds those generators from the operating system (a fork copies them).

Randomness: aim, mst and mwem draw their Gaussian/Laplace measurement noise from OpenDP's samplers, but
choose what to measure (exponential mechanism) with numpy's global generator (and Python's `random` in
mwem); dpctgan and dpgan draw DP-SGD noise from torch's default generator (opacus without `secure_rng`,
seeded from the OS), pategan and patectgan the PATE vote noise from `numpy.random.laplace`. The numpy,
Python and torch generators are not cryptographically secure.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import importlib.util
import itertools
import json
import math
import multiprocessing
import operator
import os
import pickle
import random
import re
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from snsynth import Synthesizer
from snsynth.transform import (
    AnonymizationTransformer,
    BinTransformer,
    ChainTransformer,
    ClampTransformer,
    DropTransformer,
    LabelTransformer,
    LogTransformer,
    MinMaxTransformer,
    OneHotEncoder,
)
from snsynth.transform.base import ColumnTransformer
from snsynth.transform.definitions import ColumnType
from snsynth.transform.table import TableTransformer

from lomas.core.errors import DPLibrary, InvalidQueryError
from lomas.core.frames import frame_to_tight
from lomas.core.metadata import (
    AnyColumn,
    BooleanMetadata,
    DatetimeMetadata,
    FloatMetadata,
    IntCategoricalMetadata,
    IntMetadata,
    Metadata,
    StrCategoricalMetadata,
    StrMetadata,
)
from lomas.core.requests import (
    SSYNTH_CONSTRAINTS_MODULE,
    SSYNTH_TRANSFORMER_PREFIX,
    DummyMixin,
    SmartnoiseSynthCostRequest,
    SmartnoiseSynthQueryRequest,
)
from lomas.core.responses import SmartnoiseSynthModel, SmartnoiseSynthSamples
from lomas.server.config import SmartnoiseSynthSettings
from lomas.server.data.dtypes import column_dtype
from lomas.server.data.frame import DataFrameSource
from lomas.server.engines.base import Cost, Engine
from lomas.server.store.service import DatasetRecord

ACCEPTED_VERSIONS = ("1.0.4", "1.0.8")  # snsynth of lomas-client 0.4.1, and of this server
CUBE_SYNTHESIZERS = ("mwem", "aim", "mst")  # one categorical code per column; the others are GANs
DP_SGD_SYNTHESIZERS = ("dpctgan", "dpgan")
PATE_SYNTHESIZERS = ("patectgan", "pategan")
MARGINAL_DEFAULT_DELTA = 1e-9  # snsynth's default delta of aim and mst
PATEGAN_MIN_ROWS = 1_000  # pategan makes one teacher per 1000 rows, and fails without any
PATE_MOMENTS_ORDER = 100  # the largest Renyi order of snsynth's PATE accountants
DPGAN_NOISE_MULTIPLIER = 3.5  # fixed by snsynth's DPGAN
# The Renyi orders snsynth gives opacus.
_OPACUS_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
_EPOCH = pd.Timestamp("1970-01-01")
_DAY = pd.Timedelta(days=1)
_TOLERANCE = 1e-9  # relative slack when comparing an accountant's spend with the declared epsilon
_MAX_CHAIN = 4
_MAX_CONDITION_DEPTH = 20
# Imported once by the fork server, so that every training process starts with them loaded.
_TRAINING_MODULES = [
    __name__,
    "snsynth.mwem",
    "snsynth.aim",
    "snsynth.mst.mst",
    "snsynth.pytorch.nn.dpctgan",
    "snsynth.pytorch.nn.patectgan",
    "snsynth.pytorch.nn.pategan",
    "snsynth.pytorch.nn.dpgan",
]
_CONTEXT = multiprocessing.get_context("forkserver")

Style = Literal["cube", "gan"]


class _Refused(Exception):
    """A value outside the allow-list; the message completes "<what> ..."."""


def _shown(value: Any) -> str:
    return json.dumps(value, default=str)[:60]


# -- value checkers (synth_params and transformer parameters) -----------------------------------------------
Checker = Callable[[Any], Any]


def _integer(low: int, high: int, limit: str | None = None) -> Checker:
    where = f" (server limit {limit})" if limit else ""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Refused(f"must be an integer from {low} to {high}{where}, not {_shown(value)}")
        return value

    return check


def _real(low: float, high: float, *, low_open: bool = False) -> Checker:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _Refused(f"must be a finite number, not {_shown(value)}")
        if value < low or value > high or (low_open and value == low):
            side = "above" if low_open else "from"
            raise _Refused(f"must be a number {side} {low} up to {high}, not {_shown(value)}")
        return float(value)

    return check


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Refused(f"must be true or false, not {_shown(value)}")
    return value


def _one_of(*choices: Any) -> Checker:
    def check(value: Any) -> Any:
        if not any(type(value) is type(choice) and value == choice for choice in choices):
            raise _Refused(f"must be one of {json.dumps(list(choices))}, not {_shown(value)}")
        return value

    return check


def _optional(checker: Checker) -> Checker:
    return lambda value: None if value is None else checker(value)


def _widths(max_layers: int, max_width: int) -> Checker:
    width = _integer(1, max_width, "max_layer_width")

    def check(value: Any) -> tuple[int, ...]:
        if not isinstance(value, list | tuple) or not 1 <= len(value) <= max_layers:
            raise _Refused(f"must be a list of 1 to {max_layers} layer widths (server limit max_layers)")
        return tuple(width(item) for item in value)

    return check


def _no_budget(value: Any) -> float:
    """A transformer's own epsilon: the server never spends budget on preprocessing."""
    if value is not None and (isinstance(value, bool) or value != 0):
        raise _Refused(f"must be 0 or null (preprocessing spends no budget here), not {_shown(value)}")
    return 0.0


def _null(value: Any) -> None:
    if value is not None:
        raise _Refused(f"must be null, not {_shown(value)}")


def _synth_param_checkers(s: SmartnoiseSynthSettings) -> dict[str, dict[str, Checker]]:
    """The allow-list of `synth_params`, per synthesizer (everything else is refused)."""
    width = _integer(1, s.max_layer_width, "max_layer_width")
    layers = _widths(s.max_layers, s.max_layer_width)
    rate = _real(0.0, 1.0, low_open=True)
    decay = _real(0.0, 1.0)
    batch = _integer(2, s.max_batch_size, "max_batch_size")
    epochs = _integer(1, s.max_epochs, "max_epochs")
    iterations = _integer(1, s.max_iterations, "max_iterations")
    ctgan = {
        "embedding_dim": width,
        "generator_dim": layers,
        "discriminator_dim": layers,
        "generator_lr": rate,
        "generator_decay": decay,
        "discriminator_lr": rate,
        "discriminator_decay": decay,
        "batch_size": batch,
        "pac": _integer(1, 64),
    }
    return {
        "mwem": {
            "iterations": iterations,
            "q_count": _integer(1, s.max_queries, "max_queries"),
            "split_factor": _integer(1, 1_000),
            "marginal_width": _integer(1, 3),
            "add_ranges": _flag,
            "measure_only": _flag,
            "max_retries_exp_mechanism": _integer(1, 1_000),
            "mult_weights_iterations": iterations,
        },
        "aim": {
            "rounds": iterations,
            "degree": _integer(1, 3),
            "max_model_size": _real(0.0, s.max_model_size_mb, low_open=True),
            "max_cells": _integer(1, s.max_marginal_cells, "max_marginal_cells"),
        },
        "mst": {},
        "dpctgan": {
            **ctgan,
            "epochs": epochs,
            "sigma": _real(0.0, 1_000.0, low_open=True),
            "max_per_sample_grad_norm": _real(0.0, 1_000.0, low_open=True),
            "disabled_dp": _one_of(False),
        },
        "patectgan": {
            **ctgan,
            "teacher_iters": iterations,
            "student_iters": iterations,
            "sample_per_teacher": _integer(100, 1_000_000),
            "noise_multiplier": _real(1e-3, 1_000.0),
            "regularization": _one_of(None, "dragan"),
            "binary": _flag,
        },
        "pategan": {
            "latent_dim": width,
            "batch_size": batch,
            "teacher_iters": iterations,
            "student_iters": iterations,
            "binary": _flag,
        },
        "dpgan": {"latent_dim": width, "batch_size": batch, "epochs": epochs, "binary": _flag},
    }


# -- columns: what the metadata says about each selected column ----------------------------------------------
@dataclass(frozen=True)
class _Domain:
    """One selected column as the synthesizers see it, from the public metadata alone.

    `categories` is a finite public domain (declared categories, booleans, short integer ranges);
    `bounds` the numeric range (datetimes in days since 1970-01-01). Either may be missing.
    """

    name: str
    column: AnyColumn
    nullable: bool
    categories: tuple[Any, ...] | None
    bounds: tuple[float, float] | None

    @property
    def is_text(self) -> bool:
        return isinstance(self.column, StrMetadata | StrCategoricalMetadata)

    def fit_values(self, numeric: bool) -> list[Any]:
        """Public values a transformer is fitted on: the whole finite domain, or the two bounds."""
        values: list[Any] = list(self.categories) if self.categories is not None and not numeric else []
        if not values and self.bounds is not None:
            values = list(self.bounds)
        return values + [None] if self.nullable else values


def _naive_utc(moment: Any) -> pd.Timestamp:
    """A datetime (or ISO text) as the data loader holds it: naive, in UTC."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_convert(None) if stamp.tzinfo is not None else stamp


def _days(moment: Any) -> float:
    """Days since 1970-01-01, the number a datetime column is synthesized as."""
    return float((_naive_utc(moment) - _EPOCH) / _DAY)


def _domain(name: str, column: AnyColumn, nullable: bool, max_categories: int) -> _Domain:
    nullable = nullable and column.nullable
    match column:
        case StrCategoricalMetadata():
            return _Domain(name, column, nullable, tuple(column.categories), None)
        case IntCategoricalMetadata():
            bounds = (min(column.categories), max(column.categories))
            return _Domain(name, column, nullable, tuple(column.categories), bounds)
        case BooleanMetadata():
            return _Domain(name, column, nullable, (False, True), None)
        case IntMetadata():
            short = column.upper - column.lower < max_categories
            categories = tuple(range(column.lower, column.upper + 1)) if short else None
            return _Domain(name, column, nullable, categories, (column.lower, column.upper))
        case FloatMetadata():
            return _Domain(name, column, nullable, None, (column.lower, column.upper))
        case DatetimeMetadata():
            return _Domain(name, column, nullable, None, (_days(column.lower), _days(column.upper)))
    return _Domain(name, column, nullable, None, None)


def _selected_columns(select_cols: list[str], metadata: Metadata) -> list[tuple[str, AnyColumn]]:
    """`select_cols` in the caller's order, or every column that is not a private identifier."""
    if not select_cols:
        return [(name, column) for name, column in metadata.columns.items() if not column.private_id]
    if len(set(select_cols)) != len(select_cols):
        raise InvalidQueryError("select_cols names a column twice.")
    selected = []
    for name in select_cols:
        column = metadata.columns.get(name)
        if column is None:
            raise InvalidQueryError(
                f"select_cols: unknown column {name!r}; the columns are {list(metadata.columns)}."
            )
        if column.private_id:
            raise InvalidQueryError(
                f"select_cols: column {name!r} is a private identifier and is never synthesized."
            )
        selected.append((name, column))
    return selected


# -- constraints: smartnoise_synth_logger JSON, parsed as data -----------------------------------------------
@dataclass(frozen=True)
class _Step:
    """One allow-listed transformer class and its checked parameters."""

    name: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class _Chain:
    steps: tuple[_Step, ...]


Constraint = str | _Step | _Chain  # "categorical"/"ordinal"/"continuous", a transformer, or a chain of them

_ALIASES = ("categorical", "ordinal", "continuous")
_BOUNDED = ("MinMaxTransformer", "BinTransformer")  # bounds left out are taken from the metadata
_CATEGORY_LEARNERS = ("LabelTransformer", "OneHotEncoder")  # need a finite public domain
_NULL_AWARE = ("LabelTransformer", "MinMaxTransformer", "BinTransformer")
_WHOLE_COLUMN = ("DropTransformer", "AnonymizationTransformer")  # never read the values; not in chains
_REFUSED_TRANSFORMERS = {
    "StandardScaler": "always spends budget on preprocessing; use MinMaxTransformer",
    "TableTransformer": "is a table transformer, not a column transformer",
    "NoTransformer": "is a table transformer, not a column transformer",
}


def _transformer_checkers(s: SmartnoiseSynthSettings) -> dict[str, dict[str, Checker]]:
    """The allow-list of column transformers and their parameters (as smartnoise_synth_logger writes them)."""
    bound = _optional(_real(-math.inf, math.inf))
    bounded = {"lower": bound, "upper": bound, "nullable": _flag, "epsilon": _no_budget, "odometer": _null}
    return {
        "LabelTransformer": {"nullable": _flag},
        "OneHotEncoder": {},
        "MinMaxTransformer": {**bounded, "negative": _flag},
        "BinTransformer": {**bounded, "bins": _integer(2, s.max_bins, "max_bins")},
        "LogTransformer": {},
        "ClampTransformer": {"lower": bound, "upper": bound},
        "DropTransformer": {},
        "AnonymizationTransformer": {"fake": _one_of(*s.faker_providers)},
    }


def _parse_constraints(
    text: str, checkers: Mapping[str, Mapping[str, Checker]], max_length: int
) -> dict[str, Constraint]:
    if len(text) > max_length:
        raise InvalidQueryError(f"constraints is {len(text)} characters long; the limit is {max_length}.")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise InvalidQueryError(f"constraints is not valid JSON: {error}") from None
    if not isinstance(body, dict) or body.get("module") != SSYNTH_CONSTRAINTS_MODULE:
        raise InvalidQueryError(
            f'constraints must be smartnoise_synth_logger JSON with "module": "{SSYNTH_CONSTRAINTS_MODULE}".'
        )
    if body.get("version") not in ACCEPTED_VERSIONS:
        raise InvalidQueryError(
            f"constraints were written for smartnoise-synth {_shown(body.get('version'))}; "
            f"accepted: {list(ACCEPTED_VERSIONS)}."
        )
    constraints = body.get("constraints")
    if not isinstance(constraints, dict):
        raise InvalidQueryError(
            'constraints must have a "constraints" object mapping columns to constraints.'
        )
    parsed = {}
    for column, value in constraints.items():
        try:
            parsed[column] = _constraint(value, checkers)
        except _Refused as refused:
            raise InvalidQueryError(f"constraints: column {column!r}: {refused}") from None
    return parsed


def _constraint(value: Any, checkers: Mapping[str, Mapping[str, Checker]]) -> Constraint:
    if isinstance(value, str):
        return _named_constraint(value, checkers)
    if not isinstance(value, dict) or set(value) != {"type", "params"}:
        raise _Refused('must be a string or an object {"type": ..., "params": ...}')
    name = _transformer_name(value["type"])
    if name == "ChainTransformer":
        steps = value["params"]
        if not isinstance(steps, list) or not 1 <= len(steps) <= _MAX_CHAIN:
            raise _Refused(f"ChainTransformer takes a list of 1 to {_MAX_CHAIN} transformers")
        return _Chain(tuple(_chained_step(step, checkers) for step in steps))
    return _step(name, value["params"], checkers)


def _named_constraint(value: str, checkers: Mapping[str, Mapping[str, Checker]]) -> Constraint:
    """snsynth's string constraints: a type alias, "drop", a transformer class, or a Faker method."""
    if value.lower() in _ALIASES:
        return value.lower()
    if value.lower() == "drop":
        return _Step("DropTransformer", {})
    if value in checkers or value in _REFUSED_TRANSFORMERS:
        return _step(value, {}, checkers)
    if _is_provider(value, checkers):
        return _Step("AnonymizationTransformer", {"fake": value})
    raise _Refused(
        f"{_shown(value)} is not {', '.join(_ALIASES)}, drop, an allowed transformer ({', '.join(checkers)}) "
        "or an allowed Faker method"
    )


def _is_provider(value: str, checkers: Mapping[str, Mapping[str, Checker]]) -> bool:
    try:
        checkers["AnonymizationTransformer"]["fake"](value)
    except _Refused:
        return False
    return True


def _transformer_name(tag: Any) -> str:
    if not isinstance(tag, str) or not tag.startswith(SSYNTH_TRANSFORMER_PREFIX):
        raise _Refused(f'"type" must be "{SSYNTH_TRANSFORMER_PREFIX}<transformer class>", not {_shown(tag)}')
    return tag[len(SSYNTH_TRANSFORMER_PREFIX) :]


def _chained_step(value: Any, checkers: Mapping[str, Mapping[str, Checker]]) -> _Step:
    if not isinstance(value, dict) or set(value) != {"type", "params"}:
        raise _Refused('ChainTransformer items must be objects {"type": ..., "params": ...}')
    step = _step(_transformer_name(value["type"]), value["params"], checkers)
    if step.name in _WHOLE_COLUMN:
        raise _Refused(f"{step.name} cannot be part of a ChainTransformer")
    return step


def _step(name: str, params: Any, checkers: Mapping[str, Mapping[str, Checker]]) -> _Step:
    if name in _REFUSED_TRANSFORMERS:
        raise _Refused(f"{name} {_REFUSED_TRANSFORMERS[name]}")
    allowed = checkers.get(name)
    if allowed is None:
        raise _Refused(
            f"unknown transformer {_shown(name)}; allowed: {', '.join([*checkers, 'ChainTransformer'])}"
        )
    if not isinstance(params, dict):
        raise _Refused(f"{name} params must be an object")
    checked = {}
    for key, value in params.items():
        if key not in allowed:
            raise _Refused(f"{name} takes no parameter {_shown(key)}; allowed: {sorted(allowed)}")
        try:
            checked[key] = allowed[key](value)
        except _Refused as refused:
            raise _Refused(f"{name} parameter {key!r} {refused}") from None
    if name == "AnonymizationTransformer" and "fake" not in checked:
        raise _Refused("AnonymizationTransformer needs a Faker method name in 'fake'")
    if name == "ClampTransformer" and checked.get("lower") is None and checked.get("upper") is None:
        raise _Refused("ClampTransformer needs a lower or an upper bound")
    return _Step(name, checked)


# -- building the column transformers, fitted on public values only ------------------------------------------
def _default_constraint(domain: _Domain) -> Constraint:
    match domain.column:
        case StrCategoricalMetadata() | IntCategoricalMetadata() | BooleanMetadata():
            return "categorical"
        case IntMetadata() | FloatMetadata() | DatetimeMetadata():
            return "continuous"
    raise _Refused(
        "it is free text without declared categories, so nothing can be learnt of it without reading it: "
        'leave it out of select_cols, or constrain it with "drop" or an AnonymizationTransformer '
        "(fake values)"
    )


def _alias_steps(alias: str, domain: _Domain, style: Style, bins: int) -> tuple[_Step, ...]:
    nullable = {"nullable": domain.nullable}
    if alias in ("categorical", "ordinal"):
        if domain.categories is None:
            raise _Refused(
                f"it cannot be {alias}: the metadata declares no categories for it "
                "(nor a short integer range)"
            )
        label = _Step("LabelTransformer", nullable)
        return (label,) if style == "cube" else (label, _Step("OneHotEncoder", {}))
    if domain.bounds is None:
        raise _Refused("it cannot be continuous: the metadata declares no bounds for it")
    if style == "cube":
        return (_Step("BinTransformer", {**nullable, "bins": bins}),)
    return (_Step("MinMaxTransformer", nullable),)


def _steps(constraint: Constraint, domain: _Domain, style: Style, bins: int) -> tuple[_Step, ...]:
    match constraint:
        case str():
            return _alias_steps(constraint, domain, style, bins)
        case _Step():
            return (constraint,)
        case _Chain():
            if style == "cube":
                raise _Refused(
                    "ChainTransformer is for the GANs; mwem, aim and mst need one transformer per column"
                )
            return constraint.steps
    raise TypeError(f"unexpected constraint {constraint!r}")


def _check_steps(steps: tuple[_Step, ...], domain: _Domain) -> None:
    """Refuse what could only fail, or learn something, once the private values are read."""
    first, last = steps[0], steps[-1]
    if last.name == "ClampTransformer":
        raise _Refused("ClampTransformer must be followed by another transformer in a ChainTransformer")
    if first.name == "AnonymizationTransformer" and not domain.is_text:
        raise _Refused("AnonymizationTransformer replaces text columns only")
    if (
        domain.nullable
        and first.name not in _WHOLE_COLUMN
        and not (first.name in _NULL_AWARE and first.params.get("nullable", first.name == "LabelTransformer"))
    ):
        raise _Refused(
            f"it may be null, so its first transformer must be {', '.join(_NULL_AWARE)} with nullable=true "
            "(or query with nullable=false, which leaves out the rows with a missing value)"
        )
    for position, step in enumerate(steps):
        if step.name in _CATEGORY_LEARNERS and position == 0 and domain.categories is None:
            raise _Refused(
                f"{step.name} needs declared categories (or a short integer range) in the metadata"
            )
        after_label = position == 1 and step.name == "OneHotEncoder" and first.name == "LabelTransformer"
        if step.name in _CATEGORY_LEARNERS and position > 0 and not after_label:
            raise _Refused(
                f"{step.name} must come first in a ChainTransformer "
                "(OneHotEncoder may follow LabelTransformer)"
            )
        if step.name in ("LogTransformer", *_BOUNDED) and position == 0 and domain.bounds is None:
            raise _Refused(f"{step.name} needs a numeric or datetime column with bounds in the metadata")
        missing_bounds = step.name in _BOUNDED and (
            step.params.get("lower") is None or step.params.get("upper") is None
        )
        if missing_bounds and position > 0:
            raise _Refused(
                f"{step.name} inside a ChainTransformer needs lower and upper "
                "(the metadata's are for raw values)"
            )
        if step.name in _BOUNDED and not missing_bounds and step.params["lower"] >= step.params["upper"]:
            raise _Refused(f"{step.name} needs lower < upper")


def _make(step: _Step, domain: _Domain) -> ColumnTransformer:
    params = dict(step.params)
    match step.name:
        case "LabelTransformer":
            return LabelTransformer(**params)
        case "OneHotEncoder":
            return OneHotEncoder()
        case "MinMaxTransformer" | "BinTransformer":
            assert domain.bounds is not None or (
                params.get("lower") is not None and params.get("upper") is not None
            )
            lower, upper = domain.bounds if domain.bounds is not None else (None, None)
            params["lower"] = lower if params.get("lower") is None else params["lower"]
            params["upper"] = upper if params.get("upper") is None else params["upper"]
            params.update(epsilon=0.0, odometer=None)
            factory = MinMaxTransformer if step.name == "MinMaxTransformer" else BinTransformer
            return factory(**params)
        case "LogTransformer":
            return LogTransformer()
        case "ClampTransformer":
            return ClampTransformer(**params)
        case "DropTransformer":
            return DropTransformer()
        case "AnonymizationTransformer":
            return AnonymizationTransformer(params["fake"])
    raise TypeError(f"unexpected transformer {step.name}")


def _column_transformer(
    constraint: Constraint | None, domain: _Domain, style: Style, bins: int
) -> ColumnTransformer:
    steps = _steps(constraint if constraint is not None else _default_constraint(domain), domain, style, bins)
    _check_steps(steps, domain)
    parts = [_make(step, domain) for step in steps]
    transformer = parts[0] if len(parts) == 1 else ChainTransformer(parts)
    numeric = steps[0].name in ("LogTransformer", "ClampTransformer", *_BOUNDED)
    try:
        if steps[0].name not in _WHOLE_COLUMN:
            transformer.fit(domain.fit_values(numeric))
    except Exception as error:  # the library's words about public values only
        raise _Refused(f"it cannot be encoded so: {type(error).__name__}: {error}") from None
    if not transformer.fit_complete or transformer.needs_epsilon:
        raise _Refused("its encoding would have to be learnt from the private data; give the bounds")
    return transformer


def _output_type(transformer: ColumnTransformer) -> ColumnType | None:
    """CATEGORICAL or CONTINUOUS, or None for a column that is dropped or replaced by fake values."""
    if isinstance(transformer, DropTransformer | AnonymizationTransformer):
        return None
    return transformer.output_type


def _check_style(transformers: Sequence[ColumnTransformer], names: Sequence[str], synth: str) -> None:
    types = [_output_type(transformer) for transformer in transformers]
    if all(kind is None for kind in types):
        raise InvalidQueryError(
            "Every selected column is dropped or anonymized: there is nothing to synthesize."
        )
    if synth in CUBE_SYNTHESIZERS:
        for name, kind in zip(names, types):
            if kind is ColumnType.CONTINUOUS:
                raise InvalidQueryError(
                    f"constraints: column {name!r}: {synth} needs a categorical encoding for every column; "
                    "use "
                    'BinTransformer, "categorical" or "continuous" (binned) instead.'
                )


# -- synthesizer parameters and checks before training -------------------------------------------------------
@dataclass(frozen=True)
class _DpSgd:
    """What the DP-SGD accountant of dpctgan and dpgan depends on, besides the number of rows."""

    batch_size: int
    noise_multiplier: float
    delta: float
    drop_last: bool  # dpgan's loader drops the last partial batch; dpctgan runs at least one batch per epoch
    max_epochs: int


@functools.cache
def _opacus_accountant() -> ModuleType:
    """opacus' RDP accountant, loaded on its own: the module is plain Python, but importing it through the
    opacus package would load torch into the server process, which never trains anything itself."""
    package = importlib.util.find_spec("opacus")
    assert package is not None and package.submodule_search_locations is not None
    path = Path(next(iter(package.submodule_search_locations))) / "privacy_analysis.py"
    spec = importlib.util.spec_from_file_location("_lomas_opacus_privacy_analysis", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dp_sgd_epsilon(dp_sgd: _DpSgd, rows: int, epochs: int) -> float:
    """What opacus reports after `epochs` epochs; the discriminator steps twice per batch (fake, real)."""
    privacy_analysis = _opacus_accountant()
    batches = rows // dp_sgd.batch_size if dp_sgd.drop_last else max(rows // dp_sgd.batch_size, 1)
    rdp = privacy_analysis.compute_rdp(
        dp_sgd.batch_size / rows, dp_sgd.noise_multiplier, 2 * batches * epochs, _OPACUS_ORDERS
    )
    epsilon, _ = privacy_analysis.get_privacy_spent(_OPACUS_ORDERS, rdp, dp_sgd.delta)
    return float(epsilon)


def _affordable_epochs(dp_sgd: _DpSgd, rows: int, epsilon: float) -> int:
    """The most epochs (up to the requested ones) whose DP-SGD spend stays within epsilon."""
    low, high = 0, dp_sgd.max_epochs
    while low < high:
        middle = (low + high + 1) // 2
        if _dp_sgd_epsilon(dp_sgd, rows, middle) <= epsilon:
            low = middle
        else:
            high = middle - 1
    return low


def _delta(synth: str, declared: float | None, rows: int) -> float:
    if synth == "mwem":
        return 0.0
    if declared == 0:
        raise InvalidQueryError(
            f"{synth} needs delta > 0 (for example 1e-5), or no delta to use the default."
        )
    if declared is not None:
        return declared
    if synth in CUBE_SYNTHESIZERS:
        return MARGINAL_DEFAULT_DELTA
    return 1 / (rows * math.sqrt(rows))


def _checked_synth_params(
    synth: str, params: Mapping[str, Any], checkers: Mapping[str, Mapping[str, Checker]]
) -> dict[str, Any]:
    allowed = checkers[synth]
    checked = {}
    for name, value in params.items():
        if name in ("epsilon", "delta"):
            raise InvalidQueryError(
                f"synth_params: {name} is given by the request's {name} field, not in synth_params."
            )
        if name == "disabled_dp" and value is True:
            raise InvalidQueryError(
                "synth_params: disabled_dp=true would train dpctgan without differential privacy."
            )
        if name not in allowed:
            raise InvalidQueryError(
                f"synth_params: {synth} takes no parameter {name!r} here; "
                f"allowed: {sorted(allowed) or 'none'}."
            )
        try:
            checked[name] = allowed[name](value)
        except _Refused as refused:
            raise InvalidQueryError(f"synth_params: {name} {refused}.") from None
    return checked


def _cube_cardinalities(table: TableTransformer) -> list[int]:
    cards = table.cardinality
    assert all(card is not None for card in cards) and len(cards) == table.output_width
    return [int(card) for card in cards]


def _check_mwem(kwargs: dict[str, Any], cards: list[int], rows: int, max_cells: int) -> None:
    """mwem's memory is one histogram per split of `split_factor` consecutive encoded columns."""
    # snsynth's default iterations, from the public row count rather than the private one
    kwargs.setdefault("iterations", math.ceil(math.log10(max(rows, 2))) * 10)
    if kwargs.get("q_count", kwargs["iterations"]) < kwargs["iterations"]:
        raise InvalidQueryError(
            "synth_params: mwem needs q_count >= iterations (it measures a new query each iteration)."
        )
    factor = kwargs.get("split_factor", len(cards))
    for start in range(0, len(cards), factor):
        cells = math.prod(card + 2 for card in cards[start : start + factor])  # numpy adds 2 outlier bins
        if cells > max_cells:
            raise InvalidQueryError(
                f"mwem would build a histogram of {cells:,} cells; the limit is {max_cells:,} "
                "(max_histogram_cells). "
                "Select fewer columns, bin them more coarsely, or set a smaller synth_params split_factor."
            )


def _check_aim(kwargs: dict[str, Any], cards: list[int]) -> None:
    if kwargs.get("rounds", len(cards)) < len(cards):
        raise InvalidQueryError(f"synth_params: aim needs rounds >= {len(cards)} (one per encoded column).")
    degree, max_cells = kwargs.get("degree", 2), kwargs.get("max_cells", 10_000)
    if degree > len(cards) or not any(
        math.prod(clique) <= max_cells for clique in itertools.combinations(cards, degree)
    ):
        raise InvalidQueryError(
            f"aim finds no marginal of degree {degree} within max_cells={max_cells}; "
            "lower degree or bin more coarsely."
        )


def _check_mst(cards: list[int], max_cells: int) -> None:
    largest = sorted(cards)[-2:]
    if math.prod(largest) > max_cells:
        raise InvalidQueryError(
            f"mst measures every pair of columns; the largest pair has {math.prod(largest):,} cells, "
            "the limit is "
            f"{max_cells:,} (max_marginal_cells). Select fewer categories or bin more coarsely."
        )


def _check_gan(synth: str, kwargs: dict[str, Any], rows: int, epsilon: float, delta: float) -> _DpSgd | None:
    """GAN checks before any data is read; returns the DP-SGD accounting of dpctgan and dpgan."""
    batch_size = kwargs.get("batch_size", 500 if synth in ("dpctgan", "patectgan") else 64)
    if synth in ("dpctgan", "patectgan"):
        kwargs["verbose"] = False
        if batch_size % 2 or batch_size % kwargs.get("pac", 1):
            raise InvalidQueryError(f"synth_params: {synth} needs an even batch_size that pac divides.")
    if synth == "pategan" and rows < PATEGAN_MIN_ROWS:
        raise InvalidQueryError(
            f"pategan needs at least {PATEGAN_MIN_ROWS} rows (one teacher per 1000); this dataset has {rows}."
        )
    if synth in PATE_SYNTHESIZERS and epsilon <= math.log(1 / delta) / PATE_MOMENTS_ORDER:
        raise InvalidQueryError(
            f"{synth} needs epsilon > ln(1/delta)/{PATE_MOMENTS_ORDER} = "
            f"{math.log(1 / delta) / PATE_MOMENTS_ORDER:.3g}."
        )
    if synth not in DP_SGD_SYNTHESIZERS:
        return None
    if batch_size > rows:
        raise InvalidQueryError(
            f"synth_params: batch_size {batch_size} is larger than the dataset ({rows} rows)."
        )
    noise = kwargs.get("sigma", 5.0) if synth == "dpctgan" else DPGAN_NOISE_MULTIPLIER
    dp_sgd = _DpSgd(
        batch_size, noise, delta, synth == "dpgan", kwargs.get("epochs", 300 if synth == "dpctgan" else 1000)
    )
    one_epoch = _dp_sgd_epsilon(dp_sgd, rows, 1)
    if one_epoch > epsilon:
        raise InvalidQueryError(
            f"{synth}: one epoch on {rows} rows already spends epsilon {one_epoch:.3g} > {epsilon}; "
            "raise epsilon" + (", sigma or batch_size." if synth == "dpctgan" else " or batch_size.")
        )
    return dp_sgd


# -- conditions: a small SQL WHERE grammar, evaluated with pandas --------------------------------------------
@dataclass(frozen=True)
class _Comparison:
    column: str
    op: str
    value: Any


@dataclass(frozen=True)
class _Membership:
    column: str
    values: tuple[Any, ...]
    negated: bool


@dataclass(frozen=True)
class _NullTest:
    column: str
    negated: bool


@dataclass(frozen=True)
class _Not:
    operand: Condition


@dataclass(frozen=True)
class _Junction:
    op: Literal["and", "or"]
    operands: tuple[Condition, ...]


Condition = _Comparison | _Membership | _NullTest | _Not | _Junction

_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FLIPPED = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<string>'(?:[^']|'')*')
      | (?P<name>"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op><=|>=|<>|!=|==|=|<|>)
      | (?P<punct>[(),\[\]])
    )""",
    re.VERBOSE,
)
_KEYWORDS = ("AND", "OR", "NOT", "IN", "IS", "NULL", "TRUE", "FALSE", "BETWEEN")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    position: int


def _tokens(text: str) -> list[_Token]:
    tokens, position = [], 0
    while text[position:].strip():
        match = _TOKEN.match(text, position)
        if match is None:
            where = len(text) - len(text[position:].lstrip())
            raise InvalidQueryError(f"condition: unexpected character {text[where]!r} at position {where}.")
        kind = match.lastgroup or ""
        value, start = match.group(kind), match.start(kind)
        if kind == "name" and not value.startswith('"') and value.upper() in _KEYWORDS:
            kind, value = "keyword", value.upper()
        tokens.append(_Token(kind, value, start))
        position = match.end()
    return tokens


class _ConditionParser:
    """Recursive descent over the tokens; literals are typed against the output column they meet."""

    def __init__(self, text: str, columns: Mapping[str, AnyColumn]) -> None:
        self._tokens = _tokens(text)
        self._at = 0
        self._columns = columns

    def parse(self) -> Condition:
        if not self._tokens:
            raise InvalidQueryError("condition is empty.")
        condition = self._disjunction(0)
        if self._at < len(self._tokens):
            self._fail("unexpected text")
        return condition

    # grammar
    def _disjunction(self, depth: int) -> Condition:
        operands = [self._conjunction(depth)]
        while self._keyword("OR"):
            operands.append(self._conjunction(depth))
        return operands[0] if len(operands) == 1 else _Junction("or", tuple(operands))

    def _conjunction(self, depth: int) -> Condition:
        operands = [self._negation(depth)]
        while self._keyword("AND"):
            operands.append(self._negation(depth))
        return operands[0] if len(operands) == 1 else _Junction("and", tuple(operands))

    def _negation(self, depth: int) -> Condition:
        if depth > _MAX_CONDITION_DEPTH:
            self._fail(f"nested more than {_MAX_CONDITION_DEPTH} levels deep")
        if self._keyword("NOT"):
            return _Not(self._negation(depth + 1))
        if self._punct("("):
            inner = self._disjunction(depth + 1)
            self._expect_punct(")")
            return inner
        return self._predicate()

    def _predicate(self) -> Condition:
        token = self._peek()
        if token is not None and token.kind != "name":
            value = self._literal()
            op = self._operator()
            column = self._column()
            return _Comparison(column, _FLIPPED[op], self._typed(column, value))
        column = self._column()
        if self._keyword("IS"):
            negated = self._keyword("NOT")
            self._expect_keyword("NULL")
            return _NullTest(column, negated)
        negated = self._keyword("NOT")
        if self._keyword("IN"):
            return _Membership(column, self._list(column), negated)
        if self._keyword("BETWEEN"):
            low = self._typed(column, self._literal())
            self._expect_keyword("AND")
            high = self._typed(column, self._literal())
            between = _Junction("and", (_Comparison(column, ">=", low), _Comparison(column, "<=", high)))
            return _Not(between) if negated else between
        if negated:
            self._fail("expected IN or BETWEEN after NOT")
        op = self._operator()
        return _Comparison(column, op, self._typed(column, self._literal()))

    def _list(self, column: str) -> tuple[Any, ...]:
        closing = (
            ")" if self._punct("(") else "]" if self._punct("[") else self._fail("expected a list after IN")
        )
        values = [self._typed(column, self._literal())]
        while self._punct(","):
            values.append(self._typed(column, self._literal()))
        self._expect_punct(closing)
        return tuple(values)

    # terminals
    def _column(self) -> str:
        token = self._next("a column name")
        name = token.text[1:-1].replace('""', '"') if token.text.startswith('"') else token.text
        if token.kind != "name" or name not in self._columns:
            self._fail(f"unknown column {name!r}; the samples have {list(self._columns)}", token)
        return name

    def _operator(self) -> str:
        token = self._next("a comparison")
        if token.kind != "op":
            self._fail("expected a comparison (=, !=, <, <=, >, >=), IN, BETWEEN or IS", token)
        return {"==": "=", "<>": "!="}.get(token.text, token.text)

    def _literal(self) -> Any:
        token = self._next("a value")
        if token.kind == "number":
            number = float(token.text)
            if not math.isfinite(number):
                self._fail("numbers must be finite", token)
            return int(token.text) if re.fullmatch(r"[-+]?\d+", token.text) else number
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'")
        if token.kind == "keyword" and token.text in ("TRUE", "FALSE"):
            return token.text == "TRUE"
        return self._fail("expected a number, a 'quoted' string, TRUE or FALSE", token)

    def _typed(self, column: str, value: Any) -> Any:
        """The literal in the column's type, or a refusal that names both."""
        match self._columns[column]:
            case StrMetadata() | StrCategoricalMetadata():
                if isinstance(value, str):
                    return value
            case BooleanMetadata():
                if isinstance(value, bool):
                    return value
            case IntMetadata() | IntCategoricalMetadata() | FloatMetadata():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    return value
            case DatetimeMetadata():
                if isinstance(value, str):
                    with contextlib.suppress(ValueError):
                        return _naive_utc(value)
        return self._fail(
            f"column {column!r} ({self._columns[column].type}) cannot be compared with {_shown(value)}"
        )

    # token helpers
    def _peek(self) -> _Token | None:
        return self._tokens[self._at] if self._at < len(self._tokens) else None

    def _next(self, expected: str) -> _Token:
        token = self._peek()
        if token is None:
            self._fail(f"expected {expected} at the end")
        self._at += 1
        return token  # type: ignore[return-value]

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "keyword" and token.text == word:
            self._at += 1
            return True
        return False

    def _punct(self, mark: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "punct" and token.text == mark:
            self._at += 1
            return True
        return False

    def _expect_keyword(self, word: str) -> None:
        if not self._keyword(word):
            self._fail(f"expected {word}")

    def _expect_punct(self, mark: str) -> None:
        if not self._punct(mark):
            self._fail(f"expected {mark!r}")

    def _fail(self, problem: str, token: _Token | None = None) -> Any:
        token = token or self._peek()
        where = f" at position {token.position}" if token is not None else ""
        raise InvalidQueryError(f"condition: {problem}{where}.")


def _mask(condition: Condition, samples: pd.DataFrame) -> np.ndarray:
    """Rows that meet the condition; a comparison with a missing value is false."""
    match condition:
        case _Comparison(column, op, value):
            result = _COMPARISONS[op](samples[column], value)
        case _Membership(column, values, negated):
            result = samples[column].isin(values)
            if negated:
                result = ~result & samples[column].notna()
        case _NullTest(column, negated):
            result = samples[column].notna() if negated else samples[column].isna()
        case _Not(operand):
            return ~_mask(operand, samples)
        case _Junction(op, operands):
            combine = np.logical_and if op == "and" else np.logical_or
            return np.asarray(functools.reduce(combine, (_mask(operand, samples) for operand in operands)))
    return pd.Series(result).to_numpy(dtype=bool, na_value=False)


# -- the plan ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _OutputColumn:
    """A column of the samples and the dtype it is given (the metadata's, as the data loader holds it)."""

    name: str
    dtype: str
    kind: Literal["datetime", "int", "other"]


@dataclass(frozen=True)
class _Release:
    return_model: bool
    nb_samples: int
    condition: Condition | None


@dataclass(frozen=True)
class SynthPlan:
    """A checked request: the synthesizer, its arguments, the encoding of each column and what to release.

    `transformer` is fitted on public values only; run() sends a copy to the training process.
    """

    synth: str
    epsilon: float
    cost: Cost
    columns: tuple[str, ...]
    drop_null_rows: bool
    transformer: TableTransformer
    synth_kwargs: Mapping[str, Any]
    dp_sgd: _DpSgd | None
    outputs: tuple[_OutputColumn, ...]
    release: _Release


def _output_column(domain: _Domain) -> _OutputColumn:
    kind: Literal["datetime", "int", "other"] = "other"
    if isinstance(domain.column, DatetimeMetadata):
        kind = "datetime"
    elif isinstance(domain.column, IntMetadata | IntCategoricalMetadata):
        kind = "int"
    return _OutputColumn(domain.name, column_dtype(domain.column), kind)


class SmartnoiseSynthEngine(Engine[SmartnoiseSynthCostRequest, SynthPlan]):
    library: ClassVar[DPLibrary] = DPLibrary.SMARTNOISE_SYNTH
    runs_long: ClassVar[bool] = True  # training may take minutes: the job workers run it

    def __init__(self, settings: SmartnoiseSynthSettings) -> None:
        self.settings = settings
        self._synth_params = _synth_param_checkers(settings)
        self._transformers = _transformer_checkers(settings)
        self._trainings = threading.BoundedSemaphore(settings.max_concurrent_trainings)
        _CONTEXT.set_forkserver_preload(_TRAINING_MODULES)

    def plan(self, request: SmartnoiseSynthCostRequest, dataset: DatasetRecord) -> SynthPlan:
        metadata, synth = dataset.metadata, request.synth_name
        _check_synthesizer(request)
        rows = request.dummy_nb_rows if isinstance(request, DummyMixin) else metadata.rows
        delta = _delta(synth, request.delta, metadata.rows)
        style: Style = "cube" if synth in CUBE_SYNTHESIZERS else "gan"
        domains = [
            _domain(name, column, request.nullable, self.settings.max_categories)
            for name, column in _selected_columns(request.select_cols, metadata)
        ]
        constraints = (
            _parse_constraints(request.constraints, self._transformers, self.settings.max_constraints_length)
            if request.constraints
            else {}
        )
        unknown = set(constraints) - {domain.name for domain in domains}
        if unknown:
            raise InvalidQueryError(f"constraints name columns that are not selected: {sorted(unknown)}.")
        transformers = [self._transformer(constraints.get(domain.name), domain, style) for domain in domains]
        _check_style(transformers, [domain.name for domain in domains], synth)
        table = TableTransformer(transformers)
        kwargs = _checked_synth_params(synth, request.synth_params, self._synth_params)
        if synth != "mwem":
            kwargs["delta"] = delta
        dp_sgd = self._check_synthesizer_limits(synth, kwargs, table, rows, request.epsilon, delta)
        outputs = tuple(
            _output_column(domain)
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

    def run(self, plan: SynthPlan, data: DataFrameSource) -> SmartnoiseSynthSamples | SmartnoiseSynthModel:
        task = _Task(
            plan=plan,
            frame=data.frame[list(plan.columns)],
            torch_threads=self.settings.torch_threads,
            max_rounds=self.settings.max_condition_rounds,
            max_draw=self.settings.max_samples,
        )
        with self._trainings:
            released = _run_in_child(task, self.settings.max_training_seconds)
        if isinstance(released, str):
            return SmartnoiseSynthModel(model=released)
        return SmartnoiseSynthSamples(df_samples=frame_to_tight(released))

    # -- plan helpers
    def _transformer(self, constraint: Constraint | None, domain: _Domain, style: Style) -> ColumnTransformer:
        try:
            return _column_transformer(constraint, domain, style, self.settings.default_bins)
        except _Refused as refused:
            where = "constraints" if constraint is not None else "select_cols"
            raise InvalidQueryError(f"{where}: column {domain.name!r}: {refused}.") from None

    def _check_synthesizer_limits(
        self,
        synth: str,
        kwargs: dict[str, Any],
        table: TableTransformer,
        rows: int,
        epsilon: float,
        delta: float,
    ) -> _DpSgd | None:
        if synth == "mwem":
            _check_mwem(kwargs, _cube_cardinalities(table), rows, self.settings.max_histogram_cells)
        elif synth == "aim":
            _check_aim(kwargs, _cube_cardinalities(table))
        elif synth == "mst":
            _check_mst(_cube_cardinalities(table), self.settings.max_marginal_cells)
        else:
            return _check_gan(synth, kwargs, rows, epsilon, delta)
        return None

    def _release(
        self, request: SmartnoiseSynthCostRequest, domains: list[_Domain], outputs: tuple[_OutputColumn, ...]
    ) -> _Release:
        if not isinstance(request, SmartnoiseSynthQueryRequest):
            return _Release(return_model=False, nb_samples=0, condition=None)
        if request.return_model:
            if request.condition:
                raise InvalidQueryError(
                    "condition applies to samples only; leave it empty with return_model=true."
                )
            return _Release(return_model=True, nb_samples=0, condition=None)
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
            condition = _ConditionParser(request.condition, columns).parse()
        return _Release(return_model=False, nb_samples=request.nb_samples, condition=condition)


def _check_synthesizer(request: SmartnoiseSynthCostRequest) -> None:
    if request.synth_name == "pacsynth":
        raise InvalidQueryError(
            "pacsynth is not supported: it can crash the server process (a Rust panic). "
            "Choose aim, mwem, mst, "
            "dpctgan, patectgan, pategan or dpgan."
        )
    if (
        isinstance(request, SmartnoiseSynthQueryRequest)
        and request.return_model
        and request.synth_name == "mst"
    ):
        raise InvalidQueryError(
            "mst models cannot be returned (they do not pickle); ask for samples (return_model=false)."
        )


# -- the training process ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Task:
    """Everything the training process needs; pickled to it."""

    plan: SynthPlan
    frame: pd.DataFrame
    torch_threads: int
    max_rounds: int
    max_draw: int


class TrainingError(RuntimeError):
    """The training process failed or was stopped; the message may quote the library (shown on dummy data)."""


def _run_in_child(task: _Task, timeout: float) -> pd.DataFrame | str:
    """Train and sample (or pickle) in a process forked from the fork server; kill it after `timeout`."""
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=_child_main, args=(sender, task), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise TrainingError(
                f"Training stopped: it took longer than the limit of {timeout:g} s "
                "(smartnoise_synth.max_training_seconds)."
            )
        outcome, payload = receiver.recv()
    except EOFError:
        process.join(5)
        raise TrainingError(
            f"The training process ended without an answer (exit code {process.exitcode})."
        ) from None
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        receiver.close()
    if outcome != "ok":
        raise TrainingError(payload)
    return payload


def _child_main(sender: Connection, task: _Task) -> None:
    try:
        _fresh_process_state(task.torch_threads)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome: tuple[str, Any] = ("ok", _train_and_release(task))
    except BaseException as error:  # reported to the server, which decides what the caller may see
        outcome = ("error", f"{type(error).__name__}: {error}")
    sender.send(outcome)
    sender.close()


def _fresh_process_state(torch_threads: int) -> None:
    """Reseed the global generators the library draws from (the fork copied the fork server's state)."""
    import torch

    np.random.seed()
    random.seed()
    torch.seed()
    torch.set_num_threads(torch_threads)


def _train_and_release(task: _Task) -> pd.DataFrame | str:
    plan = task.plan
    frame = _training_frame(task.frame, plan)
    kwargs = dict(plan.synth_kwargs)
    if plan.dp_sgd is not None:
        if len(frame) < plan.dp_sgd.batch_size:
            raise ValueError(
                f"batch_size {plan.dp_sgd.batch_size} is larger than the {len(frame)} training rows."
            )
        kwargs["epochs"] = _affordable_epochs(plan.dp_sgd, len(frame), plan.epsilon)
        if kwargs["epochs"] == 0:
            raise ValueError(f"one epoch on {len(frame)} rows would spend more than epsilon {plan.epsilon}.")
    synthesizer = Synthesizer.create(plan.synth, epsilon=plan.epsilon, **kwargs)
    synthesizer.fit(frame, transformer=plan.transformer, preprocessor_eps=0.0)
    _check_spent(plan, synthesizer, len(frame))
    _withhold_private_state(plan.synth, synthesizer)
    if plan.release.return_model:
        return base64.b64encode(pickle.dumps(synthesizer)).decode("ascii")
    return _samples(synthesizer, task)


def _training_frame(frame: pd.DataFrame, plan: SynthPlan) -> pd.DataFrame:
    """Plain Python values with None for missing ones, as snsynth's transformers expect; datetimes in days."""
    if plan.drop_null_rows:
        frame = frame.dropna()
    columns = {}
    for name in plan.columns:
        series = frame[name]
        if pd.api.types.is_datetime64_any_dtype(series):
            series = (series - _EPOCH) / _DAY
        columns[name] = series.astype(object).where(series.notna(), None)
    return pd.DataFrame(columns, index=frame.index)


def _check_spent(plan: SynthPlan, synthesizer: Any, rows: int) -> None:
    """Where snsynth exposes its accountant, it must not have spent more than the declared epsilon."""
    limit = plan.epsilon * (1 + _TOLERANCE)
    spent: list[float] = []
    if plan.synth == "mwem":
        spent = [synthesizer.spent]
    elif plan.synth == "dpctgan" and plan.dp_sgd is not None:
        spent = [*synthesizer.epsilon_list, _dp_sgd_epsilon(plan.dp_sgd, rows, len(synthesizer.epsilon_list))]
    if any(value > limit for value in spent):
        raise RuntimeError(
            f"{plan.synth} spent epsilon {max(spent):.6g}, more than the declared {plan.epsilon}."
        )


def _withhold_private_state(synth: str, synthesizer: Any) -> None:
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
    elif synth == "patectgan":
        _neutralise_sampler(synthesizer.cond_generator)


def _neutralise_sampler(sampler: Any) -> None:
    """The CTGAN data sampler holds the training data and its exact category frequencies; keep neither.

    patectgan generates from `sample_original_condvec`, which reads categories off random training rows:
    an identity matrix stands in for them, a public table that picks every category of every column.
    """
    tallest = max(sampler._discrete_column_n_category, default=1)
    sampler._data = np.eye(tallest, sampler._data.shape[1])
    sampler._rid_by_cat_cols = []
    probabilities = sampler._discrete_column_category_prob
    for column, width in enumerate(sampler._discrete_column_n_category):
        probabilities[column, :] = 0.0
        probabilities[column, :width] = 1.0 / width


def _samples(synthesizer: Any, task: _Task) -> pd.DataFrame:
    release, outputs = task.plan.release, task.plan.outputs
    if release.condition is None:
        return _typed_samples(synthesizer.sample(release.nb_samples), outputs)
    kept, drawn, accepted = [], 0, 0
    for _ in range(task.max_rounds):
        missing = release.nb_samples - accepted
        if missing <= 0:
            break
        size = (
            missing
            if drawn == 0
            else _next_draw(missing, release.nb_samples, accepted / drawn, task.max_draw)
        )
        batch = _typed_samples(synthesizer.sample(size), outputs)
        batch = batch[_mask(release.condition, batch)]
        kept.append(batch)
        drawn, accepted = drawn + size, accepted + len(batch)
    return pd.concat(kept, ignore_index=True).head(release.nb_samples)


def _next_draw(missing: int, wanted: int, rate: float, max_draw: int) -> int:
    """Enough rows to find the missing ones at the acceptance rate seen so far (with a margin), but at most
    ten times the rows asked for (as snsynth's own conditional sampling) and `max_samples`."""
    ceiling = min(max_draw, 10 * wanted)
    return ceiling if rate == 0 else max(missing, min(ceiling, math.ceil(1.2 * missing / rate)))


def _typed_samples(samples: pd.DataFrame, outputs: Sequence[_OutputColumn]) -> pd.DataFrame:
    return pd.DataFrame({output.name: _typed(samples[output.name], output) for output in outputs})


def _typed(values: pd.Series, output: _OutputColumn) -> pd.Series:
    """The column in its metadata dtype where the values allow it (datetimes come back as days)."""
    try:
        if output.kind == "datetime":
            return pd.to_datetime(pd.to_numeric(values), unit="D").astype(output.dtype)
        if output.kind == "int":
            return pd.to_numeric(values).round().astype(output.dtype)
        return values.astype(output.dtype)
    except (TypeError, ValueError, OverflowError):
        return values
