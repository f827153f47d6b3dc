"""DiffPrivLib through the real HTTP server and our client: fitting, costs, charges, imputation, the
returned model in both its forms, and hostile payloads that must be refused before anything runs.

The pipelines in fixtures/diffprivlib/ were written by the published lomas-client 0.4.1
(diffprivlib_logger 0.0.3 with diffprivlib 0.6.5), as it sends them.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from diffprivlib import models
from sklearn.model_selection import ShuffleSplit
from sklearn.pipeline import Pipeline

from conftest import LiveServer, start_server, stop_server
from lomas.client import Client, ExternalLibraryError
from lomas.client.diffprivlib import pipeline_from_params
from lomas.core.responses import DiffPrivLibResult, QueryResponse

FIXTURES = Path(__file__).parent / "fixtures" / "diffprivlib"
PENGUIN_FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
PENGUIN_BOUNDS = ([30.0, 13.0, 150.0, 2000.0], [65.0, 23.0, 250.0, 7000.0])
PENGUIN_MIDPOINTS = [47.5, 18.0, 200.0, 4500.0]
SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_BOUNDS = ([4.0, 2.0, 1.0, 0.0], [8.0, 4.5, 7.0, 3.0])
IRIS_SPECIES = ["setosa", "versicolor", "virginica"]
# Fitted attributes that are not DP outputs; the server never returns them.
WITHHELD = {"n_samples_seen_", "n_iter_", "labels_", "inertia_", "n_samples_", "singular_values_"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("diffprivlib-server"), "--demo")
    yield live
    stop_server(live)


def fixture_document(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def penguin_logistic() -> Pipeline:
    return Pipeline(
        [
            ("scaler", models.StandardScaler(epsilon=0.5, bounds=PENGUIN_BOUNDS)),
            ("classifier", models.LogisticRegression(epsilon=1.0, data_norm=83.7)),
        ]
    )


def iris_forest(random_state: int | None = None) -> Pipeline:
    forest = models.RandomForestClassifier(
        n_estimators=5,
        epsilon=1.0,
        bounds=IRIS_BOUNDS,
        classes=IRIS_SPECIES,
        max_depth=3,
        random_state=random_state,
    )
    return Pipeline([("forest", forest)])


def post(server: LiveServer, user: str, endpoint: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/{endpoint}", headers={"user-name": user}, json=body, timeout=60)


def spent_and_history(client: Client) -> tuple[Any, list[Any]]:
    return client.get_total_spent_budget(), client.get_previous_queries()


# -- fitting, cost and charge -------------------------------------------------------------------------------
def test_query_fits_the_pipeline_and_charges_exactly_its_cost(server: LiveServer) -> None:
    client = Client(server.url, "Dr. Antartica", "PENGUIN")
    before = client.get_total_spent_budget()
    cost = client.diffprivlib.cost(penguin_logistic(), PENGUIN_FEATURES, ["species"])
    assert (cost.epsilon, cost.delta) == (1.5, 0.0)  # StandardScaler 0.5 + LogisticRegression 1.0
    assert client.get_total_spent_budget() == before  # estimating spends nothing

    result = client.diffprivlib.query(
        penguin_logistic(), PENGUIN_FEATURES, ["species"], imputer_strategy="mean"
    )

    assert (result.epsilon, result.delta) == (cost.epsilon, cost.delta)
    spent = client.get_total_spent_budget()
    assert spent.total_spent_epsilon == pytest.approx(before.total_spent_epsilon + 1.5)
    assert spent.total_spent_delta == before.total_spent_delta
    assert isinstance(result.model, Pipeline)
    assert result.model[-1].coef_.shape == (3, 4)
    predictions = result.model.predict(np.array([[39.1, 18.7, 181.0, 3750.0], [50.0, 15.2, 218.0, 5700.0]]))
    assert set(predictions) <= set(SPECIES)
    assert 0.0 <= result.score <= 1.0
    [entry] = client.get_previous_queries()
    assert entry.dp_librairy == "diffprivlib"
    assert entry.response["epsilon"] == 1.5
    assert entry.client_input["imputer_strategy"] == "mean"


def test_cost_adds_declared_epsilons_and_class_defaults_without_fitting(server: LiveServer) -> None:
    client = Client(server.url, "Tintin", "PENGUIN")
    document = fixture_document("penguin_logistic")
    del document["pipeline"][1]["params"]["epsilon"]  # LogisticRegression's default: 1.0
    document["pipeline"][0]["params"]["epsilon"] = 0.25
    before = spent_and_history(client)
    response = post(
        server,
        "Tintin",
        "estimate_diffprivlib_cost",
        {
            "dataset_name": "PENGUIN",
            "diffprivlib_json": json.dumps(document),
            "feature_columns": PENGUIN_FEATURES,
            "target_columns": ["species"],
        },
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"epsilon": 1.25, "delta": 0.0}
    assert spent_and_history(client) == before


def test_failure_after_reading_private_data_is_charged_and_says_nothing_of_the_data(
    server: LiveServer,
) -> None:
    """KMeans needs more rows than clusters: 15 training rows of IRIS are too few for 50 clusters."""
    client = Client(server.url, "Tintin", "IRIS")
    pipeline = Pipeline([("kmeans", models.KMeans(n_clusters=50, epsilon=1.0, bounds=IRIS_BOUNDS))])
    arguments: dict[str, Any] = {"feature_columns": IRIS_FEATURES, "test_size": 0.9}
    with pytest.raises(
        ExternalLibraryError, match="n_samples=10 should be >= n_clusters=50"
    ):  # dummy: the library's words
        client.diffprivlib.query(pipeline, **arguments, dummy=True, nb_rows=100)
    before_spent, before_history = spent_and_history(client)

    with pytest.raises(ExternalLibraryError) as failure:
        client.diffprivlib.query(pipeline, **arguments)

    assert "charged" in failure.value.message
    assert "n_samples" not in failure.value.message and "15" not in failure.value.message
    spent = client.get_total_spent_budget()
    assert spent.total_spent_epsilon == pytest.approx(before_spent.total_spent_epsilon + 1.0)
    history = client.get_previous_queries()
    assert len(history) == len(before_history) + 1
    assert history[-1].response == {"error": failure.value.message}


def test_seeds_are_honoured_on_dummy_data_only(server: LiveServer) -> None:
    """A seed chosen by the caller would make the noise reproducible: on private data it is dropped."""
    client = Client(server.url, "Tintin", "IRIS")
    before = client.get_total_spent_budget()

    def thresholds(pipeline: Pipeline) -> list[list[float]]:
        return [tree.tree_.threshold.tolist() for tree in pipeline[-1].estimators_]

    dummy = [
        client.diffprivlib.query(iris_forest(3), IRIS_FEATURES, ["species"], dummy=True, nb_rows=200)
        for _ in range(2)
    ]
    assert thresholds(dummy[0].model) == thresholds(dummy[1].model)
    assert client.get_total_spent_budget() == before  # dummy queries are free

    private = [client.diffprivlib.query(iris_forest(3), IRIS_FEATURES, ["species"]) for _ in range(2)]
    assert thresholds(private[0].model) != thresholds(private[1].model)
    assert client.get_total_spent_budget().total_spent_epsilon == pytest.approx(
        before.total_spent_epsilon + 2.0
    )


@pytest.mark.parametrize("strategy", ["drop", "mean", "most_frequent"])
def test_missing_values_are_dropped_or_filled_from_the_metadata(server: LiveServer, strategy: str) -> None:
    """With a huge epsilon (free on dummy data) the scaler's DP mean is the exact mean of what it was fed:
    the training split of the dummy rows, missing cells dropped or set to the midpoint of their bounds."""
    client = Client(server.url, "Tintin", "PENGUIN")
    rows, seed, split_seed = 400, 11, 5
    pipeline = Pipeline(
        [
            ("scaler", models.StandardScaler(epsilon=1e6, bounds=PENGUIN_BOUNDS)),
            ("classifier", models.LogisticRegression(epsilon=1.0, data_norm=10.0)),
        ]
    )
    result = client.diffprivlib.query(
        pipeline,
        PENGUIN_FEATURES,
        ["species"],
        test_train_split_seed=split_seed,
        imputer_strategy=strategy,
        dummy=True,
        nb_rows=rows,
        seed=seed,
    )

    features = client.get_dummy_dataset(nb_rows=rows, seed=seed)[PENGUIN_FEATURES].to_numpy(
        dtype=float, na_value=np.nan
    )
    assert np.isnan(features).any()  # PENGUIN's measures are nullable: there is something to impute
    if strategy == "drop":
        features = features[~np.isnan(features).any(axis=1)]
    else:
        features = np.where(np.isnan(features), PENGUIN_MIDPOINTS, features)
    train, _test = next(ShuffleSplit(n_splits=1, test_size=0.2, random_state=split_seed).split(features))
    np.testing.assert_allclose(result.model[0].mean_, features[train].mean(axis=0), rtol=1e-4)


# -- the returned model -------------------------------------------------------------------------------
FITTED_CASES = [
    ("penguin_logistic", "PENGUIN", PENGUIN_FEATURES, ["species"]),
    ("iris_forest", "IRIS", IRIS_FEATURES, ["species"]),
    ("iris_tree", "IRIS", IRIS_FEATURES, ["species"]),
    ("iris_gnb", "IRIS", IRIS_FEATURES, ["species"]),
    ("iris_kmeans", "IRIS", IRIS_FEATURES, None),
    ("iris_pca_linreg", "IRIS", ["sepal_length", "sepal_width"], ["petal_length"]),
]


@pytest.mark.parametrize(("fixture", "dataset", "features", "target"), FITTED_CASES)
def test_json_model_rebuilds_the_pickled_pipeline_exactly(
    server: LiveServer, fixture: str, dataset: str, features: list[str], target: list[str] | None
) -> None:
    body = {
        "dataset_name": dataset,
        "diffprivlib_json": json.dumps(fixture_document(fixture)),
        "feature_columns": features,
        "target_columns": target,
        "dummy_nb_rows": 300,
    }
    response = post(server, "Tintin", "dummy_diffprivlib_query", body)
    assert response.status_code == 200, response.text
    result = QueryResponse.model_validate(response.json()).result
    assert isinstance(result, DiffPrivLibResult) and result.model_params is not None

    rebuilt = pipeline_from_params(result.model_params)
    pickled = pickle.loads(base64.b64decode(result.model))  # our own server, in a test: trusted

    sample = Client(server.url, "Tintin", dataset).get_dummy_dataset(nb_rows=60, seed=9)[features].dropna()
    values = sample.to_numpy(dtype=float)
    np.testing.assert_array_equal(rebuilt.predict(values), pickled.predict(values))
    for position in range(1, len(pickled.steps)):  # intermediate transformers too
        np.testing.assert_array_equal(
            rebuilt[:position].transform(values), pickled[:position].transform(values)
        )
    for pipeline in (rebuilt, pickled):
        for _name, step in pipeline.steps:  # (diffprivlib's KMeans constructor sets some of them to None)
            assert all(getattr(step, name, None) is None for name in WITHHELD), (fixture, vars(step))


# -- hostile payloads ---------------------------------------------------------------------------------------
HOSTILE_USER, HOSTILE_DATASET, TARGET = "Tintin", "PENGUIN", ["species"]
SHELL = "touch {marker}"


class _Shell:
    """Unpickling this runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def pickled_shell(marker: Path) -> str:
    return base64.b64encode(pickle.dumps(_Shell(SHELL.format(marker=marker)))).decode()


