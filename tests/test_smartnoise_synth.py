"""SmartNoise-Synth through the real HTTP server and our client: samples, models, costs, charges, conditions,
the time limit, and hostile payloads that must be refused before anything runs.

The bodies in fixtures/smartnoise_synth/ were written by the published lomas-client 0.4.1 (its request
models and smartnoise_synth_logger with smartnoise-synth 1.0.4), as it sends them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from snsynth.transform import BinTransformer, ChainTransformer, LabelTransformer, MinMaxTransformer, OneHotEncoder

from conftest import LiveServer, start_server, stop_server
from lomas.client import Client, ExternalLibraryError, InvalidQueryError, SynthModelResult
from lomas.client.results import QueryResult

FIXTURES = Path(__file__).parent / "fixtures" / "smartnoise_synth"
SPECIES = {"Adelie", "Chinstrap", "Gentoo"}
ISLANDS = {"Biscoe", "Dream", "Torgersen"}
CATEGORICAL = ["species", "island", "sex"]
FAST_MWEM = {"iterations": 5}
PENGUIN_ROWS = 344


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("synth-server"), "--demo")
    yield live
    stop_server(live)


def fixture_body(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def spent_and_history(client: Client) -> tuple[tuple[float, float], int]:
    spent = client.get_total_spent_budget()
    return (spent.total_spent_epsilon, spent.total_spent_delta), len(client.get_previous_queries())


def test_samples_are_charged_exactly_their_cost(server: LiveServer) -> None:
    client = Client(server.url, "Dr. Antartica", "PENGUIN")
    cost = client.smartnoise_synth.cost(
        "mwem", 1.0, delta=1e-5, select_cols=CATEGORICAL, synth_params=FAST_MWEM
    )
    assert (cost.epsilon, cost.delta) == (1.0, 0.0)  # mwem spends no delta, whatever was declared
    assert spent_and_history(client) == ((0.0, 0.0), 0)

    result = client.smartnoise_synth.query(
        "mwem", 1.0, delta=1e-5, select_cols=CATEGORICAL, synth_params=FAST_MWEM, nb_samples=50
    )
    assert isinstance(result, QueryResult)
    assert list(result.df.columns) == CATEGORICAL and len(result.df) == 50
    assert set(result.df["species"]) <= SPECIES and set(result.df["island"]) <= ISLANDS
    assert set(result.df["sex"].dropna()) <= {"female", "male"}
    assert (result.epsilon, result.delta) == (cost.epsilon, cost.delta)
    assert spent_and_history(client) == ((cost.epsilon, cost.delta), 1)
    [entry] = client.get_previous_queries()
    assert entry.client_input["synth_name"] == "mwem"
    assert (
        entry.response["result"]["df_samples"]["data"]
        == result.df.astype(object).where(result.df.notna(), None).values.tolist()
    )


def test_cost_follows_the_declared_budget_and_the_metadata(server: LiveServer) -> None:
    client = Client(server.url, "Tintin", "IRIS")
    costs = {
        ("aim", None): client.smartnoise_synth.cost("aim", 0.5),
        ("mst", 1e-6): client.smartnoise_synth.cost("mst", 0.5, delta=1e-6),
        ("dpgan", None): client.smartnoise_synth.cost("dpgan", 2.0),
        ("dpctgan", 1e-7): client.smartnoise_synth.cost(
            "dpctgan", 2.0, 1e-7, synth_params={"batch_size": 50}
        ),
    }
    assert {key: (cost.epsilon, cost.delta) for key, cost in costs.items()} == {
        ("aim", None): (0.5, 1e-9),  # snsynth's default delta
        ("mst", 1e-6): (0.5, 1e-6),
        ("dpgan", None): (2.0, pytest.approx(1 / (150 * math.sqrt(150)))),  # from the metadata's 150 rows
        ("dpctgan", 1e-7): (2.0, 1e-7),
    }
    assert spent_and_history(client) == ((0.0, 0.0), 0)


CTGANS = {  # synthesizer: (its parameters, the attribute that holds its data sampler)
    "dpctgan": ({"epochs": 2, "batch_size": 50, "sigma": 5.0}, "_data_sampler"),
}


def test_patectgan_is_refused_because_it_can_overspend(server: LiveServer) -> None:
    client = Client(server.url, "Tintin", "PENGUIN")
    with pytest.raises(InvalidQueryError, match="patectgan is not supported: .*hundreds of times"):
        client.smartnoise_synth.cost("patectgan", 1.0, 1e-5, select_cols=["species"])
    assert spent_and_history(client) == ((0.0, 0.0), 0)


@pytest.mark.parametrize("synth", list(CTGANS))
def test_dummy_query_is_free_and_returns_a_model_without_the_training_data(
    server: LiveServer, synth: str
) -> None:
    client = Client(server.url, "Tintin", "PENGUIN")
    params, sampler_attribute = CTGANS[synth]
    columns = ["species", "island", "body_mass_g"]
    result = client.smartnoise_synth.query(
        synth, 3.0, select_cols=columns, synth_params=params, dummy=True, nb_rows=300, return_model=True
    )
    assert isinstance(result, SynthModelResult)
    model = result.model
    sampler = getattr(model, sampler_attribute)
    assert np.array_equal(sampler._data, np.eye(*sampler._data.shape))  # a public stand-in for the rows
    assert sampler._rid_by_cat_cols == []
    for column, width in enumerate(sampler._discrete_column_n_category):  # category frequencies made uniform
        assert np.allclose(sampler._discrete_column_category_prob[column, :width], 1 / width)
    assert getattr(model, "epsilon_list", []) == [] and getattr(model, "loss_d_list", []) == []
    assert model._epochs is None  # how many epochs epsilon afforded depends on the private row count
    samples = model.sample(7)
    assert list(samples.columns) == columns and set(samples["species"]) <= SPECIES
    assert spent_and_history(client) == ((0.0, 0.0), 0)


def test_mwem_model_keeps_only_its_normalised_synthetic_histograms(server: LiveServer) -> None:
    client = Client(server.url, "Tintin", "PENGUIN")
    result = client.smartnoise_synth.query(
        "mwem", 1.0, select_cols=["species", "island"], synth_params=FAST_MWEM, dummy=True, return_model=True
    )
    model = result.model
    assert model.data is None and model.histograms == []
    assert [real for _fake, real, _split in model.synthetic_histograms] == [None]
    assert [fake.sum() for fake, _real, _split in model.synthetic_histograms] == [pytest.approx(1.0)]
    assert set(model.sample(20)["species"]) <= SPECIES


def test_mwem_histograms_span_the_public_range_not_the_datas(server: LiveServer) -> None:
    """snsynth's mwem kept the smallest and largest bin the data fills (`mins_maxes`): with narrow bins
    that gave away the data's extremes. The range is now the bins the constraint declares."""
    client = Client(server.url, "Tintin", "PENGUIN")
    result = client.smartnoise_synth.query(
        "mwem",
        1.0,
        select_cols=["species", "body_mass_g"],
        synth_params=FAST_MWEM,
        constraints={"body_mass_g": BinTransformer(lower=2000, upper=7000, bins=100, nullable=True)},
        dummy=True,
        return_model=True,
    )
    ranges = result.model.mins_maxes
    assert ranges["0"] == (0, 2)  # species: three categories
    assert ranges["1"][0] == 0 and ranges["1"][1] >= 99  # every bin (and the null code), whatever the data
    assert result.model.sample(30)["species"].isin(SPECIES).all()


