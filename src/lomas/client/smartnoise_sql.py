"""SmartNoise-SQL queries: the table is named `df` (`SELECT COUNT(*) FROM df`)."""

from __future__ import annotations

from typing import Any

from lomas.client.http import LomasHttp
from lomas.client.results import QueryResult, query_result
from lomas.core.errors import DPLibrary
from lomas.core.requests import DUMMY_NB_ROWS, DUMMY_SEED
from lomas.core.responses import CostResponse


class SmartnoiseSQLClient:
    def __init__(self, http: LomasHttp) -> None:
        self._http = http

    def cost(self, query: str, epsilon: float, delta: float, mechanisms: dict[str, str] | None = None) -> CostResponse:
        """What the query would cost, without running it."""
        return self._http.cost(DPLibrary.SMARTNOISE_SQL, _fields(query, epsilon, delta, mechanisms))

    def query(
        self,
        query: str,
        epsilon: float,
        delta: float,
        mechanisms: dict[str, str] | None = None,
        postprocess: bool = True,
        dummy: bool = False,
        nb_rows: int = DUMMY_NB_ROWS,
        seed: int = DUMMY_SEED,
    ) -> QueryResult:
        """Run the query on the private data (charged), or with `dummy=True` on dummy data (free)."""
        fields = _fields(query, epsilon, delta, mechanisms) | {"postprocess": postprocess}
        return query_result(self._http.query(DPLibrary.SMARTNOISE_SQL, fields, dummy, nb_rows, seed))


def _fields(query: str, epsilon: float, delta: float, mechanisms: dict[str, str] | None) -> dict[str, Any]:
    return {"query_str": query, "epsilon": epsilon, "delta": delta, "mechanisms": mechanisms or {}}
