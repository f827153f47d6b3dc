"""`Client`: one researcher, one dataset, one server (the lomas-client 0.4.1 method names)."""

from __future__ import annotations

import pandas as pd

from lomas.client.http import DEFAULT_TIMEOUT_S, LomasHttp
from lomas.client.results import dummy_frame
from lomas.client.diffprivlib import DiffPrivLibClient
from lomas.client.opendp import OpenDPClient
from lomas.client.smartnoise_sql import SmartnoiseSQLClient
from lomas.client.smartnoise_synth import SmartnoiseSynthClient
from lomas.core.metadata import Metadata
from lomas.core.requests import DUMMY_NB_ROWS, DUMMY_SEED, DummyDatasetRequest, LomasRequest
from lomas.core.responses import (
    ArchivedQuery,
    DummyDatasetResponse,
    InitialBudgetResponse,
    PreviousQueriesResponse,
    RemainingBudgetResponse,
    SpentBudgetResponse,
)


class Client:
    """Talk to a Lomas server as `user_name` about `dataset_name`.

    >>> client = Client("http://127.0.0.1:8000", "Dr. Antartica", "PENGUIN", token="lomas_...")
    >>> client.smartnoise_sql.query("SELECT COUNT(*) AS n FROM df", epsilon=1.0, delta=1e-5).df
    """

    def __init__(
        self,
        url: str,
        user_name: str,
        dataset_name: str,
        timeout: float = DEFAULT_TIMEOUT_S,
        show_progress: bool = True,
        token: str | None = None,
    ) -> None:
        """`token` is the API token the administrator issued (default: the `LOMAS_TOKEN` environment
        variable); it is sent as `Authorization: Bearer` and decides who you are. `user_name` is still
        sent as the 0.4 `user-name` header, which only servers in open mode trust.

        `timeout` bounds each HTTP request; long queries run as jobs, polled with a spinner on
        stderr unless `show_progress` is false."""
        self._http = LomasHttp(url, user_name, dataset_name, timeout, show_progress, token)
        self.smartnoise_sql = SmartnoiseSQLClient(self._http)
        self.opendp = OpenDPClient(self._http)
        self.diffprivlib = DiffPrivLibClient(self._http)
        self.smartnoise_synth = SmartnoiseSynthClient(self._http)

    def _request(self) -> LomasRequest:
        return LomasRequest(dataset_name=self._http.dataset_name)

    def get_dataset_metadata(self) -> Metadata:
        return Metadata.model_validate(self._http.post("get_dataset_metadata", self._request()))

    def get_dummy_dataset(self, nb_rows: int = DUMMY_NB_ROWS, seed: int = DUMMY_SEED) -> pd.DataFrame:
        """A dummy dataset with the private dataset's schema, generated from its metadata only."""
        body = DummyDatasetRequest(dataset_name=self._http.dataset_name, dummy_nb_rows=nb_rows, dummy_seed=seed)
        return dummy_frame(DummyDatasetResponse.model_validate(self._http.post("get_dummy_dataset", body)))

    def get_initial_budget(self) -> InitialBudgetResponse:
        return InitialBudgetResponse.model_validate(self._http.post("get_initial_budget", self._request()))

    def get_total_spent_budget(self) -> SpentBudgetResponse:
        return SpentBudgetResponse.model_validate(self._http.post("get_total_spent_budget", self._request()))

    def get_remaining_budget(self) -> RemainingBudgetResponse:
        return RemainingBudgetResponse.model_validate(self._http.post("get_remaining_budget", self._request()))

    def get_previous_queries(self) -> list[ArchivedQuery]:
        """Every query that spent budget on this dataset, oldest first."""
        response = PreviousQueriesResponse.model_validate(self._http.post("get_previous_queries", self._request()))
        return response.previous_queries

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
