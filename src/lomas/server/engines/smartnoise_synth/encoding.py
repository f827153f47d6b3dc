"""Column transformers built from the constraints and the public metadata, and fitted on public values only.

Every selected column gets a snsynth column transformer fitted on its declared categories, bounds and
nullability before any data is read. The synthesizer therefore never fits a transformer on private data, no
budget goes to preprocessing (`preprocessor_eps=0`), and the whole declared epsilon goes to the synthesizer.
Free-text columns have no public domain: they must be dropped (`select_cols`, or a "drop" constraint) or
replaced by fake values (an AnonymizationTransformer). mwem, aim and mst take "cube" encodings (one
categorical code per column), the GANs "gan" encodings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

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

from lomas.core.errors import InvalidQueryError
from lomas.core.metadata import (
    BooleanMetadata,
    DatetimeMetadata,
    FloatMetadata,
    IntCategoricalMetadata,
    IntMetadata,
    StrCategoricalMetadata,
)
from lomas.server.engines.smartnoise_synth.checkers import Refused
from lomas.server.engines.smartnoise_synth.columns import Domain
from lomas.server.engines.smartnoise_synth.constraints import WHOLE_COLUMN, Chain, Constraint, Step
from lomas.server.engines.smartnoise_synth.params import CUBE_SYNTHESIZERS

Style = Literal["cube", "gan"]

_BOUNDED = ("MinMaxTransformer", "BinTransformer")  # bounds left out are taken from the metadata
_CATEGORY_LEARNERS = ("LabelTransformer", "OneHotEncoder")  # need a finite public domain
_NULL_AWARE = ("LabelTransformer", "MinMaxTransformer", "BinTransformer")


def column_transformer(
    constraint: Constraint | None, domain: Domain, style: Style, bins: int
) -> ColumnTransformer:
    """The column's transformer (its constraint, or the default for its type), fitted on public values."""
    try:
        return _fitted_transformer(constraint, domain, style, bins)
    except Refused as refused:
        where = "constraints" if constraint is not None else "select_cols"
        raise InvalidQueryError(f"{where}: column {domain.name!r}: {refused}.") from None


def _fitted_transformer(
    constraint: Constraint | None, domain: Domain, style: Style, bins: int
) -> ColumnTransformer:
    steps = _steps(constraint if constraint is not None else _default_constraint(domain), domain, style, bins)
    _check_steps(steps, domain)
    parts = [_make(step, domain) for step in steps]
    transformer = parts[0] if len(parts) == 1 else ChainTransformer(parts)
    numeric = steps[0].name in ("LogTransformer", "ClampTransformer", *_BOUNDED)
    try:
        if steps[0].name not in WHOLE_COLUMN:
            transformer.fit(domain.fit_values(numeric))
    except Exception as error:  # the library's words about public values only
        raise Refused(f"it cannot be encoded so: {type(error).__name__}: {error}") from None
    if not transformer.fit_complete or transformer.needs_epsilon:
        raise Refused("its encoding would have to be learnt from the private data; give the bounds")
    return transformer


def check_style(transformers: Sequence[ColumnTransformer], names: Sequence[str], synth: str) -> None:
    """Something must be synthesized, and mwem, aim and mst take categorical encodings only."""
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


def _output_type(transformer: ColumnTransformer) -> ColumnType | None:
    """CATEGORICAL or CONTINUOUS, or None for a column that is dropped or replaced by fake values."""
    if isinstance(transformer, DropTransformer | AnonymizationTransformer):
        return None
    return transformer.output_type


def _default_constraint(domain: Domain) -> Constraint:
    match domain.column:
        case StrCategoricalMetadata() | IntCategoricalMetadata() | BooleanMetadata():
            return "categorical"
        case IntMetadata() | FloatMetadata() | DatetimeMetadata():
            return "continuous"
    raise Refused(
        "it is free text without declared categories, so nothing can be learnt of it without reading it: "
        'leave it out of select_cols, or constrain it with "drop" or an AnonymizationTransformer '
        "(fake values)"
    )


def _alias_steps(alias: str, domain: Domain, style: Style, bins: int) -> tuple[Step, ...]:
    nullable = {"nullable": domain.nullable}
    if alias in ("categorical", "ordinal"):
        if domain.categories is None:
            raise Refused(
                f"it cannot be {alias}: the metadata declares no categories for it "
                "(nor a short integer range)"
            )
        label = Step("LabelTransformer", nullable)
        return (label,) if style == "cube" else (label, Step("OneHotEncoder", {}))
    if domain.bounds is None:
        raise Refused("it cannot be continuous: the metadata declares no bounds for it")
    if style == "cube":
        return (Step("BinTransformer", {**nullable, "bins": bins}),)
    return (Step("MinMaxTransformer", nullable),)


def _steps(constraint: Constraint, domain: Domain, style: Style, bins: int) -> tuple[Step, ...]:
    match constraint:
        case str():
            return _alias_steps(constraint, domain, style, bins)
        case Step():
            return (constraint,)
        case Chain():
            if style == "cube":
                raise Refused(
                    "ChainTransformer is for the GANs; mwem, aim and mst need one transformer per column"
                )
            return constraint.steps
    raise TypeError(f"unexpected constraint {constraint!r}")


def _check_steps(steps: tuple[Step, ...], domain: Domain) -> None:
    """Refuse what could only fail, or learn something, once the private values are read."""
    first, last = steps[0], steps[-1]
    if last.name == "ClampTransformer":
        raise Refused("ClampTransformer must be followed by another transformer in a ChainTransformer")
    if first.name == "AnonymizationTransformer" and not domain.is_text:
        raise Refused("AnonymizationTransformer replaces text columns only")
    if (
        domain.nullable
        and first.name not in WHOLE_COLUMN
        and not (first.name in _NULL_AWARE and first.params.get("nullable", first.name == "LabelTransformer"))
    ):
        raise Refused(
            f"it may be null, so its first transformer must be {', '.join(_NULL_AWARE)} with nullable=true "
            "(or query with nullable=false, which leaves out the rows with a missing value)"
        )
    for position, step in enumerate(steps):
        if step.name in _CATEGORY_LEARNERS and position == 0 and domain.categories is None:
            raise Refused(f"{step.name} needs declared categories (or a short integer range) in the metadata")
        after_label = position == 1 and step.name == "OneHotEncoder" and first.name == "LabelTransformer"
        if step.name in _CATEGORY_LEARNERS and position > 0 and not after_label:
            raise Refused(
                f"{step.name} must come first in a ChainTransformer "
                "(OneHotEncoder may follow LabelTransformer)"
            )
        if step.name in ("LogTransformer", *_BOUNDED) and position == 0 and domain.bounds is None:
            raise Refused(f"{step.name} needs a numeric or datetime column with bounds in the metadata")
        missing_bounds = step.name in _BOUNDED and (
            step.params.get("lower") is None or step.params.get("upper") is None
        )
        if missing_bounds and position > 0:
            raise Refused(
                f"{step.name} inside a ChainTransformer needs lower and upper "
                "(the metadata's are for raw values)"
            )
        if step.name in _BOUNDED and not missing_bounds and step.params["lower"] >= step.params["upper"]:
            raise Refused(f"{step.name} needs lower < upper")


def _make(step: Step, domain: Domain) -> ColumnTransformer:
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
