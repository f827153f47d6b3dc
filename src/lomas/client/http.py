"""HTTP transport: JSON in, JSON out, server errors raised as the Lomas exceptions they describe."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
from pydantic import BaseModel
from rich.console import Console

from lomas.core.errors import DPLibrary, InternalServerError, LomasError, error_from_body
from lomas.core.requests import LIBRARY_REQUESTS
from lomas.core.responses import CostResponse, JobResponse, JobStatus, QueryResponse

DEFAULT_TIMEOUT_S = 60.0
TOKEN_ENV = "LOMAS_TOKEN"
_FIRST_POLL_S = 0.05
_MAX_POLL_S = 2.0


class LomasHttp:
    def __init__(
        self,
        url: str,
        user_name: str,
        dataset_name: str,
        timeout: float = DEFAULT_TIMEOUT_S,
        show_progress: bool = True,
        token: str | None = None,
    ) -> None:
        self.dataset_name = dataset_name
        self.user_name = user_name
        self.show_progress = show_progress
        headers = {"user-name": user_name, "Accept": "application/json"}
        token = token or os.environ.get(TOKEN_ENV, "").strip() or None
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def post(self, endpoint: str, body: BaseModel) -> Any:
        """POST a request model; return the decoded JSON answer or raise the server's error."""
        return _payload(self._send("POST", f"/{endpoint}", json=body.model_dump(mode="json")), expected=200)

    def post_job(self, endpoint: str, body: BaseModel) -> Any:
        """POST a long query as a background job, wait for it, and return its answer like `post`.

        The server checks the query and reserves its cost before it answers 202, so refusals still
        arrive at once; then the client polls `GET /status/{job_id}`, showing a spinner, for as long
        as the job takes (no HTTP request stays open meanwhile, so no timeout is hit).
        """
        response = self._send(
            "POST", f"/{endpoint}", json=body.model_dump(mode="json"), headers={"Prefer": "respond-async"}
        )
        if response.status_code == 200:  # a server that answers synchronously
            return _payload(response, expected=200)
        job = JobResponse.model_validate(_payload(response, expected=202))
        return self._wait(job)

    def cost(self, library: DPLibrary, fields: dict[str, Any]) -> CostResponse:
        """`/estimate_{library}_cost` with a body made of `fields` (and the dataset name)."""
        body = LIBRARY_REQUESTS[library].cost(dataset_name=self.dataset_name, **fields)
        return CostResponse.model_validate(self.post(f"estimate_{library}_cost", body))

    def query(
        self, library: DPLibrary, fields: dict[str, Any], dummy: bool, nb_rows: int, seed: int, as_job: bool = False
    ) -> QueryResponse:
        """`/{library}_query`, or `/dummy_{library}_query` with `nb_rows` rows made with `seed`; a job
        (waited for) when `as_job`."""
        requests = LIBRARY_REQUESTS[library]
        if dummy:
            body = requests.dummy_query.model_validate(
                {"dataset_name": self.dataset_name, **fields, "dummy_nb_rows": nb_rows, "dummy_seed": seed}
            )
            endpoint = f"dummy_{library}_query"
        else:
            body, endpoint = requests.query(dataset_name=self.dataset_name, **fields), f"{library}_query"
        send = self.post_job if as_job else self.post
        return QueryResponse.model_validate(send(endpoint, body))

    def job(self, job_id: str) -> JobResponse:
        """The state of one of the caller's background jobs."""
        return JobResponse.model_validate(_payload(self._send("GET", f"/status/{job_id}"), expected=200))

    def _wait(self, job: JobResponse) -> Any:
        console = Console(stderr=True, quiet=not self.show_progress)
        started = time.monotonic()
        interval = _FIRST_POLL_S
        with console.status(f"Job {job.job_id} {job.status}") as status:
            while job.status in (JobStatus.PENDING, JobStatus.RUNNING):
                time.sleep(interval)
                interval = min(interval * 1.5, _MAX_POLL_S)
                job = self.job(job.job_id)
                status.update(f"{job.library} job {job.status}, {time.monotonic() - started:.0f} s")
        if job.status == JobStatus.COMPLETE and job.result is not None:
            return job.result.model_dump(mode="json")
        raise _job_error(job)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise InternalServerError(f"Cannot reach the Lomas server at {self._client.base_url}: {error}") from error

    def close(self) -> None:
        self._client.close()


def _payload(response: httpx.Response, expected: int) -> Any:
    try:
        payload = response.json()
    except ValueError:
        payload = response.text
    if response.status_code == expected:
        return payload
    raise error_from_body(payload, response.status_code)


def _job_error(job: JobResponse) -> LomasError:
    if job.error is None:
        return InternalServerError(f"Job {job.job_id} ended as {job.status} without an answer.")
    return error_from_body(job.error.model_dump(mode="json"), job.status_code or 500)
