"""Datasets where their owners keep them: HTTP, S3, PostgreSQL and scanned Parquet, end to end.

One Lomas server reads PENGUIN from a local HTTP server (behind a token), a moto S3 server, a
PostgreSQL table and a Parquet file it only scans; every server runs on loopback and was started by
the tests. Researchers use the ordinary client. Broken accesses (unknown credentials, missing
buckets and keys, unreachable hosts, data that no longer matches its metadata) answer a clear error
and spend nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import opendp.prelude as dp
import pandas as pd
import polars as pl
import psycopg
import pytest
import yaml
from conftest import LiveServer, start_server, stop_server
from http_fixture import HttpServer
from palmerpenguins import load_penguins
from pg_fixture import PostgresCluster
from s3_fixture import s3_admin
from test_opendp import pipeline_041

from lomas.client import Client, InternalServerError, InvalidQueryError
from lomas.server.demo.catalog import DATASETS_DIR
from lomas.server.store.db import make_engine, session_factory, upgrade
from lomas.server.store.service import AdminStore

pytestmark = pytest.mark.postgres

COUNT = "SELECT COUNT(*) AS n FROM df"
BY_SPECIES = "SELECT species, COUNT(*) AS n, AVG(bill_length_mm) AS bill FROM df GROUP BY species"
S3_KEY_ID, S3_SECRET = "lomas-reader", "reader-secret-never-shown"
PG_PASSWORD = "pg-password-never-shown"
ROWS = 344
WORKING = ["PENGUIN_HTTP", "PENGUIN_S3", "PENGUIN_PG", "PENGUIN_SCAN"]


@dataclass
class Setup:
    server: LiveServer
    store: AdminStore
    pg_url: str
    data: Path


def _penguins() -> pd.DataFrame:
    return load_penguins()


def _metadata() -> dict:
    return yaml.safe_load((DATASETS_DIR / "penguin_metadata.yaml").read_text())


def _load_postgres(cluster: PostgresCluster, frame: pd.DataFrame) -> str:
    """A database with PENGUIN as table `stats.penguins`, readable by a password-protected role."""
    admin_url = cluster.create_database("penguins")
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute("CREATE SCHEMA stats")
        connection.execute(
            "CREATE TABLE stats.penguins (species text, island text, bill_length_mm numeric, "
            "bill_depth_mm real, flipper_length_mm integer, body_mass_g bigint, sex varchar(10), year smallint)"
        )
        with connection.cursor().copy("COPY stats.penguins FROM STDIN WITH (FORMAT csv)") as copy:
            integers = frame.astype({"flipper_length_mm": "Int64", "body_mass_g": "Int64"})
            copy.write(integers.to_csv(index=False, header=False))
        connection.execute(
            "CREATE TABLE stats.text_years AS SELECT species, island, bill_length_mm, "
            "bill_depth_mm, flipper_length_mm, body_mass_g, sex, CAST(year AS text) AS year FROM stats.penguins"
        )
        connection.execute(f"CREATE ROLE reader LOGIN PASSWORD '{PG_PASSWORD}'")
        connection.execute("GRANT USAGE ON SCHEMA stats TO reader")
        connection.execute("GRANT SELECT ON ALL TABLES IN SCHEMA stats TO reader")
    return admin_url


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
    http_server: HttpServer,
    s3_server: str,
    postgres_cluster: PostgresCluster,
    closed_port: int,
) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("connectors")
    frame = _penguins()
    frame.to_csv(http_server.root / "penguins.csv", index=False)  # also served at /private/, for a token
    frame.drop(columns=["sex"]).to_csv(http_server.root / "no_sex.csv", index=False)
    s3 = s3_admin(s3_server)
    s3.create_bucket(Bucket="stats")
    s3.put_object(Bucket="stats", Key="penguins.parquet", Body=frame.to_parquet(index=False))
    frame.to_parquet(work / "penguins.parquet", index=False)
    pd.concat([frame, frame]).to_parquet(work / "twice.parquet", index=False)  # more rows than declared
    frame.to_parquet(work / "replaced.parquet", index=False)
    frame.astype({"year": str}).to_parquet(work / "text_years.parquet", index=False)
    admin_url = _load_postgres(postgres_cluster, frame)

    secrets = work / "secrets.yaml"
    secrets.write_text(
        yaml.safe_dump(
            {
                "s3": {"minio": {"access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET}},
                "postgresql": {
                    "warehouse": {
                        "url": f"postgresql://reader:{PG_PASSWORD}@127.0.0.1:{postgres_cluster.port}/penguins"
                    },
                    "malformed": {
                        "url": f"postgres:/reader:{PG_PASSWORD}@127.0.0.1:{postgres_cluster.port}/x"
                    },
                },
            }
        )
    )
    data_dir = work / "server"
    data_dir.mkdir()
    engine = make_engine(f"sqlite:///{data_dir / 'lomas.db'}")
    upgrade(engine)
    store = AdminStore(session_factory(engine))
    s3_object = {"kind": "s3", "endpoint_url": s3_server, "bucket": "stats", "credentials": "minio"}
    accesses = {
        "PENGUIN_HTTP": {
            "kind": "http",
            "url": f"{http_server.url}/private/penguins.csv",
            "credentials": "portal",
        },
        "PENGUIN_S3": s3_object | {"key": "penguins.parquet"},
        "PENGUIN_PG": {"kind": "postgresql", "connection": "warehouse", "table": "stats.penguins"},
        "PENGUIN_SCAN": {"kind": "local", "path": str(work / "penguins.parquet"), "serve": "scan"},
        "GONE_HTTP": {"kind": "http", "url": f"{http_server.url}/gone.csv"},
        "NO_TOKEN_HTTP": {"kind": "http", "url": f"{http_server.url}/private/penguins.csv"},
        "UNREACHABLE_HTTP": {"kind": "http", "url": f"http://127.0.0.1:{closed_port}/penguins.csv"},
        "MISMATCH_HTTP": {"kind": "http", "url": f"{http_server.url}/no_sex.csv"},
        "UNKNOWN_SECRET_S3": s3_object | {"key": "penguins.parquet", "credentials": "nobody"},
        "NO_BUCKET_S3": s3_object | {"bucket": "missing", "key": "penguins.parquet"},
        "NO_KEY_S3": s3_object | {"key": "missing.parquet"},
        "NO_TABLE_PG": {"kind": "postgresql", "connection": "warehouse", "table": "stats.missing"},
        "UNKNOWN_SECRET_PG": {"kind": "postgresql", "connection": "nobody", "table": "stats.penguins"},
        "TEXT_YEARS_PG": {"kind": "postgresql", "connection": "warehouse", "table": "stats.text_years"},
        "BAD_URL_PG": {"kind": "postgresql", "connection": "malformed", "table": "stats.penguins"},
        "TOO_MANY_ROWS": {"kind": "local", "path": str(work / "twice.parquet")},
        "TEXT_YEARS_SCAN": {"kind": "local", "path": str(work / "text_years.parquet"), "serve": "scan"},
        "REPLACED_SCAN": {"kind": "local", "path": str(work / "replaced.parquet"), "serve": "scan"},
    }
    store.add_user("Ada")
    for name, access in accesses.items():
        store.register_dataset(name, access, _metadata())
        store.grant("Ada", name, 100.0, 0.01)

    server = start_server(
        data_dir,
        env={
            "LOMAS_AUTH__OPEN_MODE": "true",
            "LOMAS_SECRETS_FILE": str(secrets),
            "LOMAS_SECRETS__HTTP__PORTAL__HEADERS__AUTHORIZATION": f"Bearer {http_server.token}",
        },
    )
    try:
        yield Setup(server, store, admin_url, work)
    finally:
        stop_server(server)


def _spent(client: Client) -> tuple[float, float]:
    spent = client.get_total_spent_budget()
    return spent.total_spent_epsilon, spent.total_spent_delta


@pytest.mark.parametrize("dataset", WORKING)
def test_sql_counts_and_group_by_answer_on_every_kind_of_access(setup: Setup, dataset: str) -> None:
    client = Client(setup.server.url, "Ada", dataset)
    assert abs(client.smartnoise_sql.query(COUNT, 5.0, 1e-5).df["n"].iloc[0] - ROWS) < 20
    by_species = client.smartnoise_sql.query(BY_SPECIES, 5.0, 1e-5).df.set_index("species")
    true = _penguins().groupby("species").agg(n=("species", "size"), bill=("bill_length_mm", "mean"))
    assert set(by_species.index) == set(true.index)
    assert (abs(by_species["n"] - true["n"]) < 20).all()
    assert (abs(by_species["bill"] - true["bill"]) < 3).all()
    assert len(client.get_previous_queries()) == 2


def test_postgresql_answers_from_the_live_table(setup: Setup) -> None:
    """SQL runs in the database on every query: rows added there count at once, without re-registration."""
    client = Client(setup.server.url, "Ada", "PENGUIN_PG")
    before = client.smartnoise_sql.query(COUNT, 10.0, 1e-5).df["n"].iloc[0]
    with psycopg.connect(setup.pg_url, autocommit=True) as connection:
        connection.execute("INSERT INTO stats.penguins SELECT * FROM stats.penguins")
    try:
        after = client.smartnoise_sql.query(COUNT, 10.0, 1e-5).df["n"].iloc[0]
    finally:
        with psycopg.connect(setup.pg_url, autocommit=True) as connection:
            connection.execute(
                "DELETE FROM stats.penguins WHERE ctid IN (SELECT ctid FROM stats.penguins OFFSET 344)"
            )
    assert abs(before - ROWS) < 10 and abs(after - 2 * ROWS) < 10


@pytest.mark.parametrize("dataset", ["PENGUIN_PG", "PENGUIN_S3", "PENGUIN_HTTP"])
def test_libraries_that_read_the_whole_table_load_it(setup: Setup, dataset: str) -> None:
    client = Client(setup.server.url, "Ada", dataset)
    result = client.opendp.query(pipeline_041("count_laplace"))
    assert abs(result.value - ROWS) < 40


@pytest.mark.parametrize("dataset", ["PENGUIN_S3", "PENGUIN_PG"])
def test_opendp_polars_queries_run_on_files_and_tables(setup: Setup, dataset: str) -> None:
    client = Client(setup.server.url, "Ada", dataset)
    context = client.opendp.polars.context(privacy_loss=dp.loss_of(epsilon=2.0), split_evenly_over=1)
    result = client.opendp.polars.query(context.query().group_by("species").agg(pl.len().dp.noise()))
    counts = dict(zip(result.df["species"], result.df["len"], strict=True))
    true = _penguins()["species"].value_counts()
    assert counts.keys() == set(true.index)
    assert all(abs(counts[species] - true[species]) < 20 for species in counts)


def test_a_scanned_dataset_refuses_libraries_that_load_it_and_spends_nothing(setup: Setup) -> None:
    client = Client(setup.server.url, "Ada", "PENGUIN_SCAN")
    spent, archived = _spent(client), len(client.get_previous_queries())
    with pytest.raises(InvalidQueryError, match="scanned where it is stored.*only SmartNoise-SQL queries"):
        client.opendp.query(pipeline_041("count_laplace"))
    context = client.opendp.polars.context(privacy_loss=dp.loss_of(epsilon=2.0), split_evenly_over=1)
    with pytest.raises(InvalidQueryError, match="scanned where it is stored"):
        client.opendp.polars.query(context.query().select(pl.len().dp.noise()))
    assert (_spent(client), len(client.get_previous_queries())) == (spent, archived)
    assert isinstance(client.opendp.query(pipeline_041("count_laplace"), dummy=True).value, int)


@pytest.mark.parametrize(
    ("dataset", "cause"),
    [
        ("GONE_HTTP", "not found (HTTP 404)"),
        ("NO_TOKEN_HTTP", "requires credentials (HTTP 401)"),
        ("UNREACHABLE_HTTP", "cannot reach host 127.0.0.1"),
        ("MISMATCH_HTTP", "columns missing from the data: sex"),
        ("UNKNOWN_SECRET_S3", "No S3 credentials named 'nobody'"),
        ("NO_BUCKET_S3", "the bucket 'missing' does not exist"),
        ("NO_KEY_S3", "no object 'missing.parquet' in the bucket 'stats'"),
        ("NO_TABLE_PG", 'relation "stats.missing" does not exist'),
        ("UNKNOWN_SECRET_PG", "No PostgreSQL connection named 'nobody'"),
        ("BAD_URL_PG", "Cannot connect to postgresql table stats.penguins (connection 'malformed')"),
        ("TEXT_YEARS_PG", "columns whose SQL type does not always convert to their metadata type: year"),
        ("TEXT_YEARS_SCAN", "does not always convert to their metadata type: year (string to int64)"),
        ("TOO_MANY_ROWS", "has 688 rows, more than the 344 its metadata declares"),
    ],
)
def test_unreadable_data_answers_a_clear_error_and_spends_nothing(
    setup: Setup, dataset: str, cause: str
) -> None:
    client = Client(setup.server.url, "Ada", dataset)
    with pytest.raises(InternalServerError, match="cannot be read right now; no budget was spent"):
        client.smartnoise_sql.query(COUNT, 1.0, 1e-5)
    assert _spent(client) == (0.0, 0.0)
    assert client.get_previous_queries() == []
    log = setup.server.log()
    assert cause in log  # the administrator finds the cause in the server log...
    assert S3_SECRET not in log and PG_PASSWORD not in log  # ...and no secret


def test_a_table_that_lost_a_column_is_not_charged(setup: Setup) -> None:
    client = Client(setup.server.url, "Ada", "PENGUIN_PG")
    client.smartnoise_sql.query(COUNT, 1.0, 1e-5)  # opened and cached
    spent = _spent(client)
    with psycopg.connect(setup.pg_url, autocommit=True) as connection:
        connection.execute("ALTER TABLE stats.penguins RENAME COLUMN sex TO gender")
    try:
        with pytest.raises(InternalServerError, match="no budget was spent"):
            client.smartnoise_sql.query(COUNT, 1.0, 1e-5)
    finally:
        with psycopg.connect(setup.pg_url, autocommit=True) as connection:
            connection.execute("ALTER TABLE stats.penguins RENAME COLUMN gender TO sex")
    assert _spent(client) == spent
    assert "columns missing from the data: sex" in setup.server.log()
    assert abs(client.smartnoise_sql.query(COUNT, 5.0, 1e-5).df["n"].iloc[0] - ROWS) < 20


def test_secrets_never_reach_the_researcher_or_the_store(setup: Setup) -> None:
    client = Client(setup.server.url, "Ada", "PENGUIN_S3")
    metadata = client.get_dataset_metadata().model_dump_json()
    stored = repr([setup.store.dataset(name).access for name in WORKING])
    for secret in (S3_SECRET, S3_KEY_ID, PG_PASSWORD, "s3cr3t"):
        assert secret not in metadata and secret not in stored
    assert "minio" in stored  # credentials are stored by name only


def _pg(setup: Setup, *statements: str) -> None:
    with psycopg.connect(setup.pg_url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def test_rows_with_undeclared_categories_are_never_released(setup: Setup) -> None:
    """Declared species are public keys (no threshold): a row added later with another species must not
    show up as a group of its own."""
    client = Client(setup.server.url, "Ada", "PENGUIN_PG")
    _pg(setup, "INSERT INTO stats.penguins (species, island) VALUES ('Emperor', 'Dream')")
    try:
        by_species = client.smartnoise_sql.query(BY_SPECIES, 1.0, 1e-5).df
    finally:
        _pg(setup, "DELETE FROM stats.penguins WHERE species = 'Emperor'")
    assert set(by_species["species"]) == {"Adelie", "Chinstrap", "Gentoo"}


def test_a_scanned_file_replaced_with_undeclared_categories_never_releases_them(setup: Setup) -> None:
    client = Client(setup.server.url, "Ada", "REPLACED_SCAN")
    assert set(client.smartnoise_sql.query(BY_SPECIES, 1.0, 1e-5).df["species"]) == set(
        _penguins()["species"]
    )
    emperors = _penguins().head(40).assign(species="Emperor")
    pd.concat([_penguins().head(300), emperors]).to_parquet(setup.data / "replaced.parquet", index=False)
    by_species = client.smartnoise_sql.query(BY_SPECIES, 1.0, 1e-5).df
    assert set(by_species["species"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert "rows hold undeclared categories and are left out" in setup.server.log()


def test_dropped_pooled_connections_are_replaced_and_a_refused_login_is_not_charged(setup: Setup) -> None:
    client = Client(setup.server.url, "Ada", "PENGUIN_PG")
    client.smartnoise_sql.query(COUNT, 1.0, 1e-5)
    terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'reader'"
    _pg(setup, terminate)
    spent = _spent(client)
    client.smartnoise_sql.query(COUNT, 1.0, 1e-5)  # a dead pooled connection never fails a query
    assert _spent(client)[0] == pytest.approx(spent[0] + 1.0)

    _pg(setup, "ALTER ROLE reader NOLOGIN", terminate)
    try:
        with pytest.raises(InternalServerError, match="no budget was spent"):
            client.smartnoise_sql.query(COUNT, 1.0, 1e-5)
    finally:
        _pg(setup, "ALTER ROLE reader LOGIN")
    assert _spent(client)[0] == pytest.approx(spent[0] + 1.0)


def test_a_dataset_deleted_and_registered_again_serves_its_new_data(setup: Setup) -> None:
    half = setup.data / "half.parquet"
    _penguins().head(172).to_parquet(half, index=False)
    setup.store.register_dataset(
        "REUSED", {"kind": "local", "path": str(setup.data / "penguins.parquet")}, _metadata()
    )
    setup.store.grant("Ada", "REUSED", 100.0, 0.01)
    client = Client(setup.server.url, "Ada", "REUSED")
    assert abs(client.smartnoise_sql.query(COUNT, 5.0, 1e-5).df["n"].iloc[0] - ROWS) < 20
    setup.store.delete_dataset("REUSED", cascade=True)
    assert setup.store.register_dataset("REUSED", {"kind": "local", "path": str(half)}, _metadata()) == 1
    setup.store.grant("Ada", "REUSED", 100.0, 0.01)
    assert abs(client.smartnoise_sql.query(COUNT, 5.0, 1e-5).df["n"].iloc[0] - 172) < 20


def test_a_query_postgresql_cannot_plan_is_refused_without_charge(setup: Setup) -> None:
    """DuckDB (memory, scan, dummy data) has `%` on floats; PostgreSQL does not, whatever the rows."""
    modulo = "SELECT COUNT(*) AS n FROM df WHERE bill_length_mm % 2.0 > 1.0"
    assert len(Client(setup.server.url, "Ada", "PENGUIN_SCAN").smartnoise_sql.query(modulo, 1.0, 1e-5).df) == 1
    client = Client(setup.server.url, "Ada", "PENGUIN_PG")
    spent, archived = _spent(client), len(client.get_previous_queries())
    with pytest.raises(InvalidQueryError, match="PostgreSQL cannot run this query: .*No budget was spent"):
        client.smartnoise_sql.query(modulo, 1.0, 1e-5)
    assert (_spent(client), len(client.get_previous_queries())) == (spent, archived)
