"""The published lomas-client 0.4.1 (PyPI), in its own virtual environment, works against our server.

Nobody here wrote that client: it is the researcher's view of the 0.4 wire protocol. The environment is
built by tests/compat/build_venv.py (about a minute the first time, reused afterwards), the client runs
tests/compat/client_scenario.py as "Dr. Antartica" on PENGUIN against a demo server of this module's
own, and the tests below check what the researcher saw, against the server's own answers where the
protocol matters. If the environment cannot be built, every test fails with pip's output.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from conftest import LiveServer, start_server, stop_server

pytestmark = [pytest.mark.compat, pytest.mark.timeout(1800)]

COMPAT_DIR = Path(__file__).resolve().parent / "compat"
SCENARIO_TIMEOUT_S = 600


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


build_venv = _load("lomas_compat_build_venv", COMPAT_DIR / "build_venv.py")
# The scenario's constants (queries, users, epsilons); its top level imports only the standard library.
sc = _load("lomas_compat_client_scenario", COMPAT_DIR / "client_scenario.py")


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def compat_python() -> Path:
    """Python of the lomas-client 0.4.1 environment; a build failure fails the tests with pip's output."""
    try:
        return build_venv.ensure_compat_venv(echo=False)
    except build_venv.CompatVenvError as error:
        pytest.fail(f"could not build the lomas-client 0.4.1 environment:\n{error}", pytrace=False)


@pytest.fixture(scope="module")
def compat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A fresh demo server (open mode) of this module's own: the scenario counts every budget it spends."""
    server = start_server(tmp_path_factory.mktemp("compat-server"), "--demo")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def report(compat_python: Path, compat_server: LiveServer) -> dict[str, Any]:
    """Run the scenario once with the 0.4.1 client; its JSON report of what the researcher observed."""
    return run_scenario(compat_python, compat_server, "client_scenario.py")


@pytest.fixture(scope="module")
def library_report(compat_python: Path, compat_server: LiveServer) -> dict[str, Any]:
    """The OpenDP, DiffPrivLib and SmartNoise-Synth scenario (another user, so budgets stay apart)."""
    return run_scenario(compat_python, compat_server, "libraries_scenario.py")


def run_scenario(compat_python: Path, compat_server: LiveServer, script: str) -> dict[str, Any]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LOMAS_", "PYTHON")) and key != "VIRTUAL_ENV"
    }
    # No OpenTelemetry collector here: without this the client's exporters retry for minutes at exit.
    env["OTEL_SDK_DISABLED"] = "true"
    command = [str(compat_python), str(COMPAT_DIR / script), compat_server.url]
    try:
        done = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=SCENARIO_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(
            f"the scenario did not finish in {SCENARIO_TIMEOUT_S}s\n"
            f"stdout:\n{error.stdout}\nstderr:\n{error.stderr}\nserver log:\n{compat_server.log()[-5000:]}",
            pytrace=False,
        )
    try:
        result = json.loads(done.stdout)
    except ValueError:
        result = None
    if done.returncode != 0 or not isinstance(result, dict):
        pytest.fail(
            f"the scenario failed (exit code {done.returncode})\nstdout:\n{done.stdout[-5000:]}\n"
            f"stderr:\n{done.stderr[-5000:]}\nserver log:\n{compat_server.log()[-5000:]}",
            pytrace=False,
        )
    if "scenario" in result["steps"]:
        pytest.fail(f"the scenario crashed:\n{result['steps']['scenario']['traceback']}", pytrace=False)
    return result


def observed(report: dict[str, Any], step: str) -> Any:
    """What the researcher saw at one step; fails with the client's traceback if the client raised."""
    entry = report["steps"].get(step)
    assert entry is not None, f"the scenario has no step {step!r}"
    if not entry["ok"]:
        pytest.fail(
            f"step {step!r}: lomas-client 0.4.1 raised {entry['exception']}: {entry['message']}\n"
            f"{entry['traceback']}",
            pytrace=False,
        )
    return entry["value"]


