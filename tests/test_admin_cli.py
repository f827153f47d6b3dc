"""`lomas-admin` against a temporary SQLite store: what administrators see, and what the store holds."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from conftest import start_server, stop_server
from typer.testing import CliRunner, Result

from lomas.admin.cli import app
from lomas.server.config import CONFIG_FILE_ENV
from lomas.server.demo.catalog import DATASETS_DIR
from lomas.server.ledger import Ledger
from lomas.server.store.db import make_engine, session_factory
from lomas.server.store.service import AdminStore

IRIS_CSV = DATASETS_DIR / "iris.csv"
IRIS_METADATA = DATASETS_DIR / "iris_metadata.yaml"
PATIENTS_CSV = DATASETS_DIR / "patients.csv"
PATIENTS_METADATA = DATASETS_DIR / "patients_metadata.yaml"


@pytest.fixture(autouse=True)
def _no_lomas_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests choose the store themselves; LOMAS_* variables of the caller must not leak in.

    `load_settings(config)` records the config file in the environment, so the variable is put under
    monkeypatch's care (set, then removed) to be restored after each test.
    """
    monkeypatch.setenv(CONFIG_FILE_ENV, "")
    for key in [key for key in os.environ if key.startswith("LOMAS_")]:
        monkeypatch.delenv(key)


class Admin:
    """Runs `lomas-admin --store-url URL ...` in-process and reads the store it wrote."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()
        self.engine = make_engine(url)
        self.store = AdminStore(session_factory(self.engine))

    def __call__(self, *args: str | Path, code: int = 0) -> Result:
        result = self.runner.invoke(app, ["--store-url", self.url, *map(str, args)])
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        if code == 0:
            assert result.exception is None, result.exception
        return result

    def fails(self, *args: str | Path) -> str:
        """Run a command that must be refused with exit code 2; return its error message."""
        result = self(*args, code=2)
        assert result.stderr.startswith("Error: ") or "Usage:" in result.stderr, result.output
        return " ".join(result.stderr.split())  # rich may not wrap, but compare text, not layout

    def state(self) -> dict[str, Any]:
        store = self.store
        return {
            "users": {name: store.may_query(name) for name in store.list_users()},
            "grants": sorted(
                (
                    g.user_name,
                    g.dataset_name,
                    g.initial_epsilon,
                    g.initial_delta,
                    g.spent_epsilon,
                    g.spent_delta,
                    g.revoked,
                )
                for g in store.grants()
            ),
            "datasets": {
                name: (store.dataset(name).access, store.dataset(name).metadata, store.dataset(name).version)
                for name in store.list_datasets()
            },
        }


def make_admin(folder: Path) -> Admin:
    return Admin(f"sqlite:///{folder / 'lomas.db'}")


@pytest.fixture()
def admin(tmp_path: Path) -> Iterator[Admin]:
    runner = make_admin(tmp_path / "store")
    yield runner
    runner.engine.dispose()


@pytest.fixture()
def iris(admin: Admin) -> Admin:
    """A store with user Alice, dataset IRIS and a grant of Alice on IRIS."""
    admin("users", "add", "Alice")
    admin("datasets", "add", "IRIS", "--metadata", IRIS_METADATA, "--path", IRIS_CSV)
    admin("grants", "add", "Alice", "IRIS", "--epsilon", "10", "--delta", "0.005")
    return admin


def row(output: str, *cells: str) -> str:
    """The output line (table row) where `cells` appear in this order."""
    for line in output.splitlines():
        position = 0
        for cell in cells:
            position = line.find(cell, position)
            if position < 0:
                break
            position += len(cell)
        else:
            return line
    raise AssertionError(f"no line with {cells} in:\n{output}")


def write_yaml(path: Path, document: Any) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def spend(admin: Admin, user: str, dataset: str, epsilon: float, delta: float) -> None:
    """Charge a query through the server's ledger (the CLI cannot spend budget)."""
    ledger = Ledger(session_factory(admin.engine), reservation_timeout_s=3600)
    reservation = ledger.reserve(
        user, dataset, "smartnoise_sql", {"query_str": "SELECT COUNT(*) FROM df"}, epsilon, delta
    )
    ledger.charge(reservation, {"res_type": "smartnoise_sql", "df": {}})


