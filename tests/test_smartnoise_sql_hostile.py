"""Hostile SmartNoise-SQL queries, on every kind of SQL backend, are refused before any data is read.

One Lomas server serves PENGUIN three ways: in memory (DuckDB over Arrow), as a Parquet file it only
scans (DuckDB), and as a PostgreSQL table (the SQL runs in the database). The researcher's queries
below were written to make SmartNoise-SQL and the databases read the SQL differently (a backslash in a
string literal, quoted identifiers, `public.df`, stacked statements) or to fail on some rows and not on
others (division by zero, square roots of negatives, overflow, conversions). Each answers a 400 that
says what is refused and why, charges nothing and archives nothing. Ordinary queries still answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest
import yaml
from conftest import LiveServer, start_server, stop_server
from palmerpenguins import load_penguins
from pg_fixture import PostgresCluster

from lomas.client import Client
from lomas.client import InvalidQueryError as ClientInvalidQueryError
from lomas.core.errors import InvalidQueryError
from lomas.server.demo.catalog import DATASETS_DIR
from lomas.server.engines.smartnoise_sql_checks import _check_with_duckdb
from lomas.server.store.db import make_engine, session_factory, upgrade
from lomas.server.store.service import AdminStore

pytestmark = pytest.mark.postgres

PG_PASSWORD = "pg-password-never-shown"
BACKENDS = ["PENGUIN_MEM", "PENGUIN_SCAN", "PENGUIN_PG"]
ROWS = 344


@dataclass
class Setup:
    server: LiveServer
    admin_url: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, postgres_cluster: PostgresCluster) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("hostile-sql")
    frame = load_penguins()
    frame.to_parquet(work / "penguins.parquet", index=False)
    admin_url = postgres_cluster.create_database("hostile")
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute("CREATE SCHEMA stats")
        connection.execute(
            "CREATE TABLE stats.penguins (species text, island text, bill_length_mm numeric, "
            "bill_depth_mm real, flipper_length_mm integer, body_mass_g bigint, sex varchar(10), year smallint)"
        )
        with connection.cursor().copy("COPY stats.penguins FROM STDIN WITH (FORMAT csv)") as copy:
            integers = frame.astype({"flipper_length_mm": "Int64", "body_mass_g": "Int64"})
            copy.write(integers.to_csv(index=False, header=False))
        # What an injection would be after: another table, and a real table named like the dataset.
        connection.execute("CREATE TABLE stats.other_secret (who text, salary int)")
        connection.execute("INSERT INTO stats.other_secret VALUES ('alice', 123456)")
        connection.execute("CREATE TABLE public.df AS SELECT * FROM stats.penguins")
        connection.execute(f"CREATE ROLE hostile_reader LOGIN PASSWORD '{PG_PASSWORD}'")
        connection.execute("GRANT USAGE ON SCHEMA stats TO hostile_reader")
        connection.execute("GRANT SELECT ON ALL TABLES IN SCHEMA stats TO hostile_reader")
        connection.execute("GRANT SELECT ON public.df TO hostile_reader")

    secrets = work / "secrets.yaml"
    pg = f"postgresql://hostile_reader:{PG_PASSWORD}@127.0.0.1:{postgres_cluster.port}/hostile"
    secrets.write_text(yaml.safe_dump({"postgresql": {"warehouse": {"url": pg}}}))
    data_dir = work / "server"
    data_dir.mkdir()
    engine = make_engine(f"sqlite:///{data_dir / 'lomas.db'}")
    upgrade(engine)
    store = AdminStore(session_factory(engine))
    metadata = yaml.safe_load((DATASETS_DIR / "penguin_metadata.yaml").read_text())
    accesses = {
        "PENGUIN_MEM": {"kind": "local", "path": str(work / "penguins.parquet")},
        "PENGUIN_SCAN": {"kind": "local", "path": str(work / "penguins.parquet"), "serve": "scan"},
        "PENGUIN_PG": {"kind": "postgresql", "connection": "warehouse", "table": "stats.penguins"},
    }
    for user in ("Mallory", "Ada"):
        store.add_user(user)
    for name, access in accesses.items():
        store.register_dataset(name, access, metadata)
        for user in ("Mallory", "Ada"):
            store.grant(user, name, 100.0, 0.01)
    server = start_server(data_dir, env={"LOMAS_AUTH__OPEN_MODE": "true", "LOMAS_SECRETS_FILE": str(secrets)})
    try:
        yield Setup(server, admin_url)
    finally:
        stop_server(server)


def _q(where: str) -> str:
    return f"SELECT COUNT(*) AS n FROM df WHERE {where}"


EXFIL = "SELECT CONCAT_WS($$|$$, species, island, bill_length_mm, body_mass_g, sex) AS species, 1000000 AS count_star FROM df"
SECRET = "SELECT CONCAT_WS($$|$$, who, salary, current_user, version()) AS species, 1000000 FROM stats.other_secret"
BACKSLASH = "String literals may not contain a backslash"
F1_EXFILTRATE = (
    "SELECT species, COUNT(*) AS n FROM df WHERE species = '\\') AS t GROUP BY species "
    f"UNION ALL {EXFIL} --' GROUP BY species"
)
F4_DIVISION = "1 / (bill_length_mm - 39.1) > 0"
CASE_AS_NUMBER = "CAST(CASE WHEN species = 'Adelie' THEN 1 ELSE 0 END AS FLOAT)"  # 1 if some row matches
HOSTILE = [
    # F1: the string literal ends at \' for the databases, not for SmartNoise-SQL
    pytest.param(F1_EXFILTRATE, BACKSLASH, id="F1-exfiltrate-rows"),
    pytest.param(
        "SELECT species, COUNT(*) AS n FROM df WHERE species = '\\') AS t GROUP BY species "
        f"UNION ALL {SECRET} --' GROUP BY species",
        BACKSLASH,
        id="F1-other-table",
    ),
    pytest.param(_q("island = 'Dream\\' OR 1=1 --'"), BACKSLASH, id="F1-or-true"),
    # F2: stacked statements after the same injection
    pytest.param(
        "SELECT COUNT(*) AS n FROM df WHERE species = '\\') AS t; SET statement_timeout = 0; "
        "SET default_transaction_read_only = off; SELECT COUNT(*) AS count_star FROM stats.penguins --'",
        BACKSLASH,
        id="F2-set",
    ),
    pytest.param(
        "SELECT COUNT(*) AS n FROM df WHERE species = '\\') AS t; CREATE TABLE fake AS SELECT * FROM df LIMIT 1; "
        "DROP VIEW df; CREATE VIEW df AS SELECT * FROM fake; SELECT COUNT(*) AS count_star FROM df --'",
        BACKSLASH,
        id="F2-drop-view",
    ),
    # identifiers SmartNoise-SQL copies verbatim, tables other than df
    pytest.param(
        _q('"species\\" OR 1=1 --" = \'a\''), "The identifier .* is refused", id="quoted-identifier"
    ),
    pytest.param(_q("`species` = 'Adelie'"), "The identifier `species` is refused", id="backtick-identifier"),
    pytest.param(
        _q("[species] = 'Adelie'"), r"The identifier \[species\] is refused", id="bracket-identifier"
    ),
    pytest.param(_q('"species" = \'Adelie\' AND "Body Mass" > 1'), "The identifier", id="quoted-with-space"),
    pytest.param(_q("salary > 0"), "Unknown column salary", id="unknown-column"),
    pytest.param(_q("df.species = 'Adelie'"), "Qualified column names are refused", id="qualified-column"),
    pytest.param(
        "SELECT COUNT(*) AS n FROM public.df",
        "Only the table df can be queried, not public.df",
        id="public.df",
    ),
    pytest.param(
        "SELECT COUNT(*) AS n FROM hostile.public.df", "Only the table df can be queried", id="catalog.df"
    ),
    pytest.param("SELECT COUNT(*) AS n FROM df AS a JOIN df AS b ON 1 = 1", "JOIN is refused", id="join"),
    # F4: errors that happen on some rows and not on others
    pytest.param(_q(F4_DIVISION), "Division by a column expression is refused", id="F4-division"),
    pytest.param(
        _q("bill_length_mm % (body_mass_g - 3750) > 0"), "Modulo by a column expression", id="F4-modulo"
    ),
    pytest.param(
        _q("CASE WHEN species = 'Adelie' THEN bill_length_mm / 0 ELSE 0 END > 0"),
        "Division by 0",
        id="F4-zero",
    ),
    pytest.param(
        _q("SQRT(bill_length_mm - 32.2) > 0"), "SQRT of a column expression is refused", id="F4-sqrt"
    ),
    pytest.param(_q("LOG(body_mass_g - 2700) > 0"), "LOG of a column expression is refused", id="F4-log"),
    pytest.param(_q("LN(body_mass_g - 2700) > 0"), "LN of a column expression", id="F4-ln"),
    pytest.param(_q("EXP(bill_length_mm) > 0"), "EXP of a column expression", id="F4-exp"),
    pytest.param(_q("POWER(bill_length_mm - 40.0, 2) > 0"), "POWER of a column expression", id="F4-power"),
    pytest.param(_q("ASIN(bill_depth_mm - 17.0) > 0"), "ASIN of a column expression", id="F4-asin"),
    pytest.param(_q("CAST(species AS INTEGER) > 0"), "CAST .* AS INTEGER .* is refused", id="F4-cast-text"),
    pytest.param(_q("CAST(bill_length_mm AS INTEGER) > 0"), "32-bit INTEGER", id="F4-cast-float-to-int"),
    pytest.param(_q("CAST(island AS DATE) > '2020-01-01'"), "converting text to DATE", id="F4-cast-date"),
    pytest.param(_q("CAST(bill_length_mm AS FLOAT) > 0"), "32-bit FLOAT", id="F4-narrowing"),
    pytest.param(_q("species = 1"), "Comparing text with an integer is refused", id="F4-text-vs-number"),
    pytest.param(_q("species IN (1, 2)"), "Comparing text with an integer", id="F4-text-in-numbers"),
    pytest.param(_q("sex"), "not a condition", id="F4-text-as-condition"),
    pytest.param(_q("sex IS TRUE"), "IS TRUE and IS FALSE apply to booleans", id="F4-text-is-true"),
    pytest.param(
        _q('"year" + 9223372036854775000 > 0'),
        "Integer and decimal arithmetic is refused",
        id="F4-int-overflow",
    ),
    pytest.param(
        _q("CASE WHEN island = 'Dream' THEN 2147483647 + 1 ELSE 0 END > 0"),
        "Integer and decimal arithmetic is refused",
        id="F4-constant-overflow-in-case",
    ),
    pytest.param(_q(f"bill_length_mm {'* 1000000 ' * 3}> 0"), "can grow the values", id="F4-float-overflow"),
    pytest.param(
        _q(f"bill_length_mm {'/ 0.000001 ' * 3}> 0"), "can grow the values", id="F4-float-overflow-div"
    ),
    pytest.param(
        _q("bill_length_mm * 0.000001 * 0.000001 > 0"), "can shrink the values", id="F4-float-underflow"
    ),
    pytest.param(_q(f"{CASE_AS_NUMBER} {'* 1000000 ' * 3}> 0"), "can grow the values", id="F4-case-overflow"),
    pytest.param(
        _q(f"CAST(CHAR_LENGTH(island) AS FLOAT) {'* 1000000 ' * 3}> 0"),
        "can grow the values",
        id="F4-length-overflow",
    ),
    pytest.param(
        _q("SQRT(CASE WHEN species = 'Adelie' THEN -1.0 ELSE 1.0 END) > 0"),
        "SQRT of a column expression",
        id="F4-case-sqrt",
    ),
    pytest.param(
        _q("bill_length_mm * bill_length_mm > 0"), "Multiplying two column expressions", id="F4-product"
    ),
    pytest.param(_q("SUBSTRING(species FROM 1 FOR -1) = 'x'"), "SUBSTRING is refused", id="F4-substring"),
    # SmartNoise-SQL groups a - b + c as a - (b + c) but writes no parentheses
    pytest.param(_q("bill_length_mm - 1.0 + 2.0 > 40"), "Write parentheses", id="precedence"),
    pytest.param(_q("species == 'Adelie'"), "The operator == is refused", id="operator"),
]


def _spent(server: LiveServer, dataset: str, user: str) -> tuple[tuple[float, float], int]:
    client = Client(server.url, user, dataset)
    spent = client.get_total_spent_budget()
    return (spent.total_spent_epsilon, spent.total_spent_delta), len(client.get_previous_queries())


@pytest.mark.parametrize("dataset", BACKENDS)
@pytest.mark.parametrize(("query", "reason"), HOSTILE)
def test_hostile_query_is_a_400_that_says_why_and_costs_nothing(
    setup: Setup, dataset: str, query: str, reason: str
) -> None:
    before = _spent(setup.server, dataset, "Mallory")
    response = httpx.post(
        f"{setup.server.url}/smartnoise_sql_query",
        headers={"user-name": "Mallory"},
        json={"dataset_name": dataset, "query_str": query, "epsilon": 0.5, "delta": 1e-5, "mechanisms": {}},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "InvalidQueryException"
    message = response.json()["message"]
    assert re.search(reason, message), message
    assert _spent(setup.server, dataset, "Mallory") == before


@pytest.mark.parametrize("endpoint", ["estimate_smartnoise_sql_cost", "dummy_smartnoise_sql_query"])
@pytest.mark.parametrize("query", [F1_EXFILTRATE, _q(F4_DIVISION)], ids=["F1", "F4"])
def test_cost_and_dummy_endpoints_refuse_them_too(setup: Setup, endpoint: str, query: str) -> None:
    response = httpx.post(
        f"{setup.server.url}/{endpoint}",
        headers={"user-name": "Mallory"},
        json={
            "dataset_name": "PENGUIN_PG",
            "query_str": query,
            "epsilon": 0.5,
            "delta": 1e-5,
            "mechanisms": {},
        },
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "InvalidQueryException"


ARITHMETIC = (
    "SELECT COUNT(*) AS n, AVG(body_mass_g) AS mass FROM df "
    "WHERE bill_length_mm * 2.0 + 1 > 80 AND body_mass_g / 1000.0 > 3.5 AND (bill_depth_mm - 1.0) * 0.5 < 12"
)
PREDICATES = (
    "SELECT COUNT(*) AS n FROM df AS t WHERE species IN ('Adelie', 'Gentoo') "
    "AND bill_length_mm BETWEEN 30 AND 50.5 AND sex IS NOT NULL AND NOT (island = 'Biscoe')"
)
FUNCTIONS = (
    'SELECT COUNT(*) AS n FROM df WHERE CAST("year" AS FLOAT) - 2000 > 7.5 '
    "AND CASE WHEN species = 'Adelie' THEN bill_length_mm ELSE 0 END < 45 "
    "AND COALESCE(sex, 'unknown') <> 'unknown' AND UPPER(island) = 'TORGERSEN' "
    "AND SUBSTRING(species FROM 1 FOR 3) = 'Ade' AND ABS(bill_length_mm - 40.0) < 20"
)
SCALED = (
    "SELECT COUNT(*) AS n FROM df WHERE CASE WHEN species = 'Adelie' THEN bill_length_mm ELSE 0 END * 2.0 > 40 "
    "AND FLOOR(body_mass_g / 500.0) * 500 > 3000 AND bill_length_mm * 1000000 * 1000000 > 0"
)
CONTROLS = [
    (
        "SELECT species, COUNT(*) AS n FROM df WHERE island = 'Dream' GROUP BY species",
        {"Adelie", "Chinstrap"},
    ),
    ("SELECT species, COUNT(*) AS n FROM df WHERE sex = 'female' AND \"year\" = 2008 GROUP BY species", None),
    (ARITHMETIC, None),
    (
        "SELECT species, AVG(bill_length_mm) AS bill, SUM(flipper_length_mm) AS f FROM df GROUP BY species",
        None,
    ),
    (
        "SELECT FLOOR(body_mass_g / 500.0) AS bin, COUNT(*) AS n FROM df GROUP BY FLOOR(body_mass_g / 500.0)",
        None,
    ),
    (PREDICATES, None),
    (FUNCTIONS, None),
    (SCALED, None),
]


@pytest.mark.parametrize("dataset", BACKENDS)
@pytest.mark.parametrize(("query", "keys"), CONTROLS, ids=[f"control-{i}" for i in range(len(CONTROLS))])
def test_ordinary_queries_still_answer(setup: Setup, dataset: str, query: str, keys: set[str] | None) -> None:
    client = Client(setup.server.url, "Ada", dataset)
    result = client.smartnoise_sql.query(query, epsilon=1.0, delta=1e-5)
    assert len(result.df) >= 1
    if keys is not None:
        assert set(result.df["species"]) == keys
    assert result.epsilon > 0


def test_the_public_table_named_df_exists_but_is_out_of_reach(setup: Setup) -> None:
    """`public.df` is a real table here (on PostgreSQL, the CTE `df` hides it only for the bare name)."""
    with psycopg.connect(setup.admin_url) as connection:
        assert connection.execute("SELECT COUNT(*) FROM public.df").fetchone() == (ROWS,)
    client = Client(setup.server.url, "Mallory", "PENGUIN_PG")
    with pytest.raises(ClientInvalidQueryError, match="Only the table df can be queried, not public.df"):
        client.smartnoise_sql.cost("SELECT COUNT(*) AS n FROM public.df", 1.0, 1e-5)
    assert client.smartnoise_sql.cost('SELECT COUNT(*) AS n FROM "df"', 1.0, 1e-5).epsilon == 1.0


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("SELECT COUNT(*) AS n FROM df; DROP VIEW df", "2 statements"),
        ("DROP VIEW df", "of type DROP"),
        ("SELECT COUNT(*) AS n FROM public.df", "the table public.df"),
        ("SELECT COUNT(*) AS n FROM stats.other_secret", "the table stats.other_secret"),
        ("SELECT species FROM df UNION ALL SELECT who FROM df", "SET_OPERATION_NODE"),
        ("WITH df AS (SELECT 1 AS x) SELECT COUNT(*) AS n FROM df", "WITH clause"),
        ("SELECT COUNT(*) AS n FROM read_parquet('/etc/passwd')", "TABLE_FUNCTION"),
        ("SELECT current_setting('statement_timeout') AS s FROM df", "current_setting"),
        ("SELECT pg_catalog.abs(x) AS s FROM df", "the function abs"),
        ("SELECT COUNT(*) AS n FROM df WHERE species = 'a' --", None),
    ],
)
def test_duckdb_reads_the_written_sql_as_one_select_on_df(sql: str, problem: str | None) -> None:
    """The last line of defence, on the SQL SmartNoise-SQL wrote: it never refuses what planning let
    through, so it is tested on SQL directly."""
    if problem is None:
        _check_with_duckdb(sql)
        return
    with pytest.raises(InvalidQueryError, match=problem):
        _check_with_duckdb(sql)