def pair(lower: Any, upper: Any) -> dict[str, Any]:
    return {"_tuple": True, "_items": [lower, upper]}


def step(kind: str, name: str, **params: Any) -> dict[str, Any]:
    return {"type": f"_dpl_type:{kind}", "name": name, "params": params}


def document(*steps: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"module": "diffprivlib", "version": "0.6.5", "pipeline": list(steps), **top}


LOGISTIC = fixture_document("penguin_logistic")
FOREST = document(
    step(
        "RandomForestClassifier",
        "forest",
        n_estimators=5,
        max_depth=3,
        bounds=pair(*PENGUIN_BOUNDS),
        classes=SPECIES,
    )
)
KMEANS = document(step("KMeans", "kmeans", n_clusters=3, bounds=pair(*PENGUIN_BOUNDS)))
PCA_KMEANS = document(
    step("PCA", "pca", n_components=2, data_norm=100.0, bounds=pair(*PENGUIN_BOUNDS)),
    step("KMeans", "kmeans", bounds=pair(-10.0, 10.0)),
)
GNB = document(step("GaussianNB", "nb", bounds=pair(*PENGUIN_BOUNDS)))
LINEAR = document(
    step("LinearRegression", "linear", bounds_X=pair(*PENGUIN_BOUNDS), bounds_y=pair(2000.0, 7000.0))
)
DROP = object()


