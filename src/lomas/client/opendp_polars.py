"""OpenDP polars Context API queries (work in progress)."""

from __future__ import annotations

from lomas.client.http import LomasHttp


class OpenDPPolarsClient:
    def __init__(self, http: LomasHttp) -> None:
        self._http = http
