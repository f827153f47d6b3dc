"""OpenDP polars (Context API) queries over HTTP: results, costs, charges, hostile plans."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import opendp.prelude as dp
import polars as pl
import pytest

from conftest import LiveServer, start_server, stop_server
from lomas.client import Client, ExternalLibraryError, InvalidQueryError

IRIS_SCHEMA = {
    "sepal_length": pl.Float64,
    "sepal_width": pl.Float64,
    "petal_length": pl.Float64,
    "petal_width": pl.Float64,
    "species": pl.String,
}
PENGUIN_SPECIES = {"Adelie": 152, "Chinstrap": 68, "Gentoo": 124}
OPENDP_VERSION = importlib.metadata.version("opendp")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    dp.enable_features("contrib")  # the client's Context API needs it; the server sets its own from settings
    live = start_server(tmp_path_factory.mktemp("opendp-polars"), "--demo")
    yield live
    stop_server(live)


def _spent(client: Client) -> tuple[float, float]:
    spent = client.get_total_spent_budget()
    return spent.total_spent_epsilon, spent.total_spent_delta


def _serialize(plan: pl.LazyFrame) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # polars calls its JSON plan format deprecated
        return plan.serialize(format="json")


# -- what researchers see ------------------------------------------------------------------------------
def test_query_is_private_and_charged_exactly_its_cost(server: LiveServer) -> None:
    client = Client(server.url, "Dr. Antartica", "PENGUIN")
    context = client.opendp.polars.context(privacy_loss=dp.loss_of(epsilon=1.0), split_evenly_over=2)
    query = (
        context.query()
        .group_by("species")
        .agg(pl.len().dp.noise(), pl.col("body_mass_g").fill_null(4200.0).dp.mean((2000.0, 7000.0)))
    )
    cost = client.opendp.polars.cost(query)
    assert cost.epsilon == pytest.approx(0.5) and cost.epsilon <= 0.5 and cost.delta == 0.0
    assert _spent(client) == (0.0, 0.0)  # pricing reads no data and spends nothing

    result = client.opendp.polars.query(query)

    assert isinstance(result.df, pl.DataFrame)
    counts = dict(zip(result.df["species"], result.df["len"]))
    assert counts.keys() == PENGUIN_SPECIES.keys()  # public categories: every species, no threshold
    for species, true_count in PENGUIN_SPECIES.items():
        assert (
            abs(counts[species] - true_count) < 60
        )  # epsilon 0.5 shared by 3 statistics: noise scale about 6
    assert result.df["body_mass_g"].dtype == pl.Float64  # noisy means: a sum with noise of scale 42000
    assert (result.epsilon, result.delta, result.requested_by) == (cost.epsilon, cost.delta, "Dr. Antartica")
    assert _spent(client) == (cost.epsilon, cost.delta)
    [entry] = client.get_previous_queries()
    assert entry.client_input["pipeline_type"] == "polars"
    assert entry.client_input["privacy_loss"] == {"epsilon": 0.5, "delta": None, "rho": None}
    assert entry.response["result"]["df"]["columns"] == ["species", "len", "body_mass_g"]


def test_dummy_query_is_free_and_runs_on_dummy_rows(server: LiveServer) -> None:
    client = Client(server.url, "Milou", "IRIS")
    context = client.opendp.polars.context(privacy_loss=dp.loss_of(epsilon=5.0), split_evenly_over=1)
    query = context.query().select(dp.len())
    result = client.opendp.polars.query(query, dummy=True, nb_rows=2_000, seed=4)
    assert abs(result.df["len"][0] - 2_000) < 20
    assert result.epsilon == pytest.approx(5.0)  # what the real query would cost...
    assert _spent(client) == (0.0, 0.0)  # ...but a dummy query costs nothing
    assert client.get_previous_queries() == []


def test_private_categories_need_delta_and_are_thresholded(server: LiveServer) -> None:
    """PATIENTS keeps its categories private (censor_dims): grouping needs a threshold, hence delta."""
    client = Client(server.url, "BirthdayGirl", "PATIENTS")
    pure = client.opendp.polars.context(privacy_loss=dp.loss_of(epsilon=1.0), split_evenly_over=1)
    with pytest.raises(ExternalLibraryError, match="key-set of .*department.* is private"):
        client.opendp.polars.query(pure.query().group_by("department").agg(dp.len()))
    assert _spent(client) == (0.0, 0.0)

    approximate = client.opendp.polars.context(
        privacy_loss=dp.loss_of(epsilon=1.0, delta=1e-6), split_evenly_over=1
    )
    query = approximate.query().group_by("department").agg(dp.len())
    cost = client.opendp.polars.cost(query)
    assert 0.0 < cost.delta <= 1e-6 and cost.epsilon == pytest.approx(1.0)
    result = client.opendp.polars.query(query)
    assert set(result.df["department"]) <= {"cardiology", "emergency", "neurology", "oncology", "orthopedics"}
    assert _spent(client) == (cost.epsilon, cost.delta)


def test_combinations_of_public_categories_are_private(server: LiveServer) -> None:
    """PENGUIN declares each column's categories public, not which (species, island) pairs occur."""
    client = Client(server.url, "Dr. Antartica", "PENGUIN")
    pure = client.opendp.polars.context(privacy_loss=dp.loss_of(epsilon=1.0), split_evenly_over=1)
    before = _spent(client)
    with pytest.raises(ExternalLibraryError, match="key-set of .*island.* is private"):
        client.opendp.polars.query(pure.query().group_by(["species", "island"]).agg(dp.len()))
    assert _spent(client) == before
    assert client.opendp.polars.cost(pure.query().group_by("species").agg(dp.len())).delta == 0