# -- users --------------------------------------------------------------------------------------
def test_users_add_list_show_and_duplicate(admin: Admin) -> None:
    assert admin("users", "add", "Alice").output.strip() == "Added user 'Alice'."
    assert "may not query" in admin("users", "add", "Bob", "--no-query").output
    assert admin.state()["users"] == {"Alice": True, "Bob": False}

    assert admin.fails("users", "add", "Alice") == "Error: User 'Alice' already exists."
    assert "must not be empty" in admin.fails("users", "add", " Carol")

    listing = admin("users", "list").output
    row(listing, "user", "may query", "active grants")
    row(listing, "Alice", "yes", "0")
    row(listing, "Bob", "no", "0")
    assert "may query." in admin("users", "show", "Alice").output
    assert "No grants." in admin("users", "show", "Alice").output
    assert admin.fails("users", "show", "Nobody") == "Error: No user named 'Nobody'."


def test_users_set_may_query(admin: Admin) -> None:
    admin("users", "add", "Alice")
    assert "may no longer query" in admin("users", "set-may-query", "Alice", "false").output
    assert admin.store.may_query("Alice") is False
    admin("users", "set-may-query", "Alice", "true")
    assert admin.store.may_query("Alice") is True
    assert "No user named 'Bob'" in admin.fails("users", "set-may-query", "Bob", "true")
    assert "true|false" in admin("users", "set-may-query", "Alice", "maybe", code=2).stderr


def test_users_show_lists_grants_with_budgets(iris: Admin) -> None:
    spend(iris, "Alice", "IRIS", 1.5, 0.001)
    output = iris("users", "show", "Alice").output
    assert "User 'Alice': may query." in output
    row(output, "IRIS", "10.0", "0.005", "1.5", "0.001", "8.5", "0.004", "active")


def test_delete_is_refused_while_grants_exist_then_cascades(iris: Admin) -> None:
    spend(iris, "Alice", "IRIS", 1.0, 0.0)
    message = iris.fails("users", "delete", "Alice")
    assert "Cannot delete user 'Alice': it has 1 grant(s) and 1 archived queries" in message
    assert "Cannot delete dataset 'IRIS'" in iris.fails("datasets", "delete", "IRIS")
    assert iris.state()["users"] == {"Alice": True}

    assert iris("users", "delete", "Alice", "--cascade").output.strip() == "Deleted user 'Alice'."
    assert iris.state()["users"] == {} and iris.state()["grants"] == []
    assert iris.store.archives(statuses=("charged", "released", "reserved")) == []
    iris("datasets", "delete", "IRIS")  # nothing depends on it any more
    assert iris.store.list_datasets() == []
    assert "No dataset named 'IRIS'" in iris.fails("datasets", "delete", "IRIS")
    assert "No user named 'Alice'" in iris.fails("users", "delete", "Alice")