def server_post(server: LiveServer, path: str, body: dict[str, Any], user: str = sc.USER) -> httpx.Response:
    """The server's own answer to a 0.4 request, without the client in between."""
    return httpx.post(f"{server.url}/{path}", json=body, headers={"user-name": user}, timeout=60)


def fields(described: dict[str, Any], type_name: str) -> dict[str, Any]:
    assert described["type"] == f"lomas_core.models.responses.{type_name}"
    return described["fields"]


def frame_cell(described_frame: dict[str, Any], row: int, column: str) -> Any:
    tight = described_frame["tight"]
    return tight["data"][row][tight["columns"].index(column)]


# --- the client itself ------------------------------------------------------------------------------------


def test_the_client_is_the_published_041_in_its_own_environment(
    report: dict[str, Any], compat_python: Path
) -> None:
    venv = compat_python.parent.parent
    client_module = Path(observed(report, "client_module"))
    assert client_module.is_relative_to(venv), client_module
    installed = {
        line.lower().replace("_", "-") for line in (venv / "pip-freeze.txt").read_text().splitlines()
    }
    assert {"lomas-client==0.4.1", "lomas-core==0.4.1"} <= installed
    assert observed(report, "client") is not None


# --- discovering the dataset ------------------------------------------------------------------------------


def test_metadata_is_what_the_server_endpoint_returns(
    report: dict[str, Any], compat_server: LiveServer
) -> None:
    metadata = observed(report, "metadata")
    direct = server_post(compat_server, "get_dataset_metadata", {"dataset_name": sc.DATASET})
    assert direct.status_code == 200, direct.text
    assert metadata["type"] == "builtins.dict"
    assert metadata["value"] == direct.json()
    assert metadata["value"]["rows"] == 344


def _assert_frame_follows_metadata(
    frame: dict[str, Any], metadata: dict[str, Any], server_dtypes: dict[str, str]
):
    columns = metadata["columns"]
    assert frame["type"] == "pandas.core.frame.DataFrame"
    assert frame["columns"] == list(columns)
    # The client applies the dtypes the server declares; they must follow the metadata types.
    assert frame["dtypes"] == server_dtypes
    for name, column in columns.items():
        dtype = frame["dtypes"][name].lower()
        expected = {
            "string": ("string", "object"),
            "int": ("int", "uint"),
            "float": ("float",),
            "boolean": ("bool",),
            "datetime": ("datetime64",),
        }[column["type"]]
        assert dtype.startswith(expected), (name, column["type"], dtype)
        if not column.get("nullable", False):
            assert frame["null_counts"][name] == 0, name
    tight = frame["tight"]
    for index, name in enumerate(tight["columns"]):
        column = columns[name]
        values = [row[index] for row in tight["data"] if row[index] is not None]
        if "categories" in column:
            assert set(values) <= set(column["categories"]), name
        elif column["type"] in ("int", "float") and "lower" in column:
            assert all(column["lower"] <= value <= column["upper"] for value in values), name


def test_dummy_dataset_is_a_dataframe_with_the_penguin_schema(
    report: dict[str, Any], compat_server: LiveServer
) -> None:
    metadata = observed(report, "metadata")["value"]
    direct = server_post(
        compat_server,
        "get_dummy_dataset",
        {"dataset_name": sc.DATASET, "dummy_nb_rows": sc.DUMMY_ROWS, "dummy_seed": sc.DUMMY_SEED},
    )
    assert direct.status_code == 200, direct.text
    frame = observed(report, "dummy_dataset")
    assert frame["shape"] == [sc.DUMMY_ROWS, len(metadata["columns"])]
    _assert_frame_follows_metadata(frame, metadata, direct.json()["dtypes"])
    assert observed(report, "dummy_dataset_same_seed_is_equal") is True
    default = observed(report, "dummy_dataset_default_arguments")
    assert default["shape"] == [100, len(metadata["columns"])]  # the client's DUMMY_NB_ROWS
    assert default["dtypes"] == frame["dtypes"]