def test_rho_is_charged_as_epsilon_at_fixed_delta(server: LiveServer) -> None:
    client = Client(server.url, "Dr. House", "PATIENTS")
    context = client.opendp.polars.context(privacy_loss=dp.loss_of(rho=0.05), split_evenly_over=1)
    query = context.query().select(pl.col("age").dp.sum((0, 110)))
    with pytest.raises(InvalidQueryError, match="fixed_delta is required"):
        client.opendp.polars.cost(query)
    cost = client.opendp.polars.cost(query, fixed_delta=1e-6)
    assert cost.delta == 1e-6 and 1.0 < cost.epsilon < 2.0  # rho 0.05 is about epsilon 1.47 at delta 1e-6


def test_failure_after_reading_private_data_is_charged_and_generic(server: LiveServer) -> None:
    client = Client(server.url, "Tintin", "PENGUIN")
    context = client.opendp.polars.context(privacy_loss=dp.loss_of(epsilon=1.0), split_evenly_over=2)
    # OpenDP accepts the plan; polars only refuses the duplicate breaks when it runs.
    query = (
        context.query().with_columns(pl.col("body_mass_g").cut([3000.0, 3000.0]).alias("c")).select(dp.len())
    )
    with pytest.raises(
        ExternalLibraryError, match="breaks are not unique"
    ):  # dummy data: the library's words
        client.opendp.polars.query(query, dummy=True)
    before = _spent(client)
    with pytest.raises(ExternalLibraryError) as failure:
        client.opendp.polars.query(query)
    assert "breaks" not in failure.value.message and "charged" in failure.value.message
    cost = client.opendp.polars.cost(query)
    assert _spent(client) == (before[0] + cost.epsilon, before[1] + cost.delta)
    assert client.get_previous_queries()[-1].response == {"error": failure.value.message}


# -- hostile plans, sent raw ---------------------------------------------------------------------------
@dataclass
class TouchFile:
    """Creates `path` when called and when unpickled: a server that runs or unpickles it leaves a trace."""

    path: Path

    def __call__(self, value: Any) -> Any:
        self.path.touch()
        return value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def _iris() -> pl.LazyFrame:
    """The empty frame the Context API starts IRIS queries from."""
    return pl.LazyFrame(schema=IRIS_SCHEMA)


def _one_iris_row() -> pl.LazyFrame:
    """The dataset's schema, with a row of the client's instead of the private data."""
    row = {
        "sepal_length": [5.0],
        "sepal_width": [3.0],
        "petal_length": [1.0],
        "petal_width": [0.2],
        "species": ["a"],
    }
    return pl.LazyFrame(row, schema=IRIS_SCHEMA)


def _body(opendp_json: str, **fields: Any) -> dict[str, Any]:
    return {
        "dataset_name": "IRIS",
        "opendp_json": opendp_json,
        "pipeline_type": "polars",
        "privacy_loss": {"epsilon": 1.0},
        "polars_version": pl.__version__,
        "opendp_version": OPENDP_VERSION,
        **fields,
    }