def test_condition_keeps_only_matching_rows_and_may_return_fewer(server: LiveServer) -> None:
    client = Client(server.url, "Tintin", "PENGUIN")
    columns = ["species", "island", "body_mass_g"]
    wanted = client.smartnoise_synth.query(
        "mwem",
        1.0,
        select_cols=columns,
        synth_params=FAST_MWEM,
        dummy=True,
        nb_samples=40,
        condition="species IN ('Adelie', 'Gentoo') AND NOT island = 'Dream' "
        "AND body_mass_g BETWEEN 3000 AND 6000",
    ).df
    assert len(wanted) == 40
    assert set(wanted["species"]) <= {"Adelie", "Gentoo"} and "Dream" not in set(wanted["island"])
    assert wanted["body_mass_g"].between(3000, 6000).all()
    never = client.smartnoise_synth.query(
        "mwem",
        1.0,
        select_cols=columns,
        synth_params=FAST_MWEM,
        dummy=True,
        nb_samples=20,
        condition="body_mass_g > 7000",  # above the declared upper bound: bounded rounds, then no rows
    ).df
    assert list(never.columns) == columns and len(never) == 0


def test_datetime_columns_are_synthesized_within_their_bounds(server: LiveServer) -> None:
    client = Client(server.url, "Dr. House", "PATIENTS")
    with pytest.raises(InvalidQueryError, match="'diagnosis_code': it is free text"):
        client.smartnoise_synth.cost("mwem", 1.0)  # by default every column, and free text cannot be learnt
    samples = client.smartnoise_synth.query(
        "mwem",
        1.0,
        select_cols=["admission_date", "smoker", "department"],
        synth_params=FAST_MWEM,
        dummy=True,
        nb_samples=30,
        condition="admission_date >= '2022-01-01' AND smoker = TRUE",
    ).df
    dates = pd.to_datetime(samples["admission_date"])
    assert len(samples) == 30 and samples["smoker"].eq(True).all()
    assert dates.between(pd.Timestamp("2022-01-01"), pd.Timestamp("2024-12-31 23:59:59")).all()


