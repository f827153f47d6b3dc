"""API tokens: issued with `lomas-admin tokens`, presented by the client as `Authorization: Bearer`.

Through a real server that is NOT in open mode (the user-name header means nothing there), and the
token store on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import yaml
from conftest import LiveServer, start_server, stop_server
from sqlalchemy import text, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from lomas.admin.cli import app
from lomas.client import Client
from lomas.core.errors import UnauthorizedAccessError
from lomas.server.demo.catalog import demo_datasets
from lomas.server.store.db import make_engine, session_factory, upgrade
from lomas.server.store.models import Token, utcnow
from lomas.server.store.service import AdminStore, NotFoundError, StoreError
from lomas.server.store.tokens import InvalidTokenError, TokenRefusal, TokenStore

PENGUIN = next(dataset for dataset in demo_datasets() if dataset.name == "PENGUIN")
PENGUIN_METADATA: dict[str, Any] = yaml.safe_load(PENGUIN.metadata_path.read_text())
PENGUIN_ACCESS = {"kind": "local", "path": str(PENGUIN.data_path), "format": "csv"}
COUNT_SQL = "SELECT COUNT(*) AS n FROM df"
COUNT = {"dataset_name": "PENGUIN", "query_str": COUNT_SQL, "epsilon": 1.0, "delta": 1e-5, "mechanisms": {}}
INVALID = "Invalid or expired token"


@pytest.fixture(autouse=True)
def _no_lomas_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOMAS_* variables of the caller (a LOMAS_TOKEN above all) must not leak into the tests."""
    for key in [key for key in os.environ if key.startswith("LOMAS_")]:
        monkeypatch.delenv(key)


@dataclass
class Closed:
    """A server without open mode, its store, and `lomas-admin` on that store."""

    server: LiveServer
    store: AdminStore
    tokens: TokenStore
    store_url: str

    def admin(self, *args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(app, ["--store-url", self.store_url, *args])
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result

    def issue(self, user: str, *options: str) -> str:
        result = self.admin("tokens", "issue", user, *options)
        token = result.stdout.strip()
        assert token.startswith("lomas_") and "\n" not in token  # the token alone on stdout
        return token

    def spent(self, user: str = "alice") -> tuple[float, int]:
        """Spent epsilon and number of archived queries: what a refused request must leave unchanged."""
        grant = self.store.grants(user, "PENGUIN")[0]
        return grant.spent_epsilon, len(self.store.archives(user, "PENGUIN"))


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Closed]:
    data_dir = tmp_path_factory.mktemp("closed-server")
    store_url = f"sqlite:///{data_dir / 'lomas.db'}"
    engine = make_engine(store_url)
    upgrade(engine)
    sessions = session_factory(engine)
    store = AdminStore(sessions)
    store.register_dataset("PENGUIN", PENGUIN_ACCESS, PENGUIN_METADATA)
    for user in ("alice", "bob"):
        store.add_user(user)
        store.grant(user, "PENGUIN", 10.0, 1e-3)
    server = start_server(data_dir)  # no open mode
    try:
        yield Closed(server, store, TokenStore(sessions), store_url)
    finally:
        stop_server(server)
        engine.dispose()