def _with_plugin(symbol: str, lib: str) -> str:
    """A legitimate sum whose OpenDP plugin node is rewritten to another symbol or library."""
    plan = json.loads(_serialize(_iris().select(pl.col("petal_width").dp.sum((0.0, 3.0)))))
    plugin = plan["Select"]["expr"][0]["Function"]["function"]["FfiPlugin"]
    plugin.update(symbol=symbol, lib=lib)
    return json.dumps(plan)


def _deep() -> str:
    plan = _iris()
    for _ in range(100):
        plan = plan.with_columns(pl.col("petal_width") + 1.0)
    return _serialize(plan.select(dp.len()))


def _function_as_data_type(marker: Path, where: str) -> str:
    """A pickled function hidden in a data type given as an expression (`OfExpr`), where the checker sees
    plain data: in a cast, or in `str.json_decode`. Polars unpickles it while reading the plan."""
    carrier = json.loads(_serialize(_iris().select(pl.struct(pl.first()).name.map_fields(TouchFile(marker)))))
    dtype = {"OfExpr": carrier["Select"]["expr"][0]}
    column = {"Column": "species"}
    expression = (
        {"Cast": {"expr": column, "dtype": dtype, "options": "NonStrict"}}
        if where == "cast"
        else {
            "Function": {
                "input": [column],
                "function": {"StringExpr": {"JsonDecode": {"dtype": dtype, "infer_schema_len": 100}}},
            }
        }
    )
    carrier["Select"]["expr"] = [expression]
    return json.dumps(carrier)


UDF_PLANS: dict[str, Callable[[Path], str]] = {
    "function_in_cast_dtype": lambda marker: _function_as_data_type(marker, "cast"),
    "function_in_json_decode_dtype": lambda marker: _function_as_data_type(marker, "json_decode"),
    "map_elements": lambda marker: _serialize(
        _iris().select(
            pl.col("petal_width").map_elements(TouchFile(marker), return_dtype=pl.Float64).dp.sum((0.0, 3.0))
        )
    ),
    "map_batches": lambda marker: _serialize(
        _iris().select(
            pl.col("petal_width").map_batches(TouchFile(marker), return_dtype=pl.Float64).dp.sum((0.0, 3.0))
        )
    ),
    "lazyframe_map_batches": lambda marker: _serialize(
        _iris().map_batches(TouchFile(marker)).select(dp.len())
    ),
    "name_map": lambda marker: _serialize(_iris().select(pl.col("petal_width").name.map(TouchFile(marker)))),
}

OTHER_PLANS: dict[str, tuple[Callable[[Path], dict[str, Any]], str]] = {
    "scan_csv": (lambda _: _body(_serialize(pl.scan_csv("/etc/passwd").select(dp.len()))), "reads files"),
    "scan_parquet": (
        lambda tmp: _body(_serialize(pl.scan_parquet(str(tmp / "private.parquet")).select(dp.len()))),
        "reads files",
    ),
    "embedded_rows": (lambda _: _body(_serialize(_one_iris_row().select(dp.len()))), "holds rows of its own"),
    "other_schema": (
        lambda _: _body(_serialize(pl.LazyFrame({"a": [1, 2]}).select(dp.len()))),
        "columns and types",
    ),
    "join": (
        lambda _: _body(
            _serialize(_iris().join(pl.LazyFrame({"species": ["setosa"]}), on="species").select(dp.len()))
        ),
        "combines the dataset with other data",
    ),
    "union": (
        lambda _: _body(_serialize(pl.concat([_iris(), _iris()]).select(dp.len()))),
        "combines the dataset",
    ),
    "foreign_plugin": (
        lambda tmp: _body(_with_plugin("evil", str(tmp / "evil.so"))),
        "Only OpenDP's own polars plugins",
    ),
    "deep_plan": (lambda _: _body(_deep()), "the limits are 128 levels"),
    "wide_plan": (
        lambda _: _body(
            _serialize(_iris().select([pl.col("petal_width").alias(f"c{i}") for i in range(2_000)]))
        ),
        "5000 nodes",
    ),
    "long_plan": (lambda _: _body(" " * 1_000_001), "the limit is 1000000"),
    "garbage": (lambda _: _body("\x00\x01garbage{{"), "not a JSON polars plan"),
    "json_not_a_plan": (lambda _: _body('{"Scan": {"sources": "/etc/shadow"}}'), "reads files"),
    "wrong_polars_version": (
        lambda _: _body(_serialize(_iris().select(dp.len())), polars_version="1.31.0"),
        f"polars 1.31.0 and opendp {OPENDP_VERSION}; this server runs polars {pl.__version__}",
    ),
    "no_privacy_loss": (
        lambda _: _body(_serialize(_iris().select(dp.len())), privacy_loss=None),
        "privacy_loss is required",
    ),
}


