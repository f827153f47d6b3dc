"""OIDC access tokens: JWTs of an external identity provider, checked against its JWKS (`auth.oidc`).

Through a real server that is NOT in open mode, configured by `LOMAS_AUTH__OIDC__*` variables; the
provider's JWKS is served on loopback by the `http_server` fixture and the tokens are minted here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
import yaml
from conftest import LiveServer, start_server, stop_server
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI, Request
from http_fixture import HttpServer
from pydantic import ValidationError

from lomas.client import Client
from lomas.core.errors import UnauthorizedAccessError
from lomas.server.auth import AuthenticationError, identify
from lomas.server.config import OIDCSettings, Settings
from lomas.server.demo.catalog import demo_datasets
from lomas.server.store.db import make_engine, session_factory, upgrade
from lomas.server.store.service import AdminStore
from lomas.server.store.tokens import TokenStore

PENGUIN = next(dataset for dataset in demo_datasets() if dataset.name == "PENGUIN")
PENGUIN_ACCESS = {"kind": "local", "path": str(PENGUIN.data_path), "format": "csv"}
COUNT_SQL = "SELECT COUNT(*) AS n FROM df"
COUNT = {"dataset_name": "PENGUIN", "query_str": COUNT_SQL, "epsilon": 1.0, "delta": 1e-5, "mechanisms": {}}
INVALID_BODY = {"type": "UnauthorizedAccessException", "message": "Invalid or expired token"}
ISSUER = "https://idp.example.org/realms/lomas"
AUDIENCE = "lomas-server"
JWKS_FILE = "oidc-test-jwks.json"


@pytest.fixture(autouse=True)
def _no_lomas_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [key for key in os.environ if key.startswith("LOMAS_")]:
        monkeypatch.delenv(key)


@dataclass
class Provider:
    """The identity provider: its published keys (RSA `rsa-1`, EC `ec-1`) and a key it never published."""

    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    stranger: rsa.RSAPrivateKey

    def mint(
        self,
        key: Any = None,
        kid: str = "rsa-1",
        algorithm: str = "RS256",
        drop: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "preferred_username": "alice",
            "sub": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        }
        payload.update(claims)
        for claim in drop:
            payload.pop(claim)
        return jwt.encode(payload, key or self.rsa_key, algorithm=algorithm, headers={"kid": kid})

    def public_pem(self) -> bytes:
        return self.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A JWT PyJWT would refuse to make: `alg: none`, or HS256 keyed with the provider's public key."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.fixture(scope="module")
def provider(http_server: HttpServer) -> Provider:
    idp = Provider(
        rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec_key=ec.generate_private_key(ec.SECP256R1()),
        stranger=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )
    rsa_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(idp.rsa_key.public_key(), as_dict=True)
    ec_jwk = jwt.algorithms.ECAlgorithm.to_jwk(idp.ec_key.public_key(), as_dict=True)
    keys = [
        {**rsa_jwk, "kid": "rsa-1", "use": "sig", "alg": "RS256"},
        {**ec_jwk, "kid": "ec-1", "use": "sig", "alg": "ES256"},
    ]
    (http_server.root / JWKS_FILE).write_text(json.dumps({"keys": keys}))
    return idp


@dataclass
class Closed:
    server: LiveServer
    store: AdminStore

    def spent(self, user: str = "alice") -> tuple[float, int]:
        grant = self.store.grants(user, "PENGUIN")[0]
        return grant.spent_epsilon, len(self.store.archives(user, "PENGUIN"))


def oidc_env(jwks_url: str) -> dict[str, str]:
    return {
        "LOMAS_AUTH__OIDC__ISSUER": ISSUER,
        "LOMAS_AUTH__OIDC__AUDIENCE": AUDIENCE,
        "LOMAS_AUTH__OIDC__JWKS_URL": jwks_url,
        "LOMAS_AUTH__OIDC__LEEWAY_S": "60",
    }


def start_closed(data_dir: Any, jwks_url: str) -> Closed:
    engine = make_engine(f"sqlite:///{data_dir / 'lomas.db'}")
    upgrade(engine)
    store = AdminStore(session_factory(engine))
    store.register_dataset("PENGUIN", PENGUIN_ACCESS, yaml.safe_load(PENGUIN.metadata_path.read_text()))
    for user in ("alice", "bob"):
        store.add_user(user)
        store.grant(user, "PENGUIN", 10.0, 1e-3)
    return Closed(start_server(data_dir, env=oidc_env(jwks_url)), store)


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory, http_server: HttpServer, provider: Provider) -> Iterator[Closed]:
    server = start_closed(tmp_path_factory.mktemp("oidc-server"), f"{http_server.url}/{JWKS_FILE}")
    try:
        yield server
    finally:
        stop_server(server.server)


def post(server: LiveServer, endpoint: str, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "user-name": "alice"}
    return httpx.post(f"{server.url}/{endpoint}", json=COUNT, headers=headers, timeout=60)


def assert_refused(server: LiveServer, token: str) -> None:
    for endpoint in ("smartnoise_sql_query", "get_remaining_budget", "estimate_smartnoise_sql_cost"):
        response = post(server, endpoint, token)
        assert response.status_code == 401, (endpoint, response.text)
        assert response.json() == INVALID_BODY
        assert response.headers["www-authenticate"] == 'Bearer realm="lomas", error="invalid_token"'


# -- through the server ----------------------------------------------------------------------------


def test_a_valid_jwt_queries_and_reads_budgets(closed: Closed, provider: Provider) -> None:
    token = provider.mint()
    # The user name the client sends is not who it is: the token's claim decides.
    with Client(closed.server.url, "bob", "PENGUIN", token=token, show_progress=False) as client:
        assert client.smartnoise_sql.cost(COUNT_SQL, 1.0, 1e-5).epsilon == 1.0
        before = client.get_total_spent_budget().total_spent_epsilon
        answer = client.smartnoise_sql.query(COUNT_SQL, 1.0, 1e-5)
        assert answer.requested_by == "alice"
        assert client.get_total_spent_budget().total_spent_epsilon == before + answer.epsilon
        assert client.get_initial_budget().initial_epsilon == 10.0
        assert client.get_remaining_budget().remaining_epsilon == 10.0 - before - answer.epsilon
        assert client.get_previous_queries()[-1].user_name == "alice"
    assert closed.spent("bob") == (0.0, 0)

    # An ES256 token of the same provider, for bob; one expired 30 s ago is within the 60 s leeway.
    now = int(time.time())
    for token in (
        provider.mint(provider.ec_key, kid="ec-1", algorithm="ES256", preferred_username="bob"),
        provider.mint(preferred_username="bob", iat=now - 600, exp=now - 30),
    ):
        with Client(closed.server.url, "alice", "PENGUIN", token=token, show_progress=False) as client:
            assert client.get_initial_budget().initial_epsilon == 10.0
    assert token not in closed.server.log()


def test_refused_jwts_all_get_the_same_401_and_nothing_is_charged(closed: Closed, provider: Provider) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "preferred_username": "alice"}
    refused = [
        ("InvalidIssuerError", provider.mint(iss="https://evil.example.org")),
        ("InvalidAudienceError", provider.mint(aud="another-service")),
        ("InvalidSignatureError", provider.mint(provider.stranger)),  # kid rsa-1, another key
        ('Unable to find a signing key that matches: "stranger-1"', provider.mint(provider.stranger, kid="stranger-1")),
        ("ExpiredSignatureError", provider.mint(iat=now - 600, exp=now - 120)),  # beyond the 60 s leeway
        ("ImmatureSignatureError", provider.mint(nbf=now + 600)),
        ('missing the "exp" claim', provider.mint(drop=("exp",))),
        ("InvalidAlgorithmError", forged({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims, None)),
        ("InvalidAlgorithmError", forged({"alg": "HS256", "kid": "rsa-1"}, claims, provider.public_pem())),
        ("names no Lomas user ('mallory')", provider.mint(preferred_username="mallory")),
        ("claim 'preferred_username' missing", provider.mint(drop=("preferred_username",))),
        ("not a non-empty string", provider.mint(preferred_username=["alice"])),
        ("DecodeError", "not.a.jwt"),
    ]
    before = closed.spent()
    for _reason, token in refused:
        assert_refused(closed.server, token)
        with pytest.raises(UnauthorizedAccessError, match="Invalid or expired token"):
            Client(closed.server.url, "alice", "PENGUIN", token=token, show_progress=False).smartnoise_sql.query(
                COUNT_SQL, 1.0, 1e-5
            )
    assert closed.spent() == before

    log = closed.server.log()
    refusals = [line for line in log.splitlines() if "refused: JWT refused: " in line]
    assert all(line.split()[2] == "INFO" for line in refusals)
    for reason, token in refused:
        assert any(reason in line for line in refusals), (reason, refusals)
        if token != "not.a.jwt":  # never logged, nor its payload or signature
            assert all(part not in log for part in [token, *token.split(".")[1:]] if part)


def test_the_algorithm_setting_admits_no_symmetric_or_none_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": "https://idp.example.org/jwks"}
    for algorithms in (["none"], ["HS256"], ["RS256", "HS512"], []):
        with pytest.raises(ValidationError):
            OIDCSettings(**base, algorithms=algorithms)
    with pytest.raises(ValidationError):
        OIDCSettings(**{**base, "jwks_url": "file:///etc/passwd"})
    assert Settings().auth.oidc is None  # off by default
    for key, value in oidc_env("https://idp.example.org/jwks").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LOMAS_AUTH__OIDC__ALGORITHMS", '["ES256"]')
    oidc = Settings().auth.oidc
    assert oidc is not None and (oidc.issuer, oidc.audience, oidc.algorithms) == (ISSUER, AUDIENCE, ["ES256"])
    assert (oidc.user_claim, oidc.leeway_s, oidc.jwks_cache_s) == ("preferred_username", 60.0, 300.0)


def test_an_unreachable_jwks_refuses_with_401_and_logs_why(
    tmp_path_factory: pytest.TempPathFactory, closed_port: int, provider: Provider
) -> None:
    down = start_closed(tmp_path_factory.mktemp("oidc-jwks-down"), f"http://127.0.0.1:{closed_port}/jwks.json")
    try:
        token = provider.mint()
        assert_refused(down.server, token)
        assert down.spent() == (0.0, 0)
        # The same answer as a refused API token.
        response = post(down.server, "get_remaining_budget", "lomas_" + "x" * 43)
        assert response.status_code == 401 and response.json() == INVALID_BODY
    finally:
        stop_server(down.server)
    log = down.server.log()
    assert "JWT refused: PyJWKClientConnectionError: Fail to fetch data from the url" in log
    assert token not in log and "Traceback" not in log


def test_without_oidc_a_jwt_is_refused_like_a_bad_api_token(
    provider: Provider, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'lomas.db'}")
    upgrade(engine)
    tokens = TokenStore(session_factory(engine))
    token = provider.mint()
    app = FastAPI()  # what create_app builds without auth.oidc: no validator
    app.state.oidc = None
    scope = {
        "type": "http", "method": "POST", "path": "/smartnoise_sql_query", "app": app, "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode()), (b"user-name", b"alice")],
    }
    with caplog.at_level(logging.INFO, logger="lomas.server.auth"), pytest.raises(AuthenticationError) as refused:
        asyncio.run(identify(Request(scope), open_mode=True, tokens=tokens))
    engine.dispose()
    assert (refused.value.status_code, str(refused.value)) == (401, "Invalid or expired token")
    assert refused.value.headers["WWW-Authenticate"] == 'Bearer realm="lomas", error="invalid_token"'
    assert "JWT refused: not an API token, and OIDC is not configured" in caplog.text
    assert token not in caplog.text