def edited(base: dict[str, Any], index: int | None = None, **params: Any) -> dict[str, Any]:
    """A copy of a document with step `index`'s params changed (DROP deletes one) or top keys changed."""
    changed = copy.deepcopy(base)
    target = changed if index is None else changed["pipeline"][index]["params"]
    for key, value in params.items():
        if value is DROP:
            del target[key]
        else:
            target[key] = value
    return changed


def typed(base: dict[str, Any], index: int, kind: str) -> dict[str, Any]:
    changed = copy.deepcopy(base)
    changed["pipeline"][index]["type"] = kind
    return changed


def request(
    pipeline: dict[str, Any] | str,
    features: list[str] | None = None,
    target: list[str] | None = TARGET,
    **fields: Any,
) -> dict[str, Any]:
    return {
        "dataset_name": HOSTILE_DATASET,
        "diffprivlib_json": pipeline if isinstance(pipeline, str) else json.dumps(pipeline),
        "feature_columns": PENGUIN_FEATURES if features is None else features,
        "target_columns": target,
        "test_size": 0.2,
        "test_train_split_seed": 1,
        "imputer_strategy": "drop",
        **fields,
    }


Body = Callable[[Path], dict[str, Any]]
QUERY, DUMMY = "diffprivlib_query", "dummy_diffprivlib_query"