def test_client_sends_snsynth_transformers_as_logger_json(server: LiveServer) -> None:
    client = Client(server.url, "Tintin", "PENGUIN")
    constraints = {
        "species": ChainTransformer([LabelTransformer(nullable=False), OneHotEncoder()]),
        "bill_length_mm": MinMaxTransformer(lower=40.0, upper=50.0, nullable=True),
        "sex": "drop",
    }
    samples = client.smartnoise_synth.query(
        "dpgan",
        2.0,
        select_cols=["species", "bill_length_mm", "sex"],
        constraints=constraints,
        synth_params={"epochs": 1, "batch_size": 32},
        dummy=True,
        nb_samples=25,
    ).df
    assert list(samples.columns) == ["species", "bill_length_mm"]  # "drop" leaves the column out
    assert set(samples["species"]) <= SPECIES
    # The constraint's bounds, not the metadata's (30 to 65).
    assert samples["bill_length_mm"].dropna().between(40.0, 50.0).all()


def test_lomas_client_041_payloads_are_understood(server: LiveServer) -> None:
    headers = {"user-name": "Tintin"}
    body = fixture_body("dpctgan_dummy_query")
    response = httpx.post(
        f"{server.url}/dummy_smartnoise_synth_query", json=body, headers=headers, timeout=60
    )
    assert response.status_code == 200, response.text
    samples = pd.DataFrame.from_dict(response.json()["result"]["df_samples"], orient="tight")
    dropped_body_mass = ["species", "island", "bill_length_mm", "flipper_length_mm"]
    assert list(samples.columns) == dropped_body_mass
    assert len(samples) == 20 and samples["flipper_length_mm"].between(150.0, 250.0).all()

    query = fixture_body("mwem_query_condition") | {"dummy_nb_rows": 300, "dummy_seed": 1}
    response = httpx.post(
        f"{server.url}/dummy_smartnoise_synth_query", json=query, headers=headers, timeout=60
    )
    assert response.status_code == 200, response.text
    samples = pd.DataFrame.from_dict(response.json()["result"]["df_samples"], orient="tight")
    assert len(samples) == 30 and set(samples["species"]) == {"Gentoo"}
    assert (samples["body_mass_g"] > 4000).all()

    cost = httpx.post(
        f"{server.url}/estimate_smartnoise_synth_cost", json=fixture_body("mwem_cost"), headers=headers
    )
    assert cost.json() == {"epsilon": 0.5, "delta": 0.0}

    client = Client(server.url, "Tintin", "PENGUIN")
    anonymized = client.smartnoise_synth.query(
        "dpgan",
        2.0,
        select_cols=["species", "sex"],
        constraints=fixture_body("constraints_041")["anonymize_sex_email"],
        synth_params={"epochs": 1, "batch_size": 32},
        dummy=True,
        nb_samples=10,
    ).df
    assert anonymized["sex"].str.contains("@").all()  # fake e-mail addresses, never the real values


