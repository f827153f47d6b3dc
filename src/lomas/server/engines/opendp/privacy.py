"""What a measurement costs: its privacy map read at d_in, as the (ε, δ) the ledger charges."""

from __future__ import annotations

import math

import opendp.prelude as dp
from opendp.mod import OpenDPException

from lomas.core.errors import DPLibrary, ExternalLibraryError, InvalidQueryError
from lomas.server.engines.base import Cost
from lomas.server.engines.opendp.library import library_message

_ZCDP = dp.zero_concentrated_divergence()
# Measures whose ε depends on δ: they are charged at δ = fixed_delta.
_AT_FIXED_DELTA = (_ZCDP, dp.approximate(_ZCDP), dp.smoothed_max_divergence())


def privacy_cost(measurement: dp.Measurement, d_in: int, fixed_delta: float | None) -> Cost:
    """(ε, δ) of the measurement for neighbours that differ by `d_in` rows (the metadata's `max_ids`).

    Pure DP costs (ε, 0); an approximate (ε, δ) measurement costs what its map says. Zero-concentrated DP
    (ρ), approximate zero-concentrated DP (ρ with δ) and privacy profiles are read at δ = `fixed_delta`;
    the δ of approximate zCDP comes on top of it.
    """
    measure = measurement.output_measure
    try:
        if measure == dp.max_divergence():
            return _finite_cost(float(measurement.map(d_in)), 0.0)
        if measure == dp.approximate(dp.max_divergence()):
            return _finite_cost(*measurement.map(d_in))
        if measure not in _AT_FIXED_DELTA:
            raise InvalidQueryError(f"Pipelines whose privacy is measured in {measure} are not supported.")
        if fixed_delta is None:
            raise InvalidQueryError(
                f"This pipeline's privacy is measured in {measure}: give fixed_delta, the δ at which its ε "
                "is reported and charged."
            )
        if measure != dp.smoothed_max_divergence():
            measurement = dp.c.make_zCDP_to_approxDP(measurement)
        epsilon, delta = dp.c.make_fix_delta(measurement, fixed_delta).map(d_in)
    except OpenDPException as error:
        raise ExternalLibraryError(
            DPLibrary.OPENDP, f"OpenDP cannot price the pipeline: {library_message(error)}"
        ) from None
    if math.isinf(epsilon):
        raise InvalidQueryError(f"At fixed_delta={fixed_delta} ε is infinite; give a larger fixed_delta.")
    return _finite_cost(epsilon, delta)


def _finite_cost(epsilon: float, delta: float) -> Cost:
    if math.isnan(epsilon) or math.isnan(delta) or epsilon < 0 or delta < 0:
        raise InvalidQueryError(f"OpenDP priced the pipeline at ε={epsilon}, δ={delta}, which is not a cost.")
    if math.isinf(epsilon):
        raise InvalidQueryError("The pipeline's ε is infinite; give it more noise (a larger scale).")
    return Cost(float(epsilon), float(delta))