def test_dummy_dataset_with_datetime_and_boolean_columns(
    report: dict[str, Any], compat_server: LiveServer
) -> None:
    """Extra: PATIENTS (as Dr. House) has datetime, boolean and 32-bit columns the client must type."""
    metadata_response = server_post(
        compat_server, "get_dataset_metadata", {"dataset_name": sc.DATETIME_DATASET}, user=sc.DATETIME_USER
    )
    direct = server_post(
        compat_server,
        "get_dummy_dataset",
        {"dataset_name": sc.DATETIME_DATASET, "dummy_nb_rows": sc.DUMMY_ROWS, "dummy_seed": sc.DUMMY_SEED},
        user=sc.DATETIME_USER,
    )
    assert metadata_response.status_code == 200 and direct.status_code == 200, (
        metadata_response.text,
        direct.text,
    )
    frame = observed(report, "datetime_dummy_dataset")
    metadata = metadata_response.json()
    assert frame["shape"] == [sc.DUMMY_ROWS, len(metadata["columns"])]
    _assert_frame_follows_metadata(frame, metadata, direct.json()["dtypes"])
    assert any(column["type"] == "datetime" for column in metadata["columns"].values())


# --- spending ---------------------------------------------------------------------------------------------


def test_budgets_before_any_query(report: dict[str, Any]) -> None:
    before = observed(report, "budgets_before")
    assert fields(before["initial"], "InitialBudgetResponse") == {
        "initial_epsilon": 10.0,
        "initial_delta": 0.005,
    }
    assert fields(before["spent"], "SpentBudgetResponse") == {
        "total_spent_epsilon": 0.0,
        "total_spent_delta": 0.0,
    }
    assert fields(before["remaining"], "RemainingBudgetResponse") == {
        "remaining_epsilon": 10.0,
        "remaining_delta": 0.005,
    }
    assert observed(report, "previous_queries_before") == []


def test_dummy_queries_work_and_cost_nothing(report: dict[str, Any]) -> None:
    dummy = observed(report, "dummy_query")
    outcome = dummy["outcome"]
    assert outcome["type"] == "lomas_core.models.responses.QueryResponse"
    assert outcome["res_type"] == "smartnoise_sql"
    assert outcome["requested_by"] == sc.USER
    assert outcome["df"]["type"] == "pandas.core.frame.DataFrame"
    assert outcome["df"]["shape"] == [1, 1]
    assert outcome["df"]["columns"] == ["nb_penguins"]
    assert isinstance(frame_cell(outcome["df"], 0, "nb_penguins"), (int, float))
    assert (
        dummy["spent_after"]
        == dummy["spent_before"]
        == {"total_spent_epsilon": 0.0, "total_spent_delta": 0.0}
    )
    assert dummy["previous_queries_after"] == dummy["previous_queries_before"] == 0

    grouped = observed(report, "dummy_group_query")
    assert grouped["df"]["columns"] == ["species", "avg_bill_length_mm"]
    assert 1 <= grouped["df"]["shape"][0] <= 3


def test_cost_estimate_equals_the_cost_charged(report: dict[str, Any]) -> None:
    for cost_step, query_step, epsilon in [
        ("count_cost", "count_query", sc.COUNT_EPSILON),
        ("group_cost", "group_query", sc.GROUP_EPSILON),
    ]:
        cost = fields(observed(report, cost_step), "CostResponse")
        query = observed(report, query_step)
        assert query["type"] == "lomas_core.models.responses.QueryResponse"
        assert (query["epsilon"], query["delta"]) == (cost["epsilon"], cost["delta"]), query_step
        assert cost["epsilon"] >= epsilon and cost["delta"] >= 0


