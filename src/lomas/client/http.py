"""HTTP transport: JSON in, JSON out, server errors raised as the Lomas exceptions they describe."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel

from lomas.core.errors import InternalServerError, error_from_body

DEFAULT_TIMEOUT_S = 60.0


class LomasHttp:
    def __init__(self, url: str, user_name: str, dataset_name: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.dataset_name = dataset_name
        self.user_name = user_name
        self._client = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"user-name": user_name, "Accept": "application/json"},
            timeout=timeout,
        )

    def post(self, endpoint: str, body: BaseModel) -> Any:
        """POST a request model; return the decoded JSON answer or raise the server's error."""
        try:
            response = self._client.post(f"/{endpoint}", json=body.model_dump(mode="json"))
        except httpx.HTTPError as error:
            raise InternalServerError(f"Cannot reach the Lomas server at {self._client.base_url}: {error}") from error
        try:
            payload = response.json()
        except ValueError:
            payload = response.text
        if response.status_code == 200:
            return payload
        raise error_from_body(payload, response.status_code)

    def post_job(self, endpoint: str, body: BaseModel) -> Any:
        """POST a long query as a background job and wait for its answer (work in progress: synchronous)."""
        return self.post(endpoint, body)

    def close(self) -> None:
        self._client.close()