def _post_everywhere(server: LiveServer, body: dict[str, Any]) -> list[httpx.Response]:
    """The plan sent as a query, a dummy query and a cost estimate."""
    return [
        httpx.post(f"{server.url}/{endpoint}", headers={"user-name": "Tintin"}, json=body, timeout=60)
        for endpoint in ("opendp_query", "dummy_opendp_query", "estimate_opendp_cost")
    ]


def _assert_refused_and_free(server: LiveServer, body: dict[str, Any], message: str) -> None:
    client = Client(server.url, "Tintin", "IRIS")
    before, history = _spent(client), len(client.get_previous_queries())
    for response in _post_everywhere(server, body):
        assert response.status_code == 400, response.text
        assert response.json()["type"] == "InvalidQueryException"
        assert message in response.json()["message"]
    assert _spent(client) == before
    assert len(client.get_previous_queries()) == history


def test_the_raw_request_of_the_hostile_tests_is_accepted_when_the_plan_is_fine(server: LiveServer) -> None:
    body = _body(_serialize(_iris().select(pl.col("petal_width").dp.sum((0.0, 3.0)))))
    responses = _post_everywhere(server, body)
    assert [response.status_code for response in responses] == [200, 200, 200]
    assert responses[0].json()["result"]["res_type"] == "opendp_polars"


@pytest.mark.parametrize("name", UDF_PLANS)
def test_python_functions_are_refused_before_polars_sees_them(
    server: LiveServer, tmp_path: Path, name: str
) -> None:
    make_plan = UDF_PLANS[name]
    # The trap works: polars itself unpickles and runs the function as soon as the plan is resolved.
    local = tmp_path / "ran-locally"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = pl.LazyFrame.deserialize(io.StringIO(make_plan(local)), format="json")
    with contextlib.suppress(Exception):  # the unpickled stand-in is no function; polars may then complain
        plan.collect_schema()
    assert local.exists()

    marker = tmp_path / "ran-on-server"
    _assert_refused_and_free(server, _body(make_plan(marker)), "Python function")
    assert not marker.exists()


@pytest.mark.parametrize("name", OTHER_PLANS)
def test_other_sources_plugins_and_absurd_plans_are_refused(
    server: LiveServer, tmp_path: Path, name: str
) -> None:
    make_body, message = OTHER_PLANS[name]
    _assert_refused_and_free(server, make_body(tmp_path), message)


def test_plugin_library_is_always_the_servers(server: LiveServer) -> None:
    """A known OpenDP plugin naming another library runs with the server's OpenDP library instead."""
    body = _body(_with_plugin("dp_sum", "/nonexistent/evil.so"), dummy_nb_rows=50)
    response = httpx.post(
        f"{server.url}/dummy_opendp_query", headers={"user-name": "Tintin"}, json=body, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"]["df"]["columns"] == ["petal_width"]


def test_a_plan_that_makes_polars_panic_is_refused_and_the_server_lives_on(server: LiveServer) -> None:
    plan = json.loads(_serialize(_iris().filter(pl.col("species").is_in(["x", "y"])).select(dp.len())))
    literal = plan["Select"]["input"]["Filter"]["predicate"]["Function"]["input"][1]["Literal"]["Scalar"]
    literal["List"][250] = 255  # corrupts the Arrow IPC bytes of the list ["x", "y"]
    corrupt = json.dumps(plan)
    with warnings.catch_warnings(), pytest.raises(pl.exceptions.PanicException):
        warnings.simplefilter("ignore")
        pl.LazyFrame.deserialize(io.StringIO(corrupt), format="json")
    _assert_refused_and_free(server, _body(corrupt), "is not a valid polars")