# -- datasets -----------------------------------------------------------------------------------
def test_datasets_add_stores_an_absolute_path_and_shows_it(
    admin: Admin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(IRIS_CSV, tmp_path / "iris.csv")
    monkeypatch.chdir(tmp_path)
    output = admin("datasets", "add", "IRIS", "--metadata", IRIS_METADATA, "--path", "iris.csv").output
    assert output.strip() == (
        f"Registered dataset 'IRIS' (version 1): data at {tmp_path / 'iris.csv'} "
        "(checked: 150 rows match the metadata)."
    )
    record = admin.store.dataset("IRIS")
    assert record.access == {
        "kind": "local",
        "path": str(tmp_path / "iris.csv"),
        "format": "csv",
        "serve": "memory",
    }
    assert record.metadata.rows == 150 and record.metadata.censor_dims is False

    listing = admin("datasets", "list").output
    row(listing, "dataset", "version", "rows", "columns", "kind", "data")
    row(listing, "IRIS", "1", "150", "5", "local", str(tmp_path / "iris.csv"))
    shown = admin("datasets", "show", "IRIS").output
    row(shown, "data", str(tmp_path / "iris.csv"))
    row(shown, "access.path", str(tmp_path / "iris.csv"))
    row(shown, "access.serve", "memory")
    row(shown, "censor_dims", "no")
    row(shown, "species", "string (categorical)", "categories=[setosa, versicolor, virginica]")
    row(shown, "sepal_length", "float", "lower=4.0 upper=8.0")
    assert admin.fails("datasets", "show", "PENGUIN") == "Error: No dataset named 'PENGUIN'."


def test_datasets_add_duplicate_and_replace(admin: Admin) -> None:
    admin("datasets", "add", "IRIS", "--metadata", IRIS_METADATA, "--path", IRIS_CSV)
    message = admin.fails("datasets", "add", "IRIS", "--metadata", IRIS_METADATA, "--path", IRIS_CSV)
    assert "Dataset 'IRIS' already exists" in message
    output = admin(
        "datasets", "add", "IRIS", "--metadata", IRIS_METADATA, "--path", IRIS_CSV, "--replace"
    ).output
    assert "(version 2)" in output
    assert admin.store.dataset("IRIS").version == 2


def test_datasets_add_parquet_with_explicit_format(admin: Admin, tmp_path: Path) -> None:
    data = tmp_path / "iris.data"
    pd.read_csv(IRIS_CSV).to_parquet(data)
    admin("datasets", "add", "IRIS", "--metadata", IRIS_METADATA, "--path", data, "--format", "parquet")
    assert admin.store.dataset("IRIS").access["format"] == "parquet"
    # Read as CSV (the default for this file name), the same file does not fit the metadata.
    message = admin.fails("datasets", "add", "IRIS2", "--metadata", IRIS_METADATA, "--path", data)
    assert "Refusing to register 'IRIS2'" in message and "as csv" in message


def test_bad_metadata_file_names_the_offending_fields(admin: Admin, tmp_path: Path) -> None:
    metadata = yaml.safe_load(IRIS_METADATA.read_text())
    metadata["columns"]["sepal_length"]["lower"] = "small"
    metadata["columns"]["species"]["cardinality"] = 4
    metadata["rows"] = 0
    bad = write_yaml(tmp_path / "bad.yaml", metadata)
    message = admin.fails("datasets", "add", "IRIS", "--metadata", bad, "--path", IRIS_CSV)
    assert f"Metadata file {bad} has 3 problem(s); nothing was written" in message
    assert "- rows: Input should be greater than 0" in message
    assert "- columns.sepal_length.lower: Input should be a valid number" in message
    assert "- columns.species: Number of categories should be equal to cardinality." in message
    assert admin.store.list_datasets() == []

    (tmp_path / "broken.yaml").write_text("rows: [1, 2\n")
    assert "not valid YAML" in admin.fails(
        "datasets", "add", "X", "--metadata", tmp_path / "broken.yaml", "--path", IRIS_CSV
    )
    assert "cannot read it" in admin.fails(
        "datasets", "add", "X", "--metadata", tmp_path / "nope.yaml", "--path", IRIS_CSV
    )


def test_data_not_matching_metadata_is_refused_unless_unchecked(admin: Admin, tmp_path: Path) -> None:
    message = admin.fails("datasets", "add", "PATIENTS", "--metadata", PATIENTS_METADATA, "--path", IRIS_CSV)
    assert f"Refusing to register 'PATIENTS': {IRIS_CSV} does not match its metadata" in message
    assert "columns missing from the data: admission_date, age," in message and "--no-check" in message
    wrong_types = tmp_path / "iris_text.csv"
    pd.read_csv(IRIS_CSV).assign(sepal_length="long").to_csv(wrong_types, index=False)
    message = admin.fails("datasets", "add", "IRIS", "--metadata", IRIS_METADATA, "--path", wrong_types)
    assert f"Refusing to register 'IRIS': {wrong_types} does not match its metadata" in message
    assert "columns that cannot be cast to their metadata type: sepal_length" in message
    assert "long" not in message.replace("--no-check", "")
    message = admin.fails(
        "datasets", "add", "IRIS", "--metadata", IRIS_METADATA, "--path", tmp_path / "gone.csv"
    )
    assert "Data file not found" in message
    assert admin.store.list_datasets() == []

    admin(
        "datasets", "add", "LATER", "--metadata", IRIS_METADATA, "--path", tmp_path / "gone.csv", "--no-check"
    )
    assert admin.store.dataset("LATER").access["path"] == str(tmp_path / "gone.csv")


# -- grants -------------------------------------------------------------------------------------
def test_grants_add_set_budget_revoke_and_list(iris: Admin) -> None:
    iris("users", "add", "Bob")
    iris("datasets", "add", "PATIENTS", "--metadata", PATIENTS_METADATA, "--path", PATIENTS_CSV)
    output = iris("grants", "add", "Bob", "PATIENTS", "--epsilon", "2.5", "--delta", "1e-05").output
    assert output.strip() == "Granted 'Bob' a budget of epsilon=2.5, delta=1e-05 on 'PATIENTS'."
    spend(iris, "Alice", "IRIS", 0.25, 0.0)

    listing = iris("grants", "list").output
    row(listing, "Alice", "IRIS", "10.0", "0.005", "0.25", "0.0", "9.75", "0.005", "active")
    row(listing, "Bob", "PATIENTS", "2.5", "1e-05", "0.0", "0.0", "2.5", "1e-05", "active")
    assert "Bob" not in iris("grants", "list", "--user", "Alice").output
    assert "Alice" not in iris("grants", "list", "--dataset", "PATIENTS").output

    iris("grants", "set-budget", "Alice", "IRIS", "--epsilon", "20", "--delta", "0.01")
    row(
        iris("grants", "list", "--user", "Alice").output,
        "Alice",
        "IRIS",
        "20.0",
        "0.01",
        "0.25",
        "0.0",
        "19.75",
    )
    assert "Revoked 'Alice'" in iris("grants", "revoke", "Alice", "IRIS").output
    row(iris("grants", "list").output, "Alice", "IRIS", "20.0", "0.01", "0.25", "revoked")
    # A revoked grant comes back with its spending intact.
    iris("grants", "add", "Alice", "IRIS", "--epsilon", "5", "--delta", "0.001")
    row(
        iris("grants", "list").output,
        "Alice",
        "IRIS",
        "5.0",
        "0.001",
        "0.25",
        "0.0",
        "4.75",
        "0.001",
        "active",
    )


def test_grant_errors(iris: Admin) -> None:
    assert "No dataset named 'PENGUIN'" in iris.fails(
        "grants", "add", "Alice", "PENGUIN", "--epsilon", "1", "--delta", "0"
    )
    assert "No user named 'Zoe'" in iris.fails(
        "grants", "add", "Zoe", "IRIS", "--epsilon", "1", "--delta", "0"
    )
    assert "already has a grant" in iris.fails(
        "grants", "add", "Alice", "IRIS", "--epsilon", "1", "--delta", "0"
    )
    assert "epsilon >= 0 and 0 <= delta <= 1" in iris.fails(
        "grants", "set-budget", "Alice", "IRIS", "--epsilon", "-1", "--delta", "0"
    )
    assert "epsilon >= 0 and 0 <= delta <= 1" in iris.fails(
        "grants", "set-budget", "Alice", "IRIS", "--epsilon", "1", "--delta", "2"
    )
    iris("users", "add", "Bob")
    assert "'Bob' has no grant on 'IRIS'" in iris.fails("grants", "revoke", "Bob", "IRIS")
    assert "No user named 'Zoe'" in iris.fails("grants", "list", "--user", "Zoe")
    assert "No dataset named 'X'" in iris.fails("grants", "list", "--dataset", "X")
    assert "Missing option '--delta'" in iris("grants", "add", "Bob", "IRIS", "--epsilon", "1", code=2).output
    assert iris.state()["grants"] == [("Alice", "IRIS", 10.0, 0.005, 0.0, 0.0, False)]


# -- archives -----------------------------------------------------------------------------------
def test_archives_list_as_table_and_json(iris: Admin) -> None:
    assert iris("archives", "list").output.strip() == "No queries."
    spend(iris, "Alice", "IRIS", 0.5, 0.0001)
    ledger = Ledger(session_factory(iris.engine), reservation_timeout_s=3600)
    ledger.release(ledger.reserve("Alice", "IRIS", "opendp", {"opendp_json": {}}, 1.0, 0.0))

    table = iris("archives", "list").output
    row(table, "id", "time (UTC)", "user", "dataset", "library", "ε", "δ", "status", "error")
    row(table, "1", "Alice", "IRIS", "smartnoise_sql", "0.5", "0.0001", "charged")
    row(table, "2", "Alice", "IRIS", "opendp", "1.0", "0.0", "released")

    entries = json.loads(iris("archives", "list", "--user", "Alice", "--json").output)
    assert [(e["id"], e["library"], e["status"], e["epsilon"]) for e in entries] == [
        (1, "smartnoise_sql", "charged", 0.5),
        (2, "opendp", "released", 1.0),
    ]
    assert entries[0]["user"] == "Alice" and entries[0]["dataset"] == "IRIS" and entries[0]["error"] is None
    assert entries[0]["time"].endswith("+00:00")
    assert entries[0]["client_input"] == {"query_str": "SELECT COUNT(*) FROM df"}
    iris("users", "add", "Bob")
    assert json.loads(iris("archives", "list", "--user", "Bob", "--json").output) == []
    assert "No dataset named 'X'" in iris.fails("archives", "list", "--dataset", "X")


# -- import -------------------------------------------------------------------------------------
def dataset_collection(folder: Path) -> Path:
    """A 0.4 dataset collection with relative paths, like the ones Lomas 0.4 deployments kept."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in (IRIS_CSV, IRIS_METADATA, PATIENTS_CSV, PATIENTS_METADATA):
        shutil.copy(source, folder / source.name)
    return write_yaml(
        folder / "dataset_collection.yaml",
        {
            "datasets": [
                {
                    "dataset_name": name,
                    "dataset_access": {"database_type": "PATH_DB", "path": f"{stem}.csv"},
                    "metadata_access": {"database_type": "PATH_DB", "path": f"{stem}_metadata.yaml"},
                }
                for name, stem in (("IRIS", "iris"), ("PATIENTS", "patients"))
            ]
        },
    )


def user_collection(path: Path, alice_epsilon: float = 10.0, bob_may_query: bool = True) -> Path:
    return write_yaml(
        path,
        {
            "users": [
                {
                    "user_name": "Alice",
                    "may_query": True,
                    "datasets_list": [
                        {
                            "dataset_name": "IRIS",
                            "initial_epsilon": alice_epsilon,
                            "initial_delta": 0.005,
                            "total_spent_epsilon": 0.0,
                            "total_spent_delta": 0.0,
                        },
                        {"dataset_name": "PATIENTS", "initial_epsilon": 1.0, "initial_delta": 0.0001},
                    ],
                },
                {"user_name": "Bob", "may_query": bob_may_query, "datasets_list": []},
            ]
        },
    )


def test_import_datasets_and_users_then_again_changes_nothing(admin: Admin, tmp_path: Path) -> None:
    datasets_file = dataset_collection(tmp_path / "collections")
    users_file = user_collection(tmp_path / "collections" / "user_collection.yaml")

    output = admin("import", "datasets", datasets_file).output
    assert f"dataset 'IRIS': registered ({tmp_path / 'collections' / 'iris.csv'})" in output
    assert "2 change(s)" in output
    output = admin("import", "users", users_file).output
    assert "user 'Alice': created (may_query=True)" in output
    assert "grant 'Alice' on 'IRIS': created (epsilon=10.0, delta=0.005)" in output
    assert "user 'Bob': created" in output
    state = admin.state()
    assert state["users"] == {"Alice": True, "Bob": True}
    assert state["grants"] == [
        ("Alice", "IRIS", 10.0, 0.005, 0.0, 0.0, False),
        ("Alice", "PATIENTS", 1.0, 0.0001, 0.0, 0.0, False),
    ]
    access = state["datasets"]["IRIS"][0]
    assert access == {
        "kind": "local",
        "path": str(tmp_path / "collections" / "iris.csv"),
        "format": "csv",
        "serve": "memory",
    }
    row(admin("grants", "list").output, "Alice", "PATIENTS", "1.0", "0.0001", "0.0", "0.0", "1.0", "0.0001")

    assert "Nothing to change" in admin("import", "datasets", datasets_file).output
    assert "Nothing to change" in admin("import", "users", users_file).output
    assert admin.state() == state  # no duplicates, no new dataset versions


def test_import_of_a_changed_file_updates_what_changed(admin: Admin, tmp_path: Path) -> None:
    datasets_file = dataset_collection(tmp_path / "collections")
    admin("import", "datasets", datasets_file)
    admin("import", "users", user_collection(tmp_path / "users.yaml"))
    spend(admin, "Alice", "IRIS", 2.0, 0.0)

    output = admin(
        "import", "users", user_collection(tmp_path / "users.yaml", alice_epsilon=20.0, bob_may_query=False)
    ).output
    assert "grant 'Alice' on 'IRIS': initial budget set to epsilon=20.0, delta=0.005" in output
    assert "user 'Bob': may_query set to False" in output and "2 change(s)" in output
    assert admin.store.may_query("Bob") is False
    # The spending recorded by the ledger is untouched by the import (the file says 0).
    row(
        admin("grants", "list", "--user", "Alice").output,
        "Alice",
        "IRIS",
        "20.0",
        "0.005",
        "2.0",
        "0.0",
        "18.0",
    )

    metadata = yaml.safe_load((tmp_path / "collections" / "iris_metadata.yaml").read_text())
    metadata["censor_dims"] = True
    write_yaml(tmp_path / "collections" / "iris_metadata.yaml", metadata)
    output = admin("import", "datasets", datasets_file).output
    assert output.splitlines()[0] == "dataset 'IRIS': metadata changed, now version 2"
    assert admin.store.dataset("IRIS").metadata.censor_dims is True
    assert admin.store.dataset("PATIENTS").version == 1


def test_import_users_lists_every_problem_with_its_location(iris: Admin, tmp_path: Path) -> None:
    before = iris.state()
    bad = write_yaml(
        tmp_path / "users.yaml",
        {
            "users": [
                {
                    "user_name": "Carol",
                    "may_query": True,
                    "datasets_list": [{"dataset_name": "IRIS", "initial_epsilon": -1, "initial_delta": 0.5}],
                },
                {
                    "user_name": "Dan",
                    "datasets_list": [{"dataset_name": "IRIS", "initial_epsilon": 1, "initial_delta": 2}],
                },
                {"user_name": "Erin", "may_query": True, "datasets_list": [], "email": "erin@example.org"},
            ]
        },
    )
    message = iris.fails("import", "users", bad)
    assert f"{bad} has 4 problem(s); nothing was written" in message
    assert (
        "- users[0].datasets_list[0].initial_epsilon: Input should be greater than or equal to 0" in message
    )
    assert "- users[1].may_query: Field required" in message
    assert "- users[1].datasets_list[0].initial_delta: Input should be less than or equal to 1" in message
    assert "- users[2].email: Extra inputs are not permitted" in message

    unknown = write_yaml(
        tmp_path / "unknown.yaml",
        {
            "users": [
                {
                    "user_name": "Carol",
                    "may_query": True,
                    "datasets_list": [{"dataset_name": "PENGUIN", "initial_epsilon": 1, "initial_delta": 0}],
                },
                {"user_name": "Carol", "may_query": False},
            ]
        },
    )
    assert "user_name 'Carol' appears more than once (users[0], users[1])" in iris.fails(
        "import", "users", unknown
    )
    unknown = write_yaml(
        tmp_path / "unknown.yaml",
        {
            "users": [
                {
                    "user_name": "Carol",
                    "may_query": True,
                    "datasets_list": [
                        {"dataset_name": "PENGUIN", "initial_epsilon": 1, "initial_delta": 0},
                        {
                            "dataset_name": "IRIS",
                            "initial_epsilon": 1,
                            "initial_delta": 0,
                            "total_spent_epsilon": 0.5,
                        },
                    ],
                }
            ]
        },
    )
    message = iris.fails("import", "users", unknown)
    assert "- users[0].datasets_list[0].dataset_name: no dataset named 'PENGUIN' in the store" in message
    assert (
        "- users[0].datasets_list[1].total_spent_epsilon: "
        "the file says 0.5 was spent but the store records 0.0" in message
    )
    assert iris.state() == before

    (tmp_path / "broken.yaml").write_text("users:\n  - user_name: [\n")
    assert "line 3" in iris.fails("import", "users", tmp_path / "broken.yaml")
    assert "does not exist" in iris("import", "users", tmp_path / "missing.yaml", code=2).stderr


def test_import_datasets_lists_every_problem_with_its_location(admin: Admin, tmp_path: Path) -> None:
    folder = tmp_path / "collections"
    dataset_collection(folder)
    metadata = yaml.safe_load(IRIS_METADATA.read_text())
    metadata["columns"]["petal_width"]["upper"] = "wide"
    write_yaml(folder / "bad_metadata.yaml", metadata)
    bad = write_yaml(
        folder / "bad.yaml",
        {
            "datasets": [
                {
                    "dataset_name": "IRIS",
                    "dataset_access": {"database_type": "PATH_DB", "path": "iris.csv"},
                    "metadata_access": {"database_type": "PATH_DB", "path": "bad_metadata.yaml"},
                },
                {
                    "dataset_name": "CLOUD",
                    "dataset_access": {
                        "database_type": "S3_DB",
                        "endpoint_url": "http://localhost:9000",
                        "bucket": "data",
                        "key": "cloud.csv",
                        "credentials_name": "s3",
                    },
                    "metadata_access": {"database_type": "PATH_DB", "path": "iris_metadata.yaml"},
                },
                {
                    "dataset_name": "MISMATCH",
                    "dataset_access": {"database_type": "PATH_DB", "path": "iris.csv"},
                    "metadata_access": {"database_type": "PATH_DB", "path": "patients_metadata.yaml"},
                },
                {
                    "dataset_name": "GONE",
                    "dataset_access": {"database_type": "PATH_DB", "path": "iris.csv"},
                    "metadata_access": {"database_type": "PATH_DB", "path": "gone_metadata.yaml"},
                },
                {
                    "dataset_name": "IRIS2",
                    "dataset_access": {"database_type": "PATH_DB", "path": "iris.csv"},
                    "metadata_access": {"database_type": "PATH_DB", "path": "iris_metadata.yaml"},
                },
            ]
        },
    )
    message = admin.fails("import", "datasets", bad)
    assert f"{bad} has 4 problem(s); nothing was written" in message
    assert (
        f"- datasets[0].metadata_access ({folder / 'bad_metadata.yaml'}) -> columns.petal_width.upper: "
        "Input should be a valid number" in message
    )
    assert (
        "- datasets[1].dataset_access: No S3 credentials named 's3' in the server secrets: add s3.s3 "
        "(access_key_id, secret_access_key) to the secrets file" in message
    )
    assert (
        f"- datasets[2].dataset_access: {folder / 'iris.csv'} does not match its metadata: "
        "columns missing from the data: admission_date" in message
    )
    assert f"- datasets[3].metadata_access ({folder / 'gone_metadata.yaml'}): cannot read it" in message
    assert admin.store.list_datasets() == []  # IRIS2 was fine, but nothing is written

    shape = write_yaml(
        folder / "shape.yaml",
        {
            "datasets": [
                {
                    "dataset_name": "A",
                    "dataset_access": {"database_type": "MONGO_DB"},
                    "metadata_access": {"path": "x"},
                },
                {"dataset_name": "A", "metadata_access": {"database_type": "PATH_DB"}},
                {
                    "dataset_name": "B",
                    "dataset_access": {"database_type": "S3_DB", "bucket": "b"},
                    "metadata_access": {"database_type": "PATH_DB", "path": "iris_metadata.yaml"},
                },
            ]
        },
    )
    message = admin.fails("import", "datasets", shape)
    assert (
        "- datasets[0].dataset_access: Input should be a 0.4 access (database_type: PATH_DB or S3_DB) or a "
        "Lomas access (kind: local, http, s3 or postgresql)" in message
    )
    assert (
        "- datasets[0].metadata_access: Unable to extract tag using discriminator 'database_type'" in message
    )
    assert "- datasets[1].dataset_access: Field required" in message
    assert "- datasets[1].metadata_access.path: Field required" in message
    assert "- datasets[2].dataset_access.endpoint_url: Field required" in message
    assert "- datasets[2].dataset_access.key: Field required" in message


def test_spent_budget_in_a_file_must_match_the_ledger(iris: Admin, tmp_path: Path) -> None:
    spend(iris, "Alice", "IRIS", 1.25, 0.001)
    exported = tmp_path / "users.yaml"
    iris("export", "users", exported)
    written = yaml.safe_load(exported.read_text())["users"][0]["datasets_list"][0]
    assert (written["total_spent_epsilon"], written["total_spent_delta"]) == (1.25, 0.001)
    assert "Nothing to change" in iris("import", "users", exported).output  # equals what the store records

    fresh = make_admin(tmp_path / "fresh")
    fresh("datasets", "add", "IRIS", "--metadata", IRIS_METADATA, "--path", IRIS_CSV)
    message = fresh.fails("import", "users", exported)
    assert "total_spent_epsilon: the file says 1.25 was spent but the store records 0.0" in message
    assert "total_spent_delta: the file says 0.001 was spent but the store records 0.0" in message
    assert "cannot be imported" in message and fresh.state()["users"] == {}
    help_text = " ".join(fresh("import", "users", "--help").output.split())
    assert "Spent budgets belong to the store's ledger" in help_text
    fresh.engine.dispose()


# -- export -------------------------------------------------------------------------------------
def test_export_then_import_into_an_empty_store_reproduces_it(iris: Admin, tmp_path: Path) -> None:
    iris("users", "add", "Bob", "--no-query")
    iris("users", "add", "Dr. House")
    iris("datasets", "add", "PATIENTS", "--metadata", PATIENTS_METADATA, "--path", PATIENTS_CSV)
    parquet = tmp_path / "iris.bin"
    pd.read_csv(IRIS_CSV).to_parquet(parquet)
    iris(
        "datasets",
        "add",
        "IRIS/PARQUET",
        "--metadata",
        IRIS_METADATA,
        "--path",
        parquet,
        "--format",
        "parquet",
    )
    iris("grants", "add", "Dr. House", "PATIENTS", "--epsilon", "5", "--delta", "0.001")
    iris("grants", "add", "Bob", "IRIS/PARQUET", "--epsilon", "0.5", "--delta", "0")
    iris("grants", "add", "Bob", "PATIENTS", "--epsilon", "1", "--delta", "0")
    iris("grants", "revoke", "Bob", "PATIENTS")

    out = tmp_path / "export"
    assert "Wrote 3 dataset(s)" in iris("export", "datasets", out / "dataset_collection.yaml").output
    assert "Wrote 3 user(s)" in iris("export", "users", out / "user_collection.yaml").output
    written = yaml.safe_load((out / "dataset_collection.yaml").read_text())["datasets"]
    assert [entry["metadata_access"]["path"] for entry in written] == [
        "IRIS_metadata.yaml",
        "IRIS_PARQUET_metadata.yaml",
        "PATIENTS_metadata.yaml",
    ]
    assert written[1]["dataset_access"] == {
        "database_type": "PATH_DB",
        "path": str(parquet),
        "format": "parquet",
    }
    assert written[0]["dataset_access"] == {"database_type": "PATH_DB", "path": str(IRIS_CSV)}
    assert yaml.safe_load((out / "PATIENTS_metadata.yaml").read_text())["censor_dims"] is True

    copy = make_admin(tmp_path / "copy")
    copy("import", "datasets", out / "dataset_collection.yaml")
    copy("import", "users", out / "user_collection.yaml")
    expected = iris.state()
    expected["grants"] = [grant for grant in expected["grants"] if not grant[-1]]  # revoked grants stay home
    assert copy.state() == expected
    assert "Nothing to change" in copy("import", "datasets", out / "dataset_collection.yaml").output
    copy.engine.dispose()


def test_export_of_an_empty_store(admin: Admin, tmp_path: Path) -> None:
    admin("export", "users", tmp_path / "users.yaml")
    admin("export", "datasets", tmp_path / "datasets.yaml")
    assert yaml.safe_load((tmp_path / "users.yaml").read_text()) == {"users": []}
    assert yaml.safe_load((tmp_path / "datasets.yaml").read_text()) == {"datasets": []}
    assert "Cannot write" in admin.fails("export", "users", tmp_path / "datasets.yaml" / "x.yaml")


# -- which store --------------------------------------------------------------------------------
def test_store_defaults_to_the_servers_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["--data-dir", str(tmp_path / "a"), "users", "add", "Alice"]).exit_code == 0
    assert (tmp_path / "a" / "lomas.db").is_file()
    result = runner.invoke(app, ["users", "list"], env={"LOMAS_DATA_DIR": str(tmp_path / "a")})
    row(result.output, "Alice", "yes")

    config = write_yaml(tmp_path / "lomas.yaml", {"admin_db_url": f"sqlite:///{tmp_path / 'b.db'}"})
    assert runner.invoke(app, ["--config", str(config), "users", "add", "Bob"]).exit_code == 0
    assert AdminStore(session_factory(make_engine(f"sqlite:///{tmp_path / 'b.db'}"))).list_users() == ["Bob"]

    result = runner.invoke(app, ["--config", str(tmp_path / "none.yaml"), "users", "list"])
    assert result.exit_code == 2 and "Config file not found" in result.stderr
    result = runner.invoke(app, ["--store-url", "nosuchdb://x", "users", "list"])
    assert result.exit_code == 2 and "Error: Cannot open the admin store" in result.stderr
    result = runner.invoke(app, ["--store-url", "not a url", "users", "list"])
    assert result.exit_code == 2 and "Invalid store URL" in result.stderr


# -- the real server ----------------------------------------------------------------------------
def test_server_serves_what_the_cli_registered(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    runner = CliRunner()
    for args in (
        ["users", "add", "Alice"],
        ["datasets", "add", "IRIS", "--metadata", str(IRIS_METADATA), "--path", str(IRIS_CSV)],
        ["grants", "add", "Alice", "IRIS", "--epsilon", "3.5", "--delta", "0.0002"],
    ):
        result = runner.invoke(app, ["--data-dir", str(data_dir), *args])
        assert result.exit_code == 0, result.output
    server = start_server(data_dir, env={"LOMAS_AUTH__OPEN_MODE": "true"})
    try:
        answer = httpx.post(
            f"{server.url}/get_initial_budget", json={"dataset_name": "IRIS"}, headers={"user-name": "Alice"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"initial_epsilon": 3.5, "initial_delta": 0.0002}
        refused = httpx.post(
            f"{server.url}/get_initial_budget",
            json={"dataset_name": "IRIS"},
            headers={"user-name": "Mallory"},
        )
        assert refused.status_code == 403
    finally:
        stop_server(server)