def test_failure_after_reading_private_data_is_charged_and_generic(server: LiveServer) -> None:
    client = Client(server.url, "BirthdayGirl", "PATIENTS")
    # A batch of 490 fits the metadata's 500 rows at planning; without the rows that miss a bmi, fewer remain.
    query = {
        "select_cols": ["bmi", "sex"],
        "synth_params": {"batch_size": 490, "epochs": 1},
        "nullable": False,
    }
    with pytest.raises(ExternalLibraryError, match="batch_size 490 is larger than the"):  # dummy: the reason
        client.smartnoise_synth.query("dpgan", 3.0, dummy=True, nb_rows=500, **query)
    with pytest.raises(ExternalLibraryError) as failure:
        client.smartnoise_synth.query("dpgan", 3.0, **query)
    assert "charged" in failure.value.message
    assert "batch_size" not in failure.value.message and "rows" not in failure.value.message
    cost = client.smartnoise_synth.cost("dpgan", 3.0, **query)
    assert spent_and_history(client) == ((cost.epsilon, cost.delta), 1)
    [entry] = client.get_previous_queries()
    assert entry.response == {"error": failure.value.message}


@pytest.fixture(scope="module")
def hasty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"LOMAS_SMARTNOISE_SYNTH__MAX_TRAINING_SECONDS": "1"}
    live = start_server(tmp_path_factory.mktemp("hasty-synth-server"), "--demo", env=env)
    yield live
    stop_server(live)


def test_training_beyond_the_time_limit_is_stopped(hasty_server: LiveServer) -> None:
    client = Client(hasty_server.url, "Dr. Antartica", "PENGUIN")
    long = {
        "select_cols": ["species", "island"],
        "synth_params": {"epochs": 1000, "batch_size": 50, "sigma": 50.0},
    }
    with pytest.raises(ExternalLibraryError, match="longer than the limit of 1 s"):
        client.smartnoise_synth.query("dpctgan", 3.0, dummy=True, nb_rows=PENGUIN_ROWS, **long)
    with pytest.raises(ExternalLibraryError, match="charged") as failure:
        client.smartnoise_synth.query("dpctgan", 3.0, **long)
    assert "limit" not in failure.value.message
    assert client.get_total_spent_budget().total_spent_epsilon == 3.0


# -- hostile payloads: refused with a 4xx before anything runs or is charged ---------------------------------
def constraints(columns: dict[str, Any], version: str = "1.0.8") -> str:
    return json.dumps({"module": "smartnoise-synth", "version": version, "constraints": columns})


def transformer(name: str, **params: Any) -> dict[str, Any]:
    return {"type": f"_ssynth_transformer:{name}", "params": params}