def test_count_query_returns_a_plausible_dataframe(report: dict[str, Any]) -> None:
    query = observed(report, "count_query")
    assert query["requested_by"] == sc.USER
    assert query["result_type"] == "lomas_core.models.responses.SmartnoiseSQLQueryResult"
    assert query["res_type"] == "smartnoise_sql"
    frame = query["df"]
    assert frame["type"] == "pandas.core.frame.DataFrame"
    assert frame["shape"] == [1, 1]
    assert frame["columns"] == ["nb_penguins"]
    assert 250 <= frame_cell(frame, 0, "nb_penguins") <= 450  # 344 penguins, epsilon 1


def test_grouped_query_returns_a_dataframe_per_species(report: dict[str, Any]) -> None:
    frame = observed(report, "group_query")["df"]
    assert frame["type"] == "pandas.core.frame.DataFrame"
    assert frame["columns"] == ["species", "avg_bill_length_mm"]
    species = [frame_cell(frame, row, "species") for row in range(frame["shape"][0])]
    assert set(species) <= {"Adelie", "Chinstrap", "Gentoo"} and len(species) >= 1
    for row in range(frame["shape"][0]):
        assert 30.0 <= frame_cell(frame, row, "avg_bill_length_mm") <= 65.0  # clamped to the metadata bounds


def test_spent_and_remaining_budgets_add_up(report: dict[str, Any]) -> None:
    count, group = observed(report, "count_query"), observed(report, "group_query")
    after_count = observed(report, "budgets_after_count")
    assert fields(after_count["spent"], "SpentBudgetResponse") == pytest.approx(
        {"total_spent_epsilon": count["epsilon"], "total_spent_delta": count["delta"]}
    )
    after = observed(report, "budgets_after")
    initial = fields(after["initial"], "InitialBudgetResponse")
    spent = fields(after["spent"], "SpentBudgetResponse")
    remaining = fields(after["remaining"], "RemainingBudgetResponse")
    assert initial == {"initial_epsilon": 10.0, "initial_delta": 0.005}
    # Only the two real queries were charged: no dummy query, no invalid or over-budget query.
    assert spent == pytest.approx(
        {
            "total_spent_epsilon": count["epsilon"] + group["epsilon"],
            "total_spent_delta": count["delta"] + group["delta"],
        }
    )
    assert remaining == pytest.approx(
        {
            "remaining_epsilon": initial["initial_epsilon"] - spent["total_spent_epsilon"],
            "remaining_delta": initial["initial_delta"] - spent["total_spent_delta"],
        }
    )


def test_previous_queries_list_exactly_the_real_queries(report: dict[str, Any]) -> None:
    previous = observed(report, "previous_queries_after")
    made = [
        (sc.COUNT_QUERY, sc.COUNT_EPSILON, sc.COUNT_DELTA, observed(report, "count_query")),
        (sc.GROUP_QUERY, sc.GROUP_EPSILON, sc.GROUP_DELTA, observed(report, "group_query")),
    ]
    assert [entry["client_input"]["query_str"] for entry in previous] == [query for query, *_ in made]
    for entry, (query_str, epsilon, delta, response) in zip(previous, made):
        assert entry["user_name"] == sc.USER
        assert entry["dataset_name"] == sc.DATASET
        assert entry["dp_librairy"] == "smartnoise_sql"
        assert entry["client_input"]["epsilon"] == epsilon
        assert entry["client_input"]["delta"] == delta
        assert entry["response"]["epsilon"] == response["epsilon"]
        assert entry["response"]["delta"] == response["delta"]
        assert entry["response"]["requested_by"] == sc.USER
        assert entry["response"]["result"]["res_type"] == "smartnoise_sql"
        # The archive holds the very answer the researcher received.
        assert entry["response"]["result"]["df"]["data"] == response["df"]["tight"]["data"]
        assert isinstance(entry["timestamp"], (int, float)) and math.isfinite(entry["timestamp"])
    assert previous[0]["timestamp"] <= previous[1]["timestamp"]


# --- errors -----------------------------------------------------------------------------------------------

