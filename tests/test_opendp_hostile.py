"""Hostile OpenDP payloads, sent raw over HTTP: each is refused with a 4xx, runs nothing and costs nothing.

Every payload goes to `/opendp_query` (the endpoint that would read private data and charge); the code
execution attempts also go to the cost and dummy endpoints and try to create a marker file.
"""

from __future__ import annotations

import base64
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer, start_server, stop_server
from lomas.client import Client

FIXTURES = Path(__file__).parent / "fixtures" / "opendp"
USER, DATASET = "Tintin", "PENGUIN"
ENDPOINTS = ["opendp_query", "estimate_opendp_cost", "dummy_opendp_query"]


def constructor(module: str, func: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"_type": "constructor", "module": module, "func": func, "args": list(args), "kwargs": kwargs}


def document(ast: Any, version: str = "0.10.0") -> str:
    return json.dumps({"version": version, "ast": ast})


def count_041() -> dict[str, Any]:
    """lomas-client 0.4.1's count: split >> select >> then_count >> then_laplace (see fixtures/opendp)."""
    return json.loads((FIXTURES / "count_laplace.json").read_text())["ast"]


def count_with(edit: Any) -> str:
    ast = count_041()
    edit(ast)
    return document(ast)


def split(ast: dict[str, Any]) -> dict[str, Any]:
    return ast["lhs"]["lhs"]["args"][1]["kwargs"]


def select(ast: dict[str, Any]) -> dict[str, Any]:
    return ast["lhs"]["lhs"]["args"][0]["kwargs"]


def laplace(ast: dict[str, Any]) -> dict[str, Any]:
    return ast["rhs"]["kwargs"]


def then(func: str, **kwargs: Any) -> Any:
    """The count pipeline with its noise step replaced by `then_...(**kwargs)`."""

    def edit(ast: dict[str, Any]) -> None:
        ast["rhs"] = {"_type": "constructor", "module": "measurements", "func": func, "kwargs": kwargs}

    return edit


def on_count(ast: Any) -> str:
    """`ast` as the measurement wrapped around the count pipeline (its first argument)."""
    return document({**ast, "args": [count_041(), *ast["args"]]})


def nested_chains(depth: int) -> str:
    ast = count_041()
    for _ in range(depth):
        ast = {
            "_type": "partial_chain",
            "lhs": ast,
            "rhs": {
                "_type": "constructor",
                "module": "transformations",
                "func": "then_clamp",
                "kwargs": {"bounds": [0, 1]},
            },
        }
    return document(ast)


