"""The README's researcher tour runs as written against a demo server, and shows what it says it shows."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pytest

from conftest import LiveServer, start_server, stop_server

README = Path(__file__).resolve().parent.parent / "README.md"
DOCUMENTED_URL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Every python block of the README, run in order in one namespace against a fresh demo server."""
    server: LiveServer = start_server(tmp_path_factory.mktemp("readme-server"), "--demo")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2, "the README lost its python examples"
    namespace: dict[str, Any] = {}
    try:
        for block in blocks:
            exec(compile(block.replace(DOCUMENTED_URL, server.url), str(README), "exec"), namespace)  # noqa: S102
        yield namespace
    finally:
        stop_server(server)


def test_smartnoise_sql_part_answers_and_charges(tour: dict[str, Any]) -> None:
    assert isinstance(tour["dummy"], pd.DataFrame) and len(tour["dummy"]) == 200
    assert sorted(tour["result"].df["species"]) == ["Adelie", "Chinstrap", "Gentoo"]
    assert tour["result"].epsilon == 2.0  # "CostResponse(epsilon=2.0, ...)" as the comment says


def test_other_libraries_part_answers(tour: dict[str, Any]) -> None:
    client = tour["client"]
    cost = client.opendp.cost(tour["count"])
    assert (cost.epsilon, cost.delta) == (0.5, 0.0)  # the README's comment
    assert set(tour["fitted"].model.predict([[39.0, 18.5], [50.0, 15.0]])) <= {"Adelie", "Chinstrap", "Gentoo"}
    released = client.opendp.polars.query(tour["query"]).df
    assert isinstance(released, pl.DataFrame) and set(released["species"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    history = client.get_previous_queries()
    assert {entry.dp_librairy for entry in history} == {"smartnoise_sql", "opendp", "diffprivlib", "smartnoise_synth"}
