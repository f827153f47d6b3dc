"""SmartNoise-SQL through the real HTTP server and our client: results, costs, charges, errors."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest

from conftest import LiveServer
from lomas.client import Client, ExternalLibraryError, InvalidQueryError, UnauthorizedAccessError

COUNT = "SELECT COUNT(*) AS n FROM df"
AVG_BY_SPECIES = "SELECT species, AVG(body_mass_g) AS mass FROM df GROUP BY species"


def test_count_is_noisy_true_count_and_charged_its_cost(fresh_demo_server: LiveServer) -> None:
    client = Client(fresh_demo_server.url, "Dr. Antartica", "PENGUIN")
    cost = client.smartnoise_sql.cost(COUNT, epsilon=1.0, delta=1e-5)
    result = client.smartnoise_sql.query(COUNT, epsilon=1.0, delta=1e-5)

    assert list(result.df.columns) == ["n"]
    assert abs(int(result.df["n"].iloc[0]) - 344) < 40  # Laplace(1/1) noise on the 344-row table
    assert (result.epsilon, result.delta) == (cost.epsilon, cost.delta)
    spent = client.get_total_spent_budget()
    assert (spent.total_spent_epsilon, spent.total_spent_delta) == (cost.epsilon, cost.delta)
    remaining = client.get_remaining_budget()
    assert remaining.remaining_epsilon == pytest.approx(10.0 - cost.epsilon)
    history = client.get_previous_queries()
    assert [entry.client_input["query_str"] for entry in history] == [COUNT]
    assert history[0].response["result"]["df"]["data"] == result.df.values.tolist()


def test_group_by_public_categories_returns_each_species(demo_server: LiveServer) -> None:
    client = Client(demo_server.url, "Tintin", "PENGUIN")
    result = client.smartnoise_sql.query(AVG_BY_SPECIES, epsilon=2.0, delta=1e-5)
    assert sorted(result.df["species"]) == ["Adelie", "Chinstrap", "Gentoo"]
    assert result.df["mass"].between(2000, 7000).all()
    assert result.epsilon == pytest.approx(4.0)  # AVG is a SUM and a COUNT, each at epsilon 2


def test_cost_estimate_reads_no_data_and_spends_nothing(demo_server: LiveServer) -> None:
    client = Client(demo_server.url, "Tintin", "IRIS")
    before = client.get_total_spent_budget()
    cost = client.smartnoise_sql.cost("SELECT species, COUNT(*) AS n FROM df GROUP BY species", 0.5, 1e-5)
    assert cost.epsilon == pytest.approx(0.5)
    assert client.get_total_spent_budget() == before


def test_group_by_undeclared_keys_is_thresholded(demo_server: LiveServer) -> None:
    """PENGUIN declares its categories public, but body masses are not categories: rare keys vanish."""
    client = Client(demo_server.url, "Tintin", "PENGUIN")
    result = client.smartnoise_sql.query(
        "SELECT body_mass_g, COUNT(*) AS n FROM df GROUP BY body_mass_g", epsilon=1.0, delta=1e-5
    )
    # About 95 distinct masses occur at most a dozen times each; the threshold at these settings is ~12.
    assert len(result.df) <= 3


def test_censored_dataset_needs_delta_and_refuses_before_charging(demo_server: LiveServer) -> None:
    client = Client(demo_server.url, "BirthdayGirl", "PATIENTS")
    with pytest.raises(InvalidQueryError, match="delta"):
        client.smartnoise_sql.query("SELECT department, COUNT(*) AS n FROM df GROUP BY department", 1.0, 0.0)
    assert client.get_total_spent_budget().total_spent_epsilon == 0.0


def test_combinations_of_public_categories_are_thresholded(demo_server: LiveServer) -> None:
    """PENGUIN declares each column's categories public, not which (species, island) pairs occur."""
    client = Client(demo_server.url, "Tintin", "PENGUIN")
    pairs = "SELECT species, island, COUNT(*) AS n FROM df GROUP BY species, island"
    with pytest.raises(InvalidQueryError, match="delta"):
        client.smartnoise_sql.cost(pairs, 1.0, 0.0)
    single = client.smartnoise_sql.cost("SELECT species, COUNT(*) AS n FROM df GROUP BY species", 1.0, 0.0)
    assert single.delta < 1e-12  # no threshold: only the float slack of the Laplace mechanism


def test_public_keys_after_a_where_are_thresholded(demo_server: LiveServer) -> None:
    """Which species have a bird with a bill over 58 mm is private, though the species are public: with a
    WHERE, the keys are thresholded (before, this query released exactly the species that pass)."""
    client = Client(demo_server.url, "Tintin", "PENGUIN")
    where = "SELECT species, COUNT(*) AS n FROM df WHERE bill_length_mm > 58.0 GROUP BY species"
    with pytest.raises(InvalidQueryError, match="delta"):
        client.smartnoise_sql.cost(where, 1.0, 0.0)
    # One Gentoo has such a bill (59.6 mm): far below the threshold, it is never released.
    assert client.smartnoise_sql.query(where, 1.0, 1e-5).df.empty


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT * FROM df", "not included in GROUP BY"),
        ("SELECT COUNT(*) FROM df JOIN df ON 1=1", "JOIN"),
        ("SELECT COUNT(*) FROM other_table", "other_table"),
        ("SELECT species FROM df GROUP BY species", "no differentially private aggregate"),
        ("DROP TABLE df", "Unsupported or invalid"),
    ],
)
def test_unsupported_sql_is_a_400_that_says_why_and_costs_nothing(
    demo_server: LiveServer, query: str, message: str
) -> None:
    client = Client(demo_server.url, "Milou", "IRIS")
    with pytest.raises(InvalidQueryError, match=message):
        client.smartnoise_sql.query(query, epsilon=0.1, delta=1e-5)
    assert client.get_total_spent_budget().total_spent_epsilon == 0.0