VALID_QUERY = {
    "dataset_name": "PENGUIN",
    "synth_name": "mwem",
    "epsilon": 1.0,
    "select_cols": ["species", "body_mass_g", "sex"],
    "synth_params": FAST_MWEM,
    "nb_samples": 10,
}
TOUCH = "__import__('os').system('touch MARKER')"
CHAIN = "_ssynth_transformer:ChainTransformer"
# name: (fields that replace those of a valid mwem query, HTTP status, what the refusal names)
CODE_ATTEMPTS: dict[str, tuple[dict[str, Any], int, str]] = {
    "condition calls a function": ({"condition": TOUCH}, 400, "unexpected character '.'"),
    "condition in pandas query syntax": (
        {"condition": "species == 'Adelie' or @pd.io.common.os.system('touch MARKER')"},
        400,
        "unexpected character '@'",
    ),
    "condition with backticks and methods": (
        {"condition": "`species`.str.startswith('A') | (body_mass_g > 0)"},
        400,
        "unexpected character '`'",
    ),
    "condition injects a statement": (
        {"condition": "species = 'Adelie'; import os; os.system('touch MARKER')"},
        400,
        "unexpected character ';'",
    ),
    "condition dunder attribute": (
        {"condition": "species.__class__.__init__.__globals__ = 'touch MARKER'"},
        400,
        "unexpected character '.'",
    ),
    "synth_params code as a value": (
        {"synth_name": "dpgan", "synth_params": {"epochs": TOUCH}},
        400,
        "epochs must be an integer",
    ),
    "synth_params code as a loss": (
        {"synth_name": "dpctgan", "synth_params": {"loss": TOUCH}},
        400,
        "dpctgan takes no parameter 'loss'",
    ),
    "synth_params dunder name": ({"synth_params": {"__class__": TOUCH}}, 400, "no parameter '__class__'"),
    "constraints module path": (
        {"constraints": constraints({"species": transformer("os.system", command="touch MARKER")})},
        400,
        'unknown transformer "os.system"',
    ),
    "constraints code string": (
        {"constraints": constraints({"species": TOUCH})},
        400,
        "is not categorical, ordinal, continuous, drop",
    ),
    "constraints Faker dunder method": (
        {"constraints": constraints({"sex": transformer("AnonymizationTransformer", fake="__init__")})},
        400,
        "'fake' must be one of",
    ),
    "constraints Faker setup": (
        {
            "constraints": constraints(
                {"sex": transformer("AnonymizationTransformer", fake="email", faker_setup={"locale": TOUCH})}
            )
        },
        400,
        'no parameter "faker_setup"',
    ),
    "constraints chain of code": (
        {"constraints": constraints({"species": transformer("ChainTransformer", **{"0": TOUCH})})},
        400,
        "ChainTransformer takes a list",
    ),
    "constraints nested chain": (
        {
            "constraints": constraints(
                {"species": {"type": CHAIN, "params": [transformer("ChainTransformer")]}}
            )
        },
        400,
        'unknown transformer "ChainTransformer"',
    ),
}
HOSTILE: dict[str, tuple[dict[str, Any], int, str]] = {
    **CODE_ATTEMPTS,
    "nb_samples absurd": ({"nb_samples": 10**12}, 400, "the limit is 100000"),
    "epochs absurd": (
        {"synth_name": "dpctgan", "synth_params": {"epochs": 10**9, "batch_size": 50}},
        400,
        "server limit max_epochs",
    ),
    "batch_size absurd": (
        {"synth_name": "dpgan", "synth_params": {"batch_size": 10**9}},
        400,
        "server limit max_batch_size",
    ),
    "batch_size above the rows": (
        {"synth_name": "dpctgan", "synth_params": {"batch_size": 400}},
        400,
        "larger than the dataset",
    ),
    "generator of many layers": (
        {"synth_name": "dpctgan", "synth_params": {"generator_dim": [8] * 10**5}},
        400,
        "server limit max_layers",
    ),
    "generator layer absurd": (
        {"synth_name": "dpctgan", "synth_params": {"generator_dim": [10**9]}},
        400,
        "server limit max_layer_width",
    ),
    "iterations absurd": ({"synth_params": {"iterations": 10**9}}, 400, "server limit max_iterations"),
    "bins absurd": (
        {
            "constraints": constraints(
                {"body_mass_g": transformer("BinTransformer", bins=10**9, nullable=True)}
            )
        },
        400,
        "server limit max_bins",
    ),
    "mwem histogram of every column": ({"select_cols": []}, 400, "max_histogram_cells"),
    "aim rounds too few": (
        {"synth_name": "aim", "synth_params": {"rounds": 1}},
        400,
        "aim needs rounds >= 4",
    ),
    "condition too long": (
        {"condition": "species = 'Adelie' OR " * 100 + "species = 'Gentoo'"},
        400,
        "the limit is 1000",
    ),
    "condition nested too deep": (
        {"condition": "(" * 50 + "species = 'Adelie'" + ")" * 50},
        400,
        "nested more than 20 levels",
    ),
    "constraints deeply nested JSON": ({"constraints": "[" * 100_000}, 400, "not valid JSON"),
    "epsilon in synth_params": ({"synth_params": {"epsilon": 100.0}}, 400, "request's epsilon field"),
    "disabled_dp": (
        {"synth_name": "dpctgan", "synth_params": {"disabled_dp": True, "batch_size": 50}},
        400,
        "without differential privacy",
    ),
    "epochs as text": ({"synth_name": "dpgan", "synth_params": {"epochs": "5"}}, 400, 'not "5"'),
    "batch_size as a boolean": (
        {"synth_name": "dpgan", "synth_params": {"batch_size": True}},
        400,
        "batch_size must be an integer",
    ),
    "constraints not JSON": ({"constraints": "{'species': 'categorical'}"}, 400, "not valid JSON"),
    "constraints of an unknown snsynth version": (
        {"constraints": constraints({}, version="0.0.1")},
        400,
        "accepted: ['1.0.4', '1.0.8']",
    ),
    "constraints on an unselected column": (
        {"constraints": constraints({"year": "categorical"})},
        400,
        "not selected: ['year']",
    ),
    "Faker method outside the allow-list": (
        {"constraints": fixture_body("constraints_041")["anonymize_sex_pystr"]},
        400,
        'not "pystr"',
    ),
    "unknown transformer": (
        {"constraints": constraints({"species": transformer("DateTimeTransformer")})},
        400,
        'unknown transformer "DateTimeTransformer"',
    ),
    "budget-spending transformer": (
        {"constraints": fixture_body("constraints_041")["standard_scaler"]},
        400,
        "StandardScaler always spends budget",
    ),
    "transformer parameter of the wrong type": (
        {"constraints": constraints({"species": transformer("LabelTransformer", nullable="no")})},
        400,
        "'nullable' must be true or false",
    ),
    "bounds to infer from the data": (
        {
            "synth_name": "dpgan",
            "synth_params": {},
            "nullable": False,
            "constraints": constraints(
                {
                    "body_mass_g": {
                        "type": CHAIN,
                        "params": [transformer("LogTransformer"), transformer("MinMaxTransformer")],
                    }
                }
            ),
        },
        400,
        "needs lower and upper",
    ),
    "pacsynth": ({"synth_name": "pacsynth", "synth_params": {}}, 400, "pacsynth is not supported"),
    "mst model": (
        {"synth_name": "mst", "synth_params": {}, "return_model": True},
        400,
        "mst models cannot be returned",
    ),
    "pategan on too few rows": ({"synth_name": "pategan", "synth_params": {}}, 400, "at least 1000 rows"),
    "condition with a model": (
        {"return_model": True, "condition": "species = 'Adelie'"},
        400,
        "condition applies to samples only",
    ),
    "epsilon as text": ({"epsilon": "a lot"}, 422, "epsilon"),
    "negative delta": ({"delta": -1.0}, 422, "delta"),
    "unknown synthesizer": ({"synth_name": "evil"}, 422, "synth_name"),
    "select_cols as a number": ({"select_cols": 5}, 422, "select_cols"),
    "constraints as an object": ({"constraints": {"species": "categorical"}}, 422, "constraints"),
    "condition as a list": ({"condition": ["species = 'Adelie'"]}, 422, "condition"),
}


def test_the_query_the_hostile_payloads_alter_is_valid(server: LiveServer) -> None:
    response = httpx.post(
        f"{server.url}/dummy_smartnoise_synth_query",
        json=VALID_QUERY,
        headers={"user-name": "Tintin"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["result"]["df_samples"]["data"]) == 10


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_payload_is_refused_before_anything_runs_or_is_charged(
    server: LiveServer, tmp_path: Path, name: str
) -> None:
    fields, status, reason = HOSTILE[name]
    marker = tmp_path / "pwned"
    body = json.loads(json.dumps(VALID_QUERY | fields).replace("MARKER", str(marker)))
    client = Client(server.url, "Tintin", "PENGUIN")
    before = spent_and_history(client)
    for endpoint in ("smartnoise_synth_query", "dummy_smartnoise_synth_query"):
        response = httpx.post(
            f"{server.url}/{endpoint}", json=body, headers={"user-name": "Tintin"}, timeout=60
        )
        assert response.status_code == status, response.text
        assert response.json()["type"] == "InvalidQueryException"
        assert reason in response.json()["message"]
    assert not marker.exists()
    assert spent_and_history(client) == before
