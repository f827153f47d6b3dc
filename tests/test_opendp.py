"""OpenDP pipelines (the opendp_logger format of Lomas 0.4) through the real HTTP server and our client.

The JSON fixtures are pipelines exactly as lomas-client 0.4.1 (opendp 0.10) sends them, made by
tests/fixtures/opendp/make_fixtures.py with the compat environment; expected_costs.json holds what
opendp 0.10's own privacy maps say they cost. Other pipelines are built here with our OpenDP (0.14).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import opendp.prelude as dp
import pandas as pd
import pytest

from conftest import LiveServer, start_server, stop_server
from lomas.client import Client, ExternalLibraryError, InvalidQueryError
from lomas.server.engines.opendp.logger_engine import dataset_csv

FIXTURES = Path(__file__).parent / "fixtures" / "opendp"
EXPECTED_COSTS: dict[str, list[float]] = json.loads((FIXTURES / "expected_costs.json").read_text())
FIXED_DELTA = 1e-5  # the delta of expected_costs.json
PENGUIN_SPECIES = [152, 68, 124, 0]  # Adelie, Chinstrap, Gentoo, and the null category
PENGUIN_FEMALES = 165

dp.enable_features("contrib")  # the client side: building pipelines with our OpenDP
# OpenDP 0.12 deprecated its dataframe constructors in favour of polars; Lomas 0.4 pipelines use them.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated function:DeprecationWarning")


def pipeline_041(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text()


def edited_041(name: str, edit: Any) -> str:
    """A 0.4.1 pipeline with its document changed by `edit(document)`."""
    document = json.loads(pipeline_041(name))
    edit(document)
    return json.dumps(document)


def rows(client: Client) -> dp.Transformation:
    return dp.t.make_split_dataframe(separator=",", col_names=list(client.get_dataset_metadata().columns))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("opendp-server"), "--demo")
    yield server
    stop_server(server)


@pytest.mark.parametrize("name", sorted(EXPECTED_COSTS))
def test_pipelines_of_the_041_client_cost_what_opendp_010_says(server: LiveServer, name: str) -> None:
    client = Client(server.url, "Tintin", "PENGUIN")
    before = client.get_total_spent_budget()
    cost = client.opendp.cost(pipeline_041(name), fixed_delta=FIXED_DELTA)
    assert [cost.epsilon, cost.delta] == pytest.approx(EXPECTED_COSTS[name], rel=1e-12)
    assert client.get_total_spent_budget() == before


def test_count_is_noisy_true_count_and_charged_its_cost(server: LiveServer) -> None:
    client = Client(server.url, "Dr. Antartica", "PENGUIN")
    before = client.get_total_spent_budget()
    cost = client.opendp.cost(pipeline_041("count_laplace"))
    result = client.opendp.query(pipeline_041("count_laplace"))

    assert isinstance(result.value, int) and abs(result.value - 344) < 40  # Laplace(1) noise on 344 rows
    assert (result.epsilon, result.delta, result.requested_by) == (cost.epsilon, 0.0, "Dr. Antartica")
    after = client.get_total_spent_budget()
    assert after.total_spent_epsilon == pytest.approx(before.total_spent_epsilon + cost.epsilon)
    assert after.total_spent_delta == before.total_spent_delta
    last = client.get_previous_queries()[-1]
    assert (last.dp_librairy, last.client_input["opendp_json"]) == ("opendp", pipeline_041("count_laplace"))
    assert last.response["result"] == {"res_type": "opendp", "value": result.value}


def test_histogram_of_the_041_client_counts_each_category(server: LiveServer) -> None:
    client = Client(server.url, "Tintin", "PENGUIN")
    result = client.opendp.query(pipeline_041("histogram_laplace"))
    assert isinstance(result.value, list) and len(result.value) == len(PENGUIN_SPECIES)
    assert all(abs(noisy - true) < 15 for noisy, true in zip(result.value, PENGUIN_SPECIES, strict=True))
    assert result.epsilon == EXPECTED_COSTS["histogram_laplace"][0]


@pytest.mark.parametrize("name", ["mean_gaussian", "mean_zcdp_to_approx"])
def test_approximate_dp_pipelines_need_fixed_delta_and_are_charged_at_it(
    server: LiveServer, name: str
) -> None:
    client = Client(server.url, "Tintin", "PENGUIN")
    before = client.get_total_spent_budget()
    with pytest.raises(InvalidQueryError, match="give fixed_delta"):
        client.opendp.query(pipeline_041(name))
    assert client.get_total_spent_budget() == before

    result = client.opendp.query(pipeline_041(name), fixed_delta=FIXED_DELTA)
    assert isinstance(result.value, float) and 3800 < result.value < 4600  # mean body mass ~4200 g, noise 50
    assert [result.epsilon, result.delta] == pytest.approx(EXPECTED_COSTS[name], rel=1e-12)
    after = client.get_total_spent_budget()
    assert after.total_spent_epsilon == pytest.approx(before.total_spent_epsilon + result.epsilon)
    assert after.total_spent_delta == pytest.approx(before.total_spent_delta + FIXED_DELTA)


@pytest.mark.parametrize("name", sorted(EXPECTED_COSTS))
def test_dummy_queries_run_every_041_pipeline_for_free(server: LiveServer, name: str) -> None:
    client = Client(server.url, "Tintin", "PENGUIN")
    before = client.get_total_spent_budget()
    result = client.opendp.query(pipeline_041(name), fixed_delta=FIXED_DELTA, dummy=True, nb_rows=300, seed=5)
    if name == "histogram_laplace":
        assert isinstance(result.value, list) and len(result.value) == 4 and abs(sum(result.value) - 300) < 60
    elif name.startswith("count"):
        assert isinstance(result.value, int) and abs(result.value - 300) < 40
    else:
        assert isinstance(result.value, float)
    assert [result.epsilon, result.delta] == pytest.approx(EXPECTED_COSTS[name], rel=1e-12)
    assert client.get_total_spent_budget() == before


def test_pipelines_built_with_our_opendp_are_priced_by_their_own_privacy_map(server: LiveServer) -> None:
    client = Client(server.url, "Dr. Antartica", "PENGUIN")
    females = (
        rows(client)
        >> dp.t.make_select_column(key="sex", TOA=str)
        >> dp.t.then_is_equal("female")
        >> dp.t.then_cast_default(TOA="i32")
        >> dp.t.then_clamp((0, 1))
        >> dp.t.then_sum()
        >> dp.m.then_laplace(scale=2.0)
    )
    result = client.opendp.query(females)
    assert isinstance(result.value, int) and abs(result.value - PENGUIN_FEMALES) < 40
    assert (result.epsilon, result.delta) == (females.map(1), 0.0)

    gaussian_count = rows(client) >> dp.t.make_select_column(key="island", TOA=str) >> dp.t.then_count()
    gaussian_count = gaussian_count >> dp.m.then_gaussian(scale=20.0)
    local = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(gaussian_count), FIXED_DELTA).map(1)
    cost = client.opendp.cost(gaussian_count, fixed_delta=FIXED_DELTA)
    assert (cost.epsilon, cost.delta) == pytest.approx(local, rel=1e-12)


def test_failure_after_reading_private_data_is_charged_and_generic(server: LiveServer) -> None:
    """Laplace noise of scale 1e308 on 1001 float counts overflows some of them to infinity, every time."""
    client = Client(server.url, "Dr. House", "PATIENTS")  # nobody else spends this budget here
    overflow = (
        rows(client)
        >> dp.t.make_select_column(key="department", TOA=str)
        >> dp.t.then_count_by_categories(categories=[f"c{i}" for i in range(1000)], TOA="f64")
        >> dp.m.then_laplace(scale=1e308)
    )
    with pytest.raises(
        ExternalLibraryError, match="overflowed to infinity"
    ):  # dummy data: the engine's words
        client.opendp.query(overflow, dummy=True)
    assert client.get_total_spent_budget().total_spent_epsilon == 0.0

    with pytest.raises(ExternalLibraryError) as failure:
        client.opendp.query(overflow)
    assert "infinity" not in failure.value.message and "charged" in failure.value.message
    cost = client.opendp.cost(overflow)
    assert client.get_total_spent_budget().total_spent_epsilon == cost.epsilon > 0
    [entry] = client.get_previous_queries()
    assert entry.response == {"error": failure.value.message}


def _without_measurement(document: dict[str, Any]) -> None:
    document["ast"] = document["ast"]["lhs"]


def _columns_of_lomas_04_penguin(document: dict[str, Any]) -> None:
    split = document["ast"]["lhs"]["lhs"]["args"][1]
    split["kwargs"]["col_names"]["_items"].remove("year")


def _select(key: str) -> Any:
    def edit(document: dict[str, Any]) -> None:
        document["ast"]["lhs"]["lhs"]["args"][0]["kwargs"]["key"] = key

    return edit


def _clamp_text(document: dict[str, Any]) -> None:
    document["ast"]["lhs"]["rhs"] = {
        "_type": "constructor",
        "func": "then_clamp",
        "module": "transformations",
        "kwargs": {"bounds": [0, 1]},
    }


def _version(version: str) -> Any:
    return lambda document: document.update(version=version)


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (_without_measurement, InvalidQueryError, "must end with a measurement"),
        (_columns_of_lomas_04_penguin, InvalidQueryError, r"col_names must be the dataset's columns.*'year'"),
        (_select("nope"), InvalidQueryError, "unknown column 'nope'"),
        (_clamp_text, ExternalLibraryError, "OpenDP refused the pipeline"),
        (_version("0.9.0"), InvalidQueryError, "Unsupported OpenDP version '0.9.0'"),
    ],
    ids=["no measurement", "0.4 penguin columns", "unknown column", "clamp on text", "old version"],
)
def test_pipelines_a_researcher_can_fix_are_refused_with_a_reason_and_cost_nothing(
    server: LiveServer, edit: Any, error: type[Exception], message: str
) -> None:
    client = Client(server.url, "Dr. Antartica", "PENGUIN")
    before = (client.get_total_spent_budget(), client.get_previous_queries())
    with pytest.raises(error, match=message):
        client.opendp.query(edited_041("count_laplace", edit))
    assert (client.get_total_spent_budget(), client.get_previous_queries()) == before


def test_a_measurement_must_read_the_dataset(server: LiveServer) -> None:
    client = Client(server.url, "Dr. Antartica", "PENGUIN")
    on_a_number = dp.m.make_laplace(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=1.0
    )
    with pytest.raises(InvalidQueryError, match="start it with make_split_dataframe"):
        client.opendp.query(on_a_number)


def test_library_features_come_from_the_server_configuration(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server", "--demo", env={"LOMAS_OPENDP__CONTRIB": "false"})
    try:
        client = Client(server.url, "Dr. Antartica", "PENGUIN")
        for _ in range(2):  # a refused request switches nothing on
            with pytest.raises(ExternalLibraryError, match="contrib"):
                client.opendp.cost(pipeline_041("count_laplace"))
    finally:
        stop_server(server)


def test_each_row_is_one_line_of_the_csv_text_opendp_reads() -> None:
    """A line break inside a value would make one person two rows (and the max_ids bound a lie)."""
    frame = pd.DataFrame(
        {
            "note": pd.array(["one\ntwo", "a,b", None, "x\r\ny"], dtype="string"),
            "flag": pd.array([True, False, None, True], dtype="boolean"),
            "n": pd.array([1, None, 3, 4], dtype="Int64"),
        }
    )
    text = dataset_csv(frame)
    assert text.split("\n") == ["one two,true,1", "a b,false,", ",,3", "x  y,true,4", ""]
    count = dp.t.make_split_dataframe(separator=",", col_names=["note", "flag", "n"])
    count = count >> dp.t.make_select_column(key="flag", TOA=str) >> dp.t.then_count()
    assert count(text) == len(frame)
