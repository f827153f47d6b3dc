"""The server process: start-up, settings, identity, demo seeding."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import LiveServer, start_server, stop_server
from lomas.client import Client

PROTOCOL_POSTS = [
    "get_dataset_metadata",
    "get_dummy_dataset",
    "get_initial_budget",
    "get_total_spent_budget",
    "get_remaining_budget",
    "get_previous_queries",
    "smartnoise_sql_query",
    "dummy_smartnoise_sql_query",
    "estimate_smartnoise_sql_cost",
]
COUNT = {"dataset_name": "PENGUIN", "query_str": "SELECT COUNT(*) AS n FROM df", "epsilon": 1.0, "delta": 1e-5}


def test_without_open_mode_only_state_and_docs_answer(tmp_path: Path) -> None:
    server = start_server(tmp_path / "closed")
    try:
        assert httpx.get(f"{server.url}/state").status_code == 200
        assert httpx.get(f"{server.url}/docs").status_code == 200
        assert httpx.get(f"{server.url}/openapi.json").status_code == 200
        for endpoint in PROTOCOL_POSTS:
            response = httpx.post(
                f"{server.url}/{endpoint}", headers={"user-name": "Dr. Antartica"}, json={**COUNT, "mechanisms": {}}
            )
            assert response.status_code == 401, endpoint
            assert response.json()["type"] == "UnauthorizedAccessException"
            assert "Authentication required" in response.json()["message"]
    finally:
        stop_server(server)


def test_open_mode_needs_the_user_name_header(demo_server: LiveServer) -> None:
    response = httpx.post(f"{demo_server.url}/get_initial_budget", json={"dataset_name": "PENGUIN"})
    assert response.status_code == 401
    assert "user-name" in response.json()["message"]


def test_root_redirects_to_state(demo_server: LiveServer) -> None:
    response = httpx.get(f"{demo_server.url}/", follow_redirects=False)
    assert response.status_code in (302, 307)
    assert response.headers["location"] == "/state"


def test_demo_never_reseeds_an_existing_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "store"
    server = start_server(data_dir, "--demo")
    try:
        spent = Client(server.url, "Dr. Antartica", "PENGUIN").smartnoise_sql.query(
            COUNT["query_str"], 1.0, 1e-5
        ).epsilon
    finally:
        stop_server(server)
    server = start_server(data_dir, "--demo")
    try:
        client = Client(server.url, "Dr. Antartica", "PENGUIN")
        assert client.get_total_spent_budget().total_spent_epsilon == spent
        assert len(client.get_previous_queries()) == 1
    finally:
        stop_server(server)


def test_settings_come_from_the_config_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "lomas.yaml"
    config.write_text("limits:\n  max_dummy_rows: 20\nauth:\n  open_mode: true\n")
    server = start_server(
        tmp_path / "configured", "--demo", "--config", str(config), env={"LOMAS_LIMITS__MAX_QUERY_LENGTH": "30"}
    )
    try:
        headers = {"user-name": "Tintin"}
        dummy = httpx.post(
            f"{server.url}/get_dummy_dataset",
            headers=headers,
            json={"dataset_name": "IRIS", "dummy_nb_rows": 21, "dummy_seed": 1},
        )
        assert dummy.status_code == 400 and "limit is 20 rows" in dummy.json()["message"]
        long_query = httpx.post(
            f"{server.url}/estimate_smartnoise_sql_cost",
            headers=headers,
            json={**COUNT, "dataset_name": "IRIS", "query_str": "SELECT COUNT(*) AS number_of_rows FROM df"},
        )
        assert long_query.status_code == 400 and "the limit is 30" in long_query.json()["message"]
    finally:
        stop_server(server)


def test_a_bad_config_file_stops_start_up_with_a_message(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("limits:\n  max_dummy_rows: -5\n")
    with pytest.raises(RuntimeError, match="max_dummy_rows"):
        start_server(tmp_path / "bad", "--config", str(config), timeout=30)


def test_reservations_must_outlive_the_longest_training(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"reservation_timeout_s \(600.0\) must be longer than"):
        start_server(tmp_path / "short", env={"LOMAS_RESERVATION_TIMEOUT_S": "600"}, timeout=30)