_SQL = {"mechanisms": {}, "postprocess": True}
ERROR_CASES = [
    # (scenario step, exception the client must raise, status, the same request sent directly)
    (
        "unknown_user_metadata",
        "UnauthorizedAccessException",
        403,
        ("get_dataset_metadata", sc.UNKNOWN_USER, {"dataset_name": sc.DATASET}),
    ),
    (
        "unknown_user_remaining_budget",
        "UnauthorizedAccessException",
        403,
        ("get_remaining_budget", sc.UNKNOWN_USER, {"dataset_name": sc.DATASET}),
    ),
    (
        "unknown_user_query",
        "UnauthorizedAccessException",
        403,
        (
            "smartnoise_sql_query",
            sc.UNKNOWN_USER,
            {"dataset_name": sc.DATASET, "query_str": sc.COUNT_QUERY, "epsilon": 1.0, "delta": 1e-5, **_SQL},
        ),
    ),
    (
        "ungranted_dataset_metadata",
        "UnauthorizedAccessException",
        403,
        ("get_dataset_metadata", sc.USER, {"dataset_name": sc.UNGRANTED_DATASET}),
    ),
    (
        "ungranted_dataset_dummy",
        "UnauthorizedAccessException",
        403,
        (
            "get_dummy_dataset",
            sc.USER,
            {"dataset_name": sc.UNGRANTED_DATASET, "dummy_nb_rows": 5, "dummy_seed": 42},
        ),
    ),
    (
        "ungranted_dataset_initial_budget",
        "UnauthorizedAccessException",
        403,
        ("get_initial_budget", sc.USER, {"dataset_name": sc.UNGRANTED_DATASET}),
    ),
    (
        "ungranted_dataset_query",
        "UnauthorizedAccessException",
        403,
        (
            "smartnoise_sql_query",
            sc.USER,
            {
                "dataset_name": sc.UNGRANTED_DATASET,
                "query_str": "SELECT COUNT(*) AS n FROM df",
                "epsilon": 1.0,
                "delta": 1e-5,
                **_SQL,
            },
        ),
    ),
    (
        "invalid_query",
        "InvalidQueryException",
        400,
        (
            "smartnoise_sql_query",
            sc.USER,
            {
                "dataset_name": sc.DATASET,
                "query_str": sc.INVALID_QUERY,
                "epsilon": 1.0,
                "delta": 1e-5,
                **_SQL,
            },
        ),
    ),
    (
        "invalid_query_cost",
        "InvalidQueryException",
        400,
        (
            "estimate_smartnoise_sql_cost",
            sc.USER,
            {
                "dataset_name": sc.DATASET,
                "query_str": sc.INVALID_QUERY,
                "epsilon": 1.0,
                "delta": 1e-5,
                "mechanisms": {},
            },
        ),
    ),
    (
        "invalid_dummy_query",
        "InvalidQueryException",
        400,
        (
            "dummy_smartnoise_sql_query",
            sc.USER,
            {
                "dataset_name": sc.DATASET,
                "query_str": sc.INVALID_QUERY,
                "epsilon": 1.0,
                "delta": 1e-5,
                "dummy_nb_rows": 100,
                "dummy_seed": 42,
                **_SQL,
            },
        ),
    ),
    (
        "over_budget_query",
        "InvalidQueryException",
        400,
        (
            "smartnoise_sql_query",
            sc.USER,
            {
                "dataset_name": sc.DATASET,
                "query_str": sc.COUNT_QUERY,
                "epsilon": sc.OVER_BUDGET_EPSILON,
                "delta": 1e-5,
                **_SQL,
            },
        ),
    ),
]