def post(server: LiveServer, endpoint: str, headers: dict[str, str], body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/{endpoint}", json=body or COUNT, headers=headers, timeout=60)


# -- through the server ----------------------------------------------------------------------------


def test_a_token_issued_with_the_cli_queries_and_reads_budgets(closed: Closed) -> None:
    result = closed.admin("tokens", "issue", "alice", "--label", "laptop", "--expires-in", "30d")
    token = result.stdout.strip()
    assert "cannot be shown again" in " ".join(result.stderr.split())

    # The user name the client sends is not who it is: outside open mode the token decides.
    with Client(closed.server.url, "bob", "PENGUIN", token=token, show_progress=False) as client:
        assert client.smartnoise_sql.cost(COUNT_SQL, 1.0, 1e-5).epsilon == 1.0
        before = client.get_total_spent_budget().total_spent_epsilon
        answer = client.smartnoise_sql.query(COUNT_SQL, 1.0, 1e-5)
        assert answer.requested_by == "alice"
        assert client.get_total_spent_budget().total_spent_epsilon == before + answer.epsilon
        assert client.get_initial_budget().initial_epsilon == 10.0
        assert client.get_remaining_budget().remaining_epsilon == 10.0 - before - answer.epsilon
        assert client.get_previous_queries()[-1].user_name == "alice"
        assert client.get_dataset_metadata().rows == PENGUIN_METADATA["rows"]
    assert closed.spent("bob") == (0.0, 0)  # nothing went to bob

    listed = {record.id: record for record in closed.tokens.list_tokens("alice")}
    record = next(record for record in listed.values() if record.label == "laptop")
    assert record.last_used_at is not None
    assert record.expires_at is not None and timedelta(days=29) < record.expires_at - utcnow() <= timedelta(days=30)


def test_the_client_takes_its_token_from_lomas_token(closed: Closed, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOMAS_TOKEN", closed.issue("bob"))
    with Client(closed.server.url, "bob", "PENGUIN", show_progress=False) as client:
        assert client.get_initial_budget().initial_epsilon == 10.0
    monkeypatch.setenv("LOMAS_TOKEN", "lomas_not-a-token")
    with (
        Client(closed.server.url, "bob", "PENGUIN", show_progress=False) as client,
        pytest.raises(UnauthorizedAccessError, match=INVALID),
    ):
        client.get_initial_budget()


def test_refused_tokens_all_get_the_same_401_and_nothing_is_charged(closed: Closed) -> None:
    expired = closed.issue("alice", "--expires-in", "1s")
    revoked = closed.issue("alice", "--label", "lost laptop")
    revoked_id = closed.tokens.list_tokens("alice")[-1].id
    assert "Revoked token" in closed.admin("tokens", "revoke", str(revoked_id)).stdout
    wrong = "lomas_" + "x" * 43
    time.sleep(1.1)
    before = closed.spent()

    for token in (expired, revoked, wrong, "", "not even lomas"):
        for endpoint in ("smartnoise_sql_query", "get_remaining_budget", "estimate_smartnoise_sql_cost"):
            response = post(closed.server, endpoint, {"Authorization": f"Bearer {token}".strip(), "user-name": "alice"})
            assert response.status_code == 401, (endpoint, response.text)
            assert response.json() == {"type": "UnauthorizedAccessException", "message": INVALID}
            assert response.headers["www-authenticate"].startswith("Bearer")
        with pytest.raises(UnauthorizedAccessError, match=INVALID):
            Client(closed.server.url, "alice", "PENGUIN", token=token or "x").smartnoise_sql.query(COUNT_SQL, 1.0, 1e-5)

    # No token at all, or only the 0.4 user-name header: 401 that says how to authenticate.
    for headers in ({}, {"user-name": "alice"}, {"Authorization": "Basic YWxpY2U6cHc="}):
        response = post(closed.server, "smartnoise_sql_query", headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        message = response.json()["message"]
        assert message.startswith("Authentication required") and "Authorization: Bearer" in message
    with pytest.raises(UnauthorizedAccessError, match="LOMAS_TOKEN"):
        Client(closed.server.url, "alice", "PENGUIN").get_remaining_budget()

    assert closed.spent() == before
    log = closed.server.log()
    assert f"refused: token refused: {TokenRefusal.REVOKED} (token {revoked_id})" in log
    assert f"token refused: {TokenRefusal.EXPIRED}" in log and f"token refused: {TokenRefusal.UNKNOWN}" in log
    for token in (expired, revoked, wrong):
        assert token not in log and token[6:] not in log  # tokens are never logged


def test_the_store_holds_only_hashes(closed: Closed) -> None:
    token = closed.issue("alice", "--label", "hash check")
    with closed.store.sessions() as session:
        rows = [dict(row._mapping) for row in session.execute(text("SELECT * FROM tokens"))]
    assert rows
    for row in rows:
        assert not any(isinstance(value, str) and ("lomas_" in value or token[6:] in value) for value in row.values())
    assert hashlib.sha256(token.encode()).hexdigest() in {row["token_hash"] for row in rows}
    assert set(rows[0]) == {
        "id", "user_id", "label", "token_hash", "created_at", "expires_at", "revoked_at", "last_used_at"
    }


def test_tokens_list_shows_everything_but_the_token(closed: Closed) -> None:
    token = closed.issue("bob", "--label", "cluster job", "--expires-in", "never")
    token_id = closed.tokens.list_tokens("bob")[-1].id
    listing = closed.admin("tokens", "list").stdout
    assert token not in listing and token[6:] not in listing
    assert hashlib.sha256(token.encode()).hexdigest() not in listing
    line = next(line for line in listing.splitlines() if "cluster job" in line)
    assert line.split()[:2] == [str(token_id), "bob"] and "never" in line and "active" in line
    assert "alice" not in closed.admin("tokens", "list", "--user", "bob").stdout

    closed.admin("tokens", "revoke", str(token_id))
    line = next(line for line in closed.admin("tokens", "list", "--user", "bob").stdout.splitlines() if "cluster job" in line)
    assert "revoked" in line
    assert "already revoked" in closed.admin("tokens", "revoke", str(token_id), code=2).stderr
    assert "No token with id 999999" in closed.admin("tokens", "revoke", "999999", code=2).stderr
    assert "No user named 'nobody'" in closed.admin("tokens", "issue", "nobody", code=2).stderr
    assert "No user named 'nobody'" in closed.admin("tokens", "list", "--user", "nobody", code=2).stderr
    for lifetime in ("0d", "soon", "-1h", "3y"):
        assert "Invalid --expires-in" in closed.admin("tokens", "issue", "bob", "--expires-in", lifetime, code=2).stderr


def test_in_open_mode_a_presented_token_wins_over_the_user_name(demo_server: LiveServer) -> None:
    engine = make_engine(f"sqlite:///{demo_server.data_dir / 'lomas.db'}")
    try:
        antartica = TokenStore(session_factory(engine)).issue_token("Dr. Antartica", "open mode test").plaintext
    finally:
        engine.dispose()
    iris = {"dataset_name": "IRIS"}
    assert post(demo_server, "get_initial_budget", {"user-name": "Tintin"}, iris).status_code == 200
    # Tintin may read IRIS, Dr. Antartica may not: the token makes the caller Dr. Antartica.
    as_antartica = {"user-name": "Tintin", "Authorization": f"Bearer {antartica}"}
    assert post(demo_server, "get_initial_budget", as_antartica, iris).status_code == 403
    wrong = {"user-name": "Tintin", "Authorization": "Bearer lomas_wrong"}
    response = post(demo_server, "get_initial_budget", wrong, iris)
    assert response.status_code == 401 and response.json()["message"] == INVALID


# -- the token store on SQLite and PostgreSQL ------------------------------------------------------


@pytest.fixture()
def token_store(sessions: sessionmaker[Session]) -> TokenStore:
    store = AdminStore(sessions)
    store.add_user("alice")
    store.add_user("bob")
    return TokenStore(sessions)


def test_tokens_authenticate_until_revoked_or_expired(token_store: TokenStore, sessions: sessionmaker[Session]) -> None:
    issued = token_store.issue_token("alice", "notebook", utcnow() + timedelta(hours=1))
    forever = token_store.issue_token("bob")
    assert issued.plaintext.startswith("lomas_") and len(issued.plaintext) > 40
    assert token_store.authenticate(issued.plaintext) == "alice"
    assert token_store.authenticate(forever.plaintext) == "bob"

    with pytest.raises(InvalidTokenError) as refused:
        token_store.authenticate(issued.plaintext + "x")
    assert refused.value.reason == TokenRefusal.UNKNOWN

    with sessions.begin() as session:  # an hour later
        session.execute(update(Token).where(Token.id == issued.token_id).values(expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(InvalidTokenError) as refused:
        token_store.authenticate(issued.plaintext)
    assert (refused.value.reason, refused.value.token_id) == (TokenRefusal.EXPIRED, issued.token_id)
    assert issued.plaintext not in str(refused.value)

    token_store.revoke_token(forever.token_id)
    with pytest.raises(InvalidTokenError) as refused:
        token_store.authenticate(forever.plaintext)
    assert refused.value.reason == TokenRefusal.REVOKED
    with pytest.raises(StoreError, match="already revoked"):
        token_store.revoke_token(forever.token_id)

    records = {record.id: record for record in token_store.list_tokens()}
    assert records[issued.token_id].status() == "expired" and records[forever.token_id].status() == "revoked"
    assert records[issued.token_id].last_used_at is not None and records[issued.token_id].label == "notebook"
    assert [record.user_name for record in token_store.list_tokens("bob")] == ["bob"]


def test_tokens_are_refused_for_unknown_users_and_past_expiries_and_die_with_their_user(
    token_store: TokenStore, sessions: sessionmaker[Session]
) -> None:
    with pytest.raises(NotFoundError):
        token_store.issue_token("nobody")
    with pytest.raises(NotFoundError):
        token_store.list_tokens("nobody")
    with pytest.raises(NotFoundError):
        token_store.revoke_token(12345)
    with pytest.raises(StoreError, match="future"):
        token_store.issue_token("alice", expires_at=utcnow() - timedelta(minutes=1))
    first, second = token_store.issue_token("alice"), token_store.issue_token("alice")
    assert first.plaintext != second.plaintext

    AdminStore(sessions).delete_user("alice")
    assert token_store.list_tokens() == []
    with pytest.raises(InvalidTokenError):
        token_store.authenticate(first.plaintext)
