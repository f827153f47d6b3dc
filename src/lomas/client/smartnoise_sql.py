"""SmartNoise-SQL queries: the table is named `df` (`SELECT COUNT(*) FROM df`)."""

from __future__ import annotations

from lomas.client.http import LomasHttp
from lomas.client.results import QueryResult, query_result
from lomas.core.requests import (
    DUMMY_NB_ROWS,
    DUMMY_SEED,
    SmartnoiseSQLCostRequest,
    SmartnoiseSQLDummyQueryRequest,
    SmartnoiseSQLQueryRequest,
)
from lomas.core.responses import CostResponse, QueryResponse


class SmartnoiseSQLClient:
    def __init__(self, http: LomasHttp) -> None:
        self._http = http

    def cost(self, query: str, epsilon: float, delta: float, mechanisms: dict[str, str] | None = None) -> CostResponse:
        """What the query would cost, without running it."""
        body = SmartnoiseSQLCostRequest(
            dataset_name=self._http.dataset_name, query_str=query, epsilon=epsilon, delta=delta, mechanisms=mechanisms or {}
        )
        return CostResponse.model_validate(self._http.post("estimate_smartnoise_sql_cost", body))

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
        fields = dict(
            dataset_name=self._http.dataset_name,
            query_str=query,
            epsilon=epsilon,
            delta=delta,
            mechanisms=mechanisms or {},
            postprocess=postprocess,
        )
        if dummy:
            body: SmartnoiseSQLQueryRequest = SmartnoiseSQLDummyQueryRequest(**fields, dummy_nb_rows=nb_rows, dummy_seed=seed)
            endpoint = "dummy_smartnoise_sql_query"
        else:
            body, endpoint = SmartnoiseSQLQueryRequest(**fields), "smartnoise_sql_query"
        return query_result(QueryResponse.model_validate(self._http.post(endpoint, body)))