def case(name: str, body: Body, fragment: str, endpoint: str = QUERY) -> Any:
    return pytest.param(endpoint, body, fragment, id=name)


def shell_in(marker: Path) -> str:
    return SHELL.format(marker=marker)


HOSTILE = [
    # code execution attempts: each would create the marker file if the server ran it
    case(
        "type-as-expression",
        lambda m: request(typed(LOGISTIC, 1, f"_dpl_type:__import__('os').system('{shell_in(m)}')")),
        "is not allowed",
    ),
    case(
        "type-reaching-globals",
        lambda m: request(typed(LOGISTIC, 0, "_dpl_type:StandardScaler.__init__.__globals__")),
        "is not allowed",
    ),
    case(
        "sklearn-function-transformer",
        lambda m: request(
            document(
                step("FunctionTransformer", "f", func="os.system", kw_args={"command": shell_in(m)}),
                LOGISTIC["pipeline"][1],
            )
        ),
        "is not allowed",
    ),
    case("pickle-as-pipeline", lambda m: request(pickled_shell(m)), "not valid JSON"),
    case(
        "pickle-as-parameter",
        lambda m: request(edited(LOGISTIC, 0, bounds=pickled_shell(m))),
        "must be a pair",
    ),
    case(
        "jsonpickle-reduce",
        lambda m: request(
            edited(
                LOGISTIC, 0, bounds={"py/reduce": [{"py/function": "os.system"}, {"py/tuple": [shell_in(m)]}]}
            )
        ),
        "objects are not parameter values",
    ),
    case(
        "instance-as-expression",
        lambda m: request(
            edited(LOGISTIC, 1, accountant=f"_dpl_instance:__import__('os').system('{shell_in(m)}')")
        ),
        "must be null or",
    ),
    case(
        "module-other-than-diffprivlib",
        lambda m: request(edited(typed(LOGISTIC, 0, "_dpl_type:system"), module="os")),
        '"module" must be "diffprivlib"',
    ),
    # shared, foreign or malformed accountants
    case(
        "accountant-object",
        lambda m: request(edited(LOGISTIC, 0, accountant={"epsilon": 1e9, "spent_budget": []})),
        "objects are not parameter values",
    ),
    case(
        "accountant-global-default",
        lambda m: request(edited(LOGISTIC, 0, accountant="_dpl_instance:BudgetAccountant.load_default")),
        "must be null or",
    ),
    case(
        "accountant-empty-instance",
        lambda m: request(edited(LOGISTIC, 1, accountant="_dpl_instance:")),
        "must be null or",
    ),
    case(
        "accountant-other-class",
        lambda m: request(edited(LOGISTIC, 1, accountant="_dpl_instance:Budget")),
        "must be null or",
    ),
    case(
        "accountant-in-a-tuple",
        lambda m: request(edited(LOGISTIC, 1, accountant=pair("_dpl_instance:BudgetAccountant", None))),
        "must be null or",
    ),
    # absurd sizes
    case("billion-trees", lambda m: request(edited(FOREST, 0, n_estimators=10**9)), "from 1 to 100"),
    case("deep-tree", lambda m: request(edited(FOREST, 0, max_depth=1000)), "from 1 to 12"),
    case(
        "too-many-tree-nodes",
        lambda m: request(edited(FOREST, 0, n_estimators=100, max_depth=12)),
        "tree nodes",
    ),
    case("endless-iterations", lambda m: request(edited(LOGISTIC, 1, max_iter=10**12)), "from 1 to 1000"),
    case(
        "million-clusters",
        lambda m: request(edited(KMEANS, 0, n_clusters=10**7), target=None),
        "from 1 to 100",
    ),
    case(
        "more-components-than-columns",
        lambda m: request(edited(PCA_KMEANS, 0, n_components=50), target=None),
        "from 1 to 4",
    ),
    case("hundred-steps", lambda m: request(document(*[LOGISTIC["pipeline"][0]] * 100)), "1 to 10 steps"),
    case("huge-document", lambda m: request(json.dumps(LOGISTIC) + " " * 200_000), "characters long"),
    case(
        "deeply-nested",
        lambda m: request(
            json.dumps(edited(LOGISTIC, 0, bounds=0)).replace(
                '"bounds": 0', '"bounds": ' + "[" * 30_000 + "]" * 30_000
            )
        ),
        "not valid JSON",
    ),
    case(
        "thousands-of-bounds",
        lambda m: request(edited(LOGISTIC, 0, bounds=pair([0.0] * 5_000, [1.0] * 5_000))),
        "4 values per side",
    ),
    case("astronomical-epsilon", lambda m: request(edited(LOGISTIC, 1, epsilon=1e300)), "Not enough budget"),
    case(
        "billion-dummy-rows", lambda m: request(LOGISTIC, dummy_nb_rows=10**9), "limit is 100000 rows", DUMMY
    ),
    # wrong types and values
    case("epsilon-as-text", lambda m: request(edited(LOGISTIC, 0, epsilon="1.0")), "must be a finite number"),
    case("epsilon-negative", lambda m: request(edited(LOGISTIC, 0, epsilon=-1)), "must be positive"),
    case("epsilon-nan", lambda m: request(edited(LOGISTIC, 0, epsilon=float("nan"))), "not valid JSON"),
    case(
        "epsilon-overflowing",
        lambda m: request(json.dumps(LOGISTIC).replace('"epsilon": 0.5', '"epsilon": 1e999')),
        "must be a finite number",
    ),
    case("max-iter-fractional", lambda m: request(edited(LOGISTIC, 1, max_iter=1.5)), "must be an integer"),
    case("max-iter-boolean", lambda m: request(edited(LOGISTIC, 1, max_iter=True)), "must be an integer"),
    case(
        "random-state-object",
        lambda m: request(edited(LOGISTIC, 1, random_state="RandomState(0)")),
        "must be null or an integer",
    ),
    case(
        "random-state-too-large",
        lambda m: request(edited(LOGISTIC, 1, random_state=2**40)),
        "must be null or an integer",
    ),
    case("verbose", lambda m: request(edited(LOGISTIC, 1, verbose=1)), "must be 0"),
    case("parallel-jobs", lambda m: request(edited(LOGISTIC, 1, n_jobs=-1)), "must be null or 1"),
    case("bounds-missing", lambda m: request(edited(LOGISTIC, 0, bounds=DROP)), "is required"),
    case("data-norm-missing", lambda m: request(edited(LOGISTIC, 1, data_norm=DROP)), "is required"),
    case("data-norm-null", lambda m: request(edited(LOGISTIC, 1, data_norm=None)), "is required"),
    case(
        "bounds-of-wrong-width",
        lambda m: request(edited(LOGISTIC, 0, bounds=pair([30.0, 13.0, 150.0], [65.0, 23.0, 250.0]))),
        "4 values per side",
    ),
    case(
        "bounds-upside-down",
        lambda m: request(edited(LOGISTIC, 0, bounds=pair(*reversed(PENGUIN_BOUNDS)))),
        "at most its upper bound",
    ),
    case(
        "bounds-not-a-pair", lambda m: request(edited(LOGISTIC, 0, bounds=[1.0, 2.0, 3.0])), "must be a pair"
    ),
    case("classes-missing", lambda m: request(edited(FOREST, 0, classes=DROP)), "is required"),
    case(
        "classes-wrong",
        lambda m: request(edited(FOREST, 0, classes=["Gentoo", "Adelie"])),
        "sorted categories",
    ),
    case("priors-missing", lambda m: request(GNB), "'priors' is required"),
    case(
        "epsilon-so-small-the-library-never-ends",
        lambda m: request(edited(GNB, 0, epsilon=1e-300, priors=[0.4, 0.2, 0.4])),
        "must be at least 0.001",
    ),
    case(
        "priors-not-summing-to-one",
        lambda m: request(edited(GNB, 0, priors=[0.5, 0.5, 0.5])),
        "must sum to 1",
    ),
    case(
        "tuple-with-extra-keys",
        lambda m: request(edited(LOGISTIC, 0, bounds={"_tuple": True, "_items": [0, 1], "x": 1})),
        "objects are not parameter values",
    ),
    case("unknown-parameter", lambda m: request(edited(LOGISTIC, 1, solver="saga")), "are not allowed"),
    case("unknown-class", lambda m: request(typed(LOGISTIC, 1, "_dpl_type:SVC")), "is not allowed"),
    case("unsupported-version", lambda m: request(edited(LOGISTIC, version="0.7.0")), "is not supported"),
    case(
        "version-missing",
        lambda m: request(edited(LOGISTIC, version=DROP)),
        '"module", "version" and "pipeline"',
    ),
    case(
        "extra-top-level-key",
        lambda m: request(edited(LOGISTIC, code="print(1)")),
        '"module", "version" and "pipeline"',
    ),
    case(
        "pipeline-not-a-list",
        lambda m: request(edited(LOGISTIC, pipeline={"0": LOGISTIC["pipeline"][0]})),
        "must be a list",
    ),
    case(
        "step-not-an-object",
        lambda m: request(edited(LOGISTIC, pipeline=["StandardScaler"])),
        "must be an object",
    ),
    case(
        "step-params-null",
        lambda m: request(document({**LOGISTIC["pipeline"][0], "params": None})),
        "params must be an object",
    ),
    case(
        "duplicate-step-names",
        lambda m: request(document(LOGISTIC["pipeline"][0], {**LOGISTIC["pipeline"][1], "name": "scaler"})),
        "must be distinct",
    ),
    case(
        "step-name-with-dunder",
        lambda m: request(document({**LOGISTIC["pipeline"][0], "name": "a__b"}, LOGISTIC["pipeline"][1])),
        "name",
    ),
    case(
        "scaler-last", lambda m: request(document(LOGISTIC["pipeline"][0])), "cannot end with StandardScaler"
    ),
    case(
        "classifier-first",
        lambda m: request(document(LOGISTIC["pipeline"][1], LOGISTIC["pipeline"][0])),
        "cannot come before another step",
    ),
    case(
        "unknown-feature",
        lambda m: request(
            LOGISTIC, features=["bill_length_mm", "wing_span", "flipper_length_mm", "body_mass_g"]
        ),
        "is not in the dataset",
    ),
    case(
        "text-feature",
        lambda m: request(
            LOGISTIC, features=["bill_length_mm", "island", "flipper_length_mm", "body_mass_g"]
        ),
        "must be int, float or boolean",
    ),
    case("target-missing", lambda m: request(LOGISTIC, target=None), "needs a target"),
    case("two-targets", lambda m: request(LOGISTIC, target=["species", "sex"]), "one column"),
    case(
        "target-also-feature", lambda m: request(LINEAR, target=["body_mass_g"]), "cannot also be a feature"
    ),
    case(
        "numeric-target-for-classifier",
        lambda m: request(LOGISTIC, features=PENGUIN_FEATURES[:3], target=["body_mass_g"]),
        "predicts a class",
    ),
    case("target-for-clustering", lambda m: request(KMEANS), "learns without a target"),
    case("no-features", lambda m: request(LOGISTIC, features=[]), "feature_columns"),
    case("unknown-imputer", lambda m: request(LOGISTIC, imputer_strategy="magic"), "imputer_strategy"),
    case("test-size-above-one", lambda m: request(LOGISTIC, test_size=1.5), "test_size"),
    case(
        "pipeline-as-object",
        lambda m: {**request(LOGISTIC), "diffprivlib_json": LOGISTIC},
        "diffprivlib_json",
    ),
]


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile") / "executed"


@pytest.mark.parametrize(("endpoint", "body", "fragment"), HOSTILE)
def test_hostile_payload_is_refused_before_anything_runs_or_is_charged(
    server: LiveServer, marker: Path, endpoint: str, body: Body, fragment: str
) -> None:
    client = Client(server.url, HOSTILE_USER, HOSTILE_DATASET)
    before = spent_and_history(client)

    response = post(server, HOSTILE_USER, endpoint, body(marker))

    assert response.status_code in (400, 422), response.text
    assert fragment in response.json()["message"]
    assert spent_and_history(client) == before
    assert not marker.exists()