class _Touch:
    """Unpickling this runs `os.system("touch <marker>")`: a pickle from a client must never be loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, (f"touch {self.marker}",))


def code_execution(marker: str) -> dict[str, str]:
    """Payloads that would create the file `marker` if any part of them were run."""
    touch = f"__import__('os').system('touch {marker}')"
    pickled = base64.b64encode(pickle.dumps(_Touch(marker))).decode()
    return {
        "os.system": document(constructor("os", "system", f"touch {marker}")),
        "subprocess.run": document(
            constructor("subprocess", "run", {"_type": "list", "_items": ["touch", marker]})
        ),
        "builtins.eval": document(constructor("builtins", "eval", touch)),
        "dunder import": document(constructor("transformations", "__import__", "os")),
        "attribute path": document(constructor("transformations", "make_count.__globals__", "os")),
        "module path": document(constructor("opendp.mod", "enable_features", "honest-but-curious")),
        "type eval": count_with(lambda ast: select(ast).update(TOA={"_type": "type", "name": touch})),
        "user transformation": document(
            constructor(
                "transformations",
                "make_user_transformation",
                constructor("domains", "atom_domain", T="String"),
                constructor("metrics", "symmetric_distance"),
                function=f"lambda x: {touch}",
                stability_map="lambda d: d",
            )
        ),
        "then with code": count_with(then("then_laplace.__globals__", scale=touch)),
        "pickle": pickled,
        "pickle in json": document(pickled),
    }


CODE_EXECUTION = sorted(code_execution("marker"))
HOSTILE = {
    # callables and constructors that take them, or that would trust the client
    "user measurement": document(
        constructor("measurements", "make_user_measurement", function="lambda x: x")
    ),
    "user domain": document(
        constructor(
            "transformations",
            "make_count",
            constructor("domains", "user_domain", "x", "lambda x: True"),
            constructor("metrics", "symmetric_distance"),
        )
    ),
    "new function": document(
        constructor(
            "combinators",
            "make_chain_pm",
            constructor("core", "new_function", "lambda x: x", "f64"),
            count_041(),
        )
    ),
    "postprocess": on_count(
        constructor("combinators", "make_chain_pm", constructor("transformations", "make_identity"))
    ),
    "amplification": on_count(constructor("combinators", "make_population_amplification", 10**9)),
    "composition": document(
        constructor(
            "combinators", "make_basic_composition", {"_type": "list", "_items": [count_041(), count_041()]}
        )
    ),
    "sequential composition": document(constructor("combinators", "make_sequential_composition")),
    "binary search": document(constructor("prelude", "binary_search_param", "lambda s: s", 1, 1.0)),
    # switching library features from a request
    "enable_features": document(constructor("prelude", "enable_features", "honest-but-curious")),
    "enable_features re-exported": document(constructor("transformations", "enable_features", "contrib")),
    "disable_features": document(constructor("combinators", "disable_features", "contrib")),
    "enable_features in kwargs": count_with(
        lambda ast: laplace(ast).update(enable_features="honest-but-curious")
    ),
    # other modules
    "numpy": document(constructor("numpy", "load", "/etc/passwd")),
    "core": document(constructor("core", "transformation_output_domain", count_041())),
    "polars extras": document(constructor("extras.polars", "make_private_lazyframe")),
    "context": document(constructor("context", "Context")),
    "module missing": document({"_type": "constructor", "func": "make_count"}),
    # unknown type names
    "TOA PyObject": count_with(lambda ast: select(ast).update(TOA="PyObject")),
    "TOA ExtrinsicObject": count_with(lambda ast: select(ast).update(TOA="ExtrinsicObject")),
    "TOA AnyObject": count_with(lambda ast: select(ast).update(TOA="AnyObject")),
    "TOA generic": count_with(lambda ast: select(ast).update(TOA="Vec<String>")),
    "count TO i128": count_with(lambda ast: ast["lhs"]["rhs"].update(kwargs={"TO": "i128"})),
    "laplace MO user": count_with(lambda ast: laplace(ast).update(QO="UserDivergence")),
    "type node builtin": count_with(lambda ast: select(ast).update(TOA={"_type": "type", "name": "object"})),
    # absurd sizes
    "resize 1e12": count_with(
        lambda ast: ast["lhs"].update(
            rhs={
                "_type": "constructor",
                "module": "transformations",
                "func": "then_resize",
                "kwargs": {"size": 10**12, "constant": "x"},
            }
        )
    ),
    "resize 1e6 on 344 rows": count_with(
        lambda ast: ast["lhs"].update(
            rhs={
                "_type": "constructor",
                "module": "transformations",
                "func": "then_resize",
                "kwargs": {"size": 10**6, "constant": "x" * 1000},
            }
        )
    ),
    "vector domain 1e12": document(
        constructor(
            "transformations",
            "make_count",
            constructor(
                "domains", "vector_domain", constructor("domains", "atom_domain", T="String"), size=10**12
            ),
            constructor("metrics", "symmetric_distance"),
        )
    ),
    "long document": count_with(lambda ast: laplace(ast).update(padding=["x" * 900] * 240)),
    "long list": count_with(
        lambda ast: ast["lhs"].update(
            rhs={
                "_type": "constructor",
                "module": "transformations",
                "func": "then_count_by_categories",
                "kwargs": {"categories": {"_type": "list", "_items": list(range(20_000))}},
            }
        )
    ),
    "long string": count_with(lambda ast: select(ast).update(key="k" * 5_000)),
    "huge integer": count_with(lambda ast: laplace(ast).update(k=10**30)),
    "5000 digits": document(count_041()).replace('"scale": 1.0', '"scale": ' + "9" * 5_000),
    "float overflow": document(count_041()).replace('"scale": 1.0', '"scale": 1e999'),
    "ddof 1e6": count_with(
        lambda ast: ast["lhs"].update(
            rhs={
                "_type": "constructor",
                "module": "transformations",
                "func": "then_variance",
                "kwargs": {"ddof": 10**6},
            }
        )
    ),
    # wrong types
    "scale string": count_with(lambda ast: laplace(ast).update(scale="1.0")),
    "scale bool": count_with(lambda ast: laplace(ast).update(scale=True)),
    "scale negative": count_with(lambda ast: laplace(ast).update(scale=-1.0)),
    "scale NaN": document(count_041()).replace('"scale": 1.0', '"scale": NaN'),
    "scale Infinity": document(count_041()).replace('"scale": 1.0', '"scale": Infinity'),
    "bounds of three": count_with(
        lambda ast: ast["lhs"].update(
            rhs={
                "_type": "constructor",
                "module": "transformations",
                "func": "then_clamp",
                "kwargs": {"bounds": [1, 2, 3]},
            }
        )
    ),
    "bounds string": count_with(
        lambda ast: ast["lhs"].update(
            rhs={
                "_type": "constructor",
                "module": "transformations",
                "func": "then_clamp",
                "kwargs": {"bounds": "0,1"},
            }
        )
    ),
    "col_names string": count_with(lambda ast: split(ast).update(col_names="species,island")),
    "key integer": count_with(lambda ast: select(ast).update(key=3)),
    "kwargs list": count_with(lambda ast: ast["rhs"].update(kwargs=[1.0])),
    "args object": count_with(lambda ast: ast["rhs"].update(args={"scale": 1.0})),
    "too many args": count_with(lambda ast: ast["rhs"].update(args=[1.0, None, "f64", 4])),
    "argument twice": count_with(lambda ast: ast["rhs"].update(args=[2.0])),
    "unknown argument": count_with(lambda ast: laplace(ast).update(function="lambda x: x")),
    "missing argument": count_with(lambda ast: ast["rhs"].update(kwargs={})),
    "nested categories": count_with(
        lambda ast: ast["lhs"].update(
            rhs={
                "_type": "constructor",
                "module": "transformations",
                "func": "then_count_by_categories",
                "kwargs": {"categories": [[1]]},
            }
        )
    ),
    "mixed categories": count_with(
        lambda ast: ast["lhs"].update(
            rhs={
                "_type": "constructor",
                "module": "transformations",
                "func": "then_count_by_categories",
                "kwargs": {"categories": ["a", 1]},
            }
        )
    ),
    "dict constant": count_with(
        lambda ast: ast["lhs"].update(
            rhs={
                "_type": "constructor",
                "module": "transformations",
                "func": "then_impute_constant",
                "kwargs": {"constant": {"a": 1}},
            }
        )
    ),
    "delta above 1": on_count(constructor("combinators", "make_fix_delta", 1.5)),
    # structure
    "not JSON": "make_count()",
    "top-level list": json.dumps([count_041()]),
    "no version": json.dumps({"ast": count_041()}),
    "extra top-level key": json.dumps({"version": "0.10.0", "ast": count_041(), "exec": "x"}),
    "version 0.9": document(count_041(), version="0.9.0"),
    "version development": document(count_041(), version="development"),
    "ast string": document("make_count"),
    "unknown node type": document({"_type": "lambda", "body": "x"}),
    "extra node key": count_with(lambda ast: ast.update(code="print(1)")),
    "then at top level": document(constructor("measurements", "then_laplace", scale=1.0)),
    "make_ as rhs": count_with(lambda ast: ast["rhs"].update(func="make_laplace")),
    "measurement as lhs": document(
        {
            "_type": "partial_chain",
            "lhs": count_041(),
            "rhs": constructor("measurements", "then_laplace", scale=1.0),
        }
    ),
    "domain as chain rhs": document(
        {"_type": "chain", "lhs": count_041()["lhs"], "rhs": constructor("domains", "atom_domain", T="f64")}
    ),
    "transformation only": document(count_041()["lhs"]),
    "reads a number": document(
        constructor(
            "measurements",
            "make_laplace",
            constructor("domains", "atom_domain", T="f64"),
            constructor("metrics", "absolute_distance", T="f64"),
            scale=1.0,
        )
    ),
    # deep nesting and many nodes
    "nested arrays": "[" * 99_000 + "]" * 99_000,
    "nested objects": '{"a":' * 2_000 + "1" + "}" * 2_000,
    "nested chains": nested_chains(100),
    "many nodes": count_with(
        lambda ast: ast["lhs"].update(
            rhs={
                "_type": "constructor",
                "module": "transformations",
                "func": "then_count_by_categories",
                "kwargs": {"categories": [[] for _ in range(2_000)]},
            }
        )
    ),
    # the dataset is the server's: separator and columns are the metadata's
    "separator": count_with(lambda ast: split(ast).update(separator=";")),
    "columns reordered": count_with(lambda ast: split(ast)["col_names"]["_items"].reverse()),
    "unknown column": count_with(lambda ast: select(ast).update(key="password")),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("opendp-hostile-server"), "--demo")
    yield server
    stop_server(server)


def observable_state(server: LiveServer) -> tuple[Any, ...]:
    client = Client(server.url, USER, DATASET)
    return client.get_total_spent_budget(), client.get_previous_queries()


def assert_refused(server: LiveServer, opendp_json: str, endpoint: str = "opendp_query") -> str:
    """Send the payload raw; expect a 4xx Lomas error and no change to the budget or the history."""
    before = observable_state(server)
    body = {"dataset_name": DATASET, "opendp_json": opendp_json, "fixed_delta": 1e-5}
    if endpoint.startswith("dummy"):
        body.update(dummy_nb_rows=10, dummy_seed=1)
    response = httpx.post(f"{server.url}/{endpoint}", headers={"user-name": USER}, json=body, timeout=30)
    assert 400 <= response.status_code < 500, response.text[:500]
    error = response.json()
    assert error["type"] in ("InvalidQueryException", "ExternalLibraryException")
    assert len(error["message"]) < 3_000  # says what is wrong without echoing the payload
    assert observable_state(server) == before
    return str(error["message"])


def test_a_genuine_pipeline_is_accepted_by_the_same_server(server: LiveServer) -> None:
    """The refusals below are the payloads' doing: the unedited 0.4.1 count runs here."""
    response = httpx.post(
        f"{server.url}/estimate_opendp_cost",
        headers={"user-name": USER},
        json={"dataset_name": DATASET, "opendp_json": document(count_041())},
    )
    assert response.json() == {"epsilon": 1.0, "delta": 0.0}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name", CODE_EXECUTION)
