"""OpenDP queries: a measurement built with OpenDP (`>>` and `then_...`) that reads the dataset as CSV text.

The pipeline must start with `make_split_dataframe(separator=",", col_names=<the metadata's columns>)`:
the server feeds the private data as CSV text without header, in the metadata's column order.

>>> import opendp.prelude as dp
>>> dp.enable_features("contrib")
>>> pipeline = (
...     dp.t.make_split_dataframe(separator=",", col_names=list(client.get_dataset_metadata().columns))
...     >> dp.t.make_select_column(key="species", TOA=str)
...     >> dp.t.then_count()
...     >> dp.m.then_laplace(scale=1.0)
... )
>>> client.opendp.query(pipeline).value

Pipelines travel in the opendp_logger format of Lomas 0.4 (`{"version", "ast"}`), which `pipeline_json`
writes from the way OpenDP recorded the pipeline's construction; a JSON string in that format (for example
one that lomas-client 0.4.1 made) may be passed instead of a measurement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import opendp.prelude as dp

from lomas.client.http import LomasHttp
from lomas.client.opendp_polars import OpenDPPolarsClient
from lomas.client.results import Answer
from lomas.core.errors import DPLibrary
from lomas.core.requests import DUMMY_NB_ROWS, DUMMY_SEED
from lomas.core.responses import CostResponse, OpenDPResult

_CHAINS = {"make_chain_tt": "transformation1", "make_chain_mt": "measurement1"}


@dataclass(frozen=True)
class OpenDPQueryResult(Answer):
    """A differentially private value (a number or a list of numbers) and what it cost."""

    value: int | float | list[int | float]


class OpenDPClient:
    def __init__(self, http: LomasHttp) -> None:
        self._http = http
        self.polars = OpenDPPolarsClient(http)

    def cost(self, opendp_pipeline: dp.Measurement | str, fixed_delta: float | None = None) -> CostResponse:
        """What the pipeline would cost, without running it.

        Pipelines measured in zero-concentrated DP (`then_gaussian`) or with a privacy profile are priced at
        δ = `fixed_delta`, which they need.
        """
        return self._http.cost(DPLibrary.OPENDP, _fields(opendp_pipeline, fixed_delta))

    def query(
        self,
        opendp_pipeline: dp.Measurement | str,
        fixed_delta: float | None = None,
        dummy: bool = False,
        nb_rows: int = DUMMY_NB_ROWS,
        seed: int = DUMMY_SEED,
    ) -> OpenDPQueryResult:
        """Run the pipeline on the private data (charged), or with `dummy=True` on dummy data (free)."""
        response = self._http.query(DPLibrary.OPENDP, _fields(opendp_pipeline, fixed_delta), dummy, nb_rows, seed)
        assert isinstance(response.result, OpenDPResult)
        return OpenDPQueryResult(response.epsilon, response.delta, response.requested_by, response.result.value)


def _fields(opendp_pipeline: dp.Measurement | str, fixed_delta: float | None) -> dict[str, Any]:
    return {"opendp_json": pipeline_json(opendp_pipeline), "fixed_delta": fixed_delta}


def pipeline_json(pipeline: dp.Measurement | str) -> str:
    """The pipeline in the Lomas 0.4 wire format; a string is taken to be that format already."""
    if isinstance(pipeline, str):
        return pipeline
    if not isinstance(pipeline, dp.Measurement):
        raise TypeError(
            f"An OpenDP query is a Measurement (end the pipeline with a noise mechanism), not {pipeline!r}."
        )
    return json.dumps({"version": dp.__version__, "ast": _ast(pipeline)})


def _ast(value: Any) -> Any:
    """One value of a pipeline as opendp_logger writes it: lists tagged, tuples as arrays, types as names."""
    if isinstance(value, (dp.Measurement, dp.Transformation, dp.Domain, dp.Metric, dp.Measure)):
        return _object_ast(value)
    if isinstance(value, tuple):
        return [_ast(item) for item in value]
    if isinstance(value, list):
        return {"_type": "list", "_items": [_ast(item) for item in value]}
    if isinstance(value, (dp.RuntimeType, type)):
        return str(dp.RuntimeType.parse(value))
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"A {type(value).__name__} cannot be sent to the server as part of an OpenDP pipeline.")


def _object_ast(value: Any) -> dict[str, Any]:
    """The constructor call OpenDP recorded for `value`; a `>>` step becomes a partial_chain."""
    recorded = getattr(value, "__opendp_dict__", None)
    if recorded is None:
        raise TypeError(
            f"{value!r} was not made by an OpenDP constructor, so it cannot be sent to the server."
        )
    func, module, kwargs = recorded["__function__"], recorded["__module__"], recorded["__kwargs__"]
    if func in _CHAINS:
        step, lhs = kwargs[_CHAINS[func]], kwargs["transformation0"]
        partial = _partial_step(step, lhs)
        if partial is not None:
            return {"_type": "partial_chain", "lhs": _ast(lhs), "rhs": partial}
    if module == "core":
        raise TypeError(
            f"{func} (the output domain or metric of another object) cannot be sent; chain with `>>` instead."
        )
    return {
        "_type": "constructor",
        "module": module,
        "func": func,
        "kwargs": {k: _ast(v) for k, v in kwargs.items()},
    }


def _partial_step(step: Any, lhs: Any) -> dict[str, Any] | None:
    """`then_<name>(...)` if `step` was made on the output domain and metric of `lhs` (`lhs >> then_...`)."""
    recorded = getattr(step, "__opendp_dict__", None)
    if recorded is None:  # not made by a constructor: `_ast` says so
        return None
    kwargs = recorded["__kwargs__"]
    made_on_lhs = _output_of(kwargs.get("input_domain"), "transformation_output_domain", lhs) and _output_of(
        kwargs.get("input_metric"), "transformation_output_metric", lhs
    )
    if not made_on_lhs or not recorded["__function__"].startswith("make_"):
        return None
    rest = {key: _ast(value) for key, value in kwargs.items() if key not in ("input_domain", "input_metric")}
    then = "then_" + recorded["__function__"].removeprefix("make_")
    return {"_type": "constructor", "module": recorded["__module__"], "func": then, "kwargs": rest}


def _output_of(value: Any, accessor: str, lhs: Any) -> bool:
    recorded = getattr(value, "__opendp_dict__", None) or {}
    return recorded.get("__function__") == accessor and recorded.get("__kwargs__", {}).get("this") is lhs