def test_mechanism_overrides_are_checked_and_used(demo_server: LiveServer) -> None:
    client = Client(demo_server.url, "Tintin", "IRIS")
    with pytest.raises(InvalidQueryError, match="Unknown mechanism 'magic'"):
        client.smartnoise_sql.cost(COUNT, 1.0, 1e-5, mechanisms={"count": "magic"})
    with pytest.raises(InvalidQueryError, match="Unknown statistic"):
        client.smartnoise_sql.cost(COUNT, 1.0, 1e-5, mechanisms={"median": "laplace"})
    gaussian = client.smartnoise_sql.cost(COUNT, 1.0, 1e-5, mechanisms={"count": "gaussian"})
    assert gaussian.delta > 0  # the Gaussian mechanism spends delta where the default Laplace spends little


def test_failure_after_reading_private_data_is_charged_and_generic(fresh_demo_server: LiveServer) -> None:
    client = Client(fresh_demo_server.url, "Dr. Antartica", "PENGUIN")
    query = "SELECT species, COUNT(*) AS n FROM df GROUP BY species ORDER BY island"
    with pytest.raises(ExternalLibraryError, match="sort expression"):  # dummy data: the library's words
        client.smartnoise_sql.query(query, 1.0, 1e-5, dummy=True)
    with pytest.raises(ExternalLibraryError) as failure:
        client.smartnoise_sql.query(query, 1.0, 1e-5)
    assert "sort" not in failure.value.message and "island" not in failure.value.message
    assert "charged" in failure.value.message
    cost = client.smartnoise_sql.cost(query, 1.0, 1e-5)
    assert client.get_total_spent_budget().total_spent_epsilon == cost.epsilon
    [entry] = client.get_previous_queries()
    assert entry.response == {"error": failure.value.message}


def test_dummy_query_is_free_and_limited(demo_server: LiveServer) -> None:
    client = Client(demo_server.url, "Milou", "IRIS")
    result = client.smartnoise_sql.query(COUNT, 1.0, 1e-5, dummy=True, nb_rows=500, seed=3)
    assert abs(int(result.df["n"].iloc[0]) - 500) < 40
    assert client.get_total_spent_budget().total_spent_epsilon == 0.0
    with pytest.raises(InvalidQueryError, match="limit is 100000 rows"):
        client.smartnoise_sql.query(COUNT, 1.0, 1e-5, dummy=True, nb_rows=100_001)


def test_over_budget_query_is_refused_and_not_charged(fresh_demo_server: LiveServer) -> None:
    client = Client(fresh_demo_server.url, "Milou", "IRIS")  # epsilon 1
    with pytest.raises(InvalidQueryError, match="Not enough budget"):
        client.smartnoise_sql.query(COUNT, epsilon=1.5, delta=1e-5)
    assert client.get_total_spent_budget().total_spent_epsilon == 0.0
    assert client.get_previous_queries() == []


def test_access_is_checked(demo_server: LiveServer) -> None:
    with pytest.raises(UnauthorizedAccessError, match="does not exist"):
        Client(demo_server.url, "Nobody", "PENGUIN").get_dataset_metadata()
    with pytest.raises(UnauthorizedAccessError, match="does not have access to IRIS"):
        Client(demo_server.url, "Dr. Antartica", "IRIS").smartnoise_sql.cost(COUNT, 1.0, 1e-5)
    with pytest.raises(UnauthorizedAccessError, match="does not have access to NOPE"):
        Client(demo_server.url, "Dr. Antartica", "NOPE").get_initial_budget()


def test_malformed_requests_name_the_field(demo_server: LiveServer) -> None:
    response = httpx.post(
        f"{demo_server.url}/smartnoise_sql_query",
        headers={"user-name": "Tintin"},
        json={"dataset_name": "IRIS", "query_str": COUNT, "epsilon": -1, "delta": 1e-5, "mechanisms": {}},
    )
    assert response.status_code == 422
    assert response.json()["type"] == "InvalidQueryException"
    assert "epsilon" in response.json()["message"]


def test_dummy_dataset_has_the_schema_and_is_reproducible(demo_server: LiveServer) -> None:
    client = Client(demo_server.url, "Dr. House", "PATIENTS")
    metadata = client.get_dataset_metadata()
    first = client.get_dummy_dataset(nb_rows=50, seed=7)
    assert list(first.columns) == list(metadata.columns)
    assert len(first) == 50
    assert pd.api.types.is_datetime64_any_dtype(first["admission_date"])
    pd.testing.assert_frame_equal(first, client.get_dummy_dataset(nb_rows=50, seed=7))
    assert not first.equals(client.get_dummy_dataset(nb_rows=50, seed=8))