def test_code_execution_attempts_run_nothing(
    server: LiveServer, tmp_path: Path, name: str, endpoint: str
) -> None:
    marker = tmp_path / "pwned"
    assert_refused(server, code_execution(str(marker))[name], endpoint)
    assert not marker.exists()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_payloads_are_refused_before_anything_runs(server: LiveServer, name: str) -> None:
    assert_refused(server, HOSTILE[name])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("os.system", "module 'os' is not allowed"),
        ("enable_features", "'enable_features' is not an allowed OpenDP 0.10 constructor"),
        ("user measurement", "'make_user_measurement' is not an allowed"),
        ("TOA PyObject", "type 'PyObject' is not allowed here"),
        ("resize 1e12", "expected an integer between 0 and 688"),
        ("resize 1e6 on 344 rows", "expected an integer between 0 and 688"),
        ("long document", "the limit is 200000"),
        ("nested chains", "nested deeper than 64 levels"),
        ("nested arrays", "nested too deeply"),
        ("many nodes", "more than 1000 JSON objects and arrays"),
        ("scale NaN", "not valid JSON"),
        ("separator", "separator must be ','"),
        ("reads a number", "start it with make_split_dataframe"),
    ],
)
def test_refusals_say_what_to_fix(server: LiveServer, tmp_path: Path, name: str, message: str) -> None:
    payloads = {**code_execution(str(tmp_path / "pwned")), **HOSTILE}
    assert message in assert_refused(server, payloads[name])


def test_requests_that_are_not_pipelines_are_refused_by_the_wire_model(server: LiveServer) -> None:
    for opendp_json in ({"version": "0.10.0", "ast": count_041()}, "", None):
        response = httpx.post(
            f"{server.url}/opendp_query",
            headers={"user-name": USER},
            json={"dataset_name": DATASET, "opendp_json": opendp_json},
        )
        assert response.status_code == 422 and "opendp_json" in response.json()["message"]
    assert observable_state(server)[1] == []