@pytest.mark.parametrize(
    ("step", "expected", "status", "request_"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
def test_errors_reach_the_041_client_as_its_known_decoding_failure(
    report: dict[str, Any],
    compat_server: LiveServer,
    step: str,
    expected: str,
    status: int,
    request_: tuple[str, str, dict[str, Any]],
) -> None:
    # The server's side, without the client: the 0.4 error body {"type", "message"} with its status.
    # (Sent after the scenario ran: none of these requests can charge anything.)
    path, user, body = request_
    direct = server_post(compat_server, path, body, user=user)
    assert direct.status_code == status, direct.text
    assert direct.json()["type"] == expected, direct.text
    assert isinstance(direct.json()["message"], str) and direct.json()["message"]

    # The researcher's side. lomas-client 0.4.1 cannot decode any error body: utils.raise_error()
    # hands the already decoded dict to TypeAdapter.validate_json(), which takes only str or bytes.
    # lomas-server 0.4.1 sends the same bodies as we do (DESIGN.md section 4) and meets the same
    # failure, so a 0.4.1 user sees pydantic's ValidationError instead of the Lomas exception. Our own
    # client raises the typed exceptions (tests/test_smartnoise_sql.py). If this ever changes, look again.
    value = observed(report, step)
    raised = value.get("outcome", value)
    assert raised.get("raised") == "ValidationError", raised
    assert "JSON input should be string" in raised["message"], raised


def test_rejected_queries_charge_nothing(report: dict[str, Any]) -> None:
    remaining = fields(observed(report, "budgets_after")["remaining"], "RemainingBudgetResponse")
    over_cost = fields(observed(report, "over_budget_cost"), "CostResponse")
    assert over_cost["epsilon"] > remaining["remaining_epsilon"]  # the query was indeed over budget
    for step in ("invalid_query", "over_budget_query"):
        value = observed(report, step)
        assert value["outcome"]["raised"] is not None, (step, value["outcome"])
        assert value["spent_after"] == value["spent_before"], step
        assert value["previous_queries_after"] == value["previous_queries_before"] == 2, step


# --- OpenDP, DiffPrivLib and SmartNoise-Synth (tests/compat/libraries_scenario.py, as Tintin) ---------------

lib = _load("lomas_compat_libraries_scenario", COMPAT_DIR / "libraries_scenario.py")
PENGUIN_SPECIES = {"Adelie", "Chinstrap", "Gentoo"}


def assert_charged_as_estimated(library_report: dict[str, Any], cost_step: str, query_step: str) -> dict[str, Any]:
    cost = fields(observed(library_report, cost_step), "CostResponse")
    query = observed(library_report, query_step)
    assert query["type"] == "lomas_core.models.responses.QueryResponse"
    assert query["requested_by"] == lib.USER
    assert (query["epsilon"], query["delta"]) == (cost["epsilon"], cost["delta"]), query_step
    return query


def test_opendp_pipelines_of_the_041_client_run_and_cost_what_they_said(library_report: dict[str, Any]) -> None:
    count = assert_charged_as_estimated(library_report, "opendp_count_cost", "opendp_count")
    assert count["result_type"] == "lomas_core.models.responses.OpenDPQueryResult"
    assert count["res_type"] == "opendp"
    assert isinstance(count["value"], int) and 250 <= count["value"] <= 450  # 344 rows, Laplace scale 2
    assert count["delta"] == 0
    dummy = observed(library_report, "opendp_count_dummy")
    assert isinstance(dummy["value"], int) and dummy["epsilon"] == count["epsilon"]

    mean = observed(library_report, "opendp_mean_laplace")
    assert isinstance(mean["value"], float) and 0.0 <= mean["value"] <= 100.0
    gaussian = assert_charged_as_estimated(library_report, "opendp_mean_gaussian_cost", "opendp_mean_gaussian")
    assert gaussian["delta"] == lib.FIXED_DELTA and gaussian["epsilon"] > 0  # zCDP converted at fixed_delta

    spent = fields(observed(library_report, "spent_after_opendp"), "SpentBudgetResponse")
    assert spent["total_spent_epsilon"] == pytest.approx(count["epsilon"] + mean["epsilon"] + gaussian["epsilon"])
    assert spent["total_spent_delta"] == pytest.approx(lib.FIXED_DELTA)


def test_diffprivlib_pipeline_is_fitted_and_unpickled_by_the_041_client(library_report: dict[str, Any]) -> None:
    cost = fields(observed(library_report, "diffprivlib_cost"), "CostResponse")
    assert cost == {"epsilon": 1.5, "delta": 0.0}  # StandardScaler 0.5 + LogisticRegression 1.0
    dummy = observed(library_report, "diffprivlib_dummy")
    assert dummy["res_type"] == "diffprivlib" and dummy["model_type"] == "sklearn.pipeline.Pipeline"

    fitted = assert_charged_as_estimated(library_report, "diffprivlib_cost", "diffprivlib_query")
    assert fitted["result_type"] == "lomas_core.models.responses.DiffPrivLibQueryResult"
    assert fitted["model_type"] == "sklearn.pipeline.Pipeline"
    assert 0.0 <= fitted["score"] <= 1.0
    assert set(fitted["predictions"]) <= PENGUIN_SPECIES and len(fitted["predictions"]) == 3

    before = fields(observed(library_report, "spent_after_opendp"), "SpentBudgetResponse")
    after = fields(observed(library_report, "spent_after_diffprivlib"), "SpentBudgetResponse")
    assert after["total_spent_epsilon"] == pytest.approx(before["total_spent_epsilon"] + 1.5)


def test_smartnoise_synth_samples_and_model_reach_the_041_client(library_report: dict[str, Any]) -> None:
    cost = fields(observed(library_report, "synth_cost"), "CostResponse")
    assert cost["epsilon"] == lib.SYNTH_EPSILON

    for step in ("synth_dummy_samples", "synth_samples"):
        samples = observed(library_report, step)
        assert samples["res_type"] == "sn_synth_samples", step
        frame = samples["df_samples"]
        assert frame["type"] == "pandas.core.frame.DataFrame"
        assert frame["shape"] == [lib.NB_SAMPLES, len(lib.SYNTH_COLUMNS)] and frame["columns"] == lib.SYNTH_COLUMNS
        assert {frame_cell(frame, row, "species") for row in range(lib.NB_SAMPLES)} <= PENGUIN_SPECIES
    assert_charged_as_estimated(library_report, "synth_cost", "synth_samples")

    model = assert_charged_as_estimated(library_report, "synth_cost", "synth_model")
    assert model["res_type"] == "smartnoise_synth"
    assert model["model_type"].startswith("snsynth.")
    assert model["model_samples"]["shape"] == [10, len(lib.SYNTH_COLUMNS)]


def test_library_queries_are_archived_with_their_library(
    library_report: dict[str, Any], compat_server: LiveServer
) -> None:
    # The archive, as the server sends it: one entry per charged query, with its library and response.
    response = server_post(compat_server, "get_previous_queries", {"dataset_name": lib.DATASET}, user=lib.USER)
    history = response.json()["previous_queries"]
    libraries = ["opendp"] * 3 + ["diffprivlib"] + ["smartnoise_synth"] * 2
    assert [entry["dp_librairy"] for entry in history] == libraries
    total = fields(observed(library_report, "spent_after_synth"), "SpentBudgetResponse")
    assert total["total_spent_epsilon"] == pytest.approx(sum(entry["response"]["epsilon"] for entry in history))
    assert history[-1]["response"]["result"]["res_type"] == "smartnoise_synth"

    # The researcher's side. lomas-client 0.4.1's get_previous_queries() base64-decodes
    # response["result"] of a SmartNoise-Synth model entry, but the 0.4 archive holds the whole
    # QueryResponse there ({"res_type", "model"}), as lomas-server 0.4.1 archives it too (its
    # PlainSerializer turns the model into the base64 string inside that dict). So a 0.4.1 user with a
    # synthesizer model in their history meets this TypeError. If this ever changes, look again.
    raised = observed(library_report, "previous_queries")
    assert raised["raised"] == "TypeError", raised
    assert "not 'dict'" in raised["message"], raised
