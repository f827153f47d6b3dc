"""Real S3 servers on loopback for the download tests (pytest plugin: `pytest_plugins = ["s3_fixture"]`).

Each server is a `python -m moto.server` process of its own on 127.0.0.1 and a free port (moto keeps
its state, and its authentication switch, per process), stopped at the end of the session.

`s3_server` (session): moto with authentication off: any access key is accepted, and unsigned
(anonymous) requests too. `s3_admin(url)` gives a boto3 client to create buckets and objects.

`s3_auth_server` (session): a second moto that checks signatures and IAM policies once `require_auth()`
was called: keys must then belong to an IAM user created on that server (before the switch) and its
policies must allow the action. moto answers InvalidAccessKeyId for unknown keys,
SignatureDoesNotMatch for a wrong secret and AccessDenied when no policy allows the action.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

ADMIN_KEY_ID = "moto-admin"
ADMIN_SECRET = "moto-admin-secret"


@dataclass
class MotoServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def require_auth(self) -> None:
        """From now on, check every request's signature and IAM permissions."""
        httpx.post(f"{self.url}/moto-api/reset-auth", content=b"0", timeout=10).raise_for_status()


def s3_admin(url: str, **keys: str) -> Any:
    """A boto3 S3 client on the moto server at `url` (with the admin test keys unless others are given)."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=keys.get("aws_access_key_id", ADMIN_KEY_ID),
        aws_secret_access_key=keys.get("aws_secret_access_key", ADMIN_SECRET),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto(timeout: float = 30.0) -> MotoServer:
    """Start `python -m moto.server` on 127.0.0.1 and wait until it answers."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "MOTO_"))}
    env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
    log_path = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
    for _attempt in range(3):  # the free port may be taken between finding it and binding it
        port = _free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        server = MotoServer(f"http://127.0.0.1:{port}", process, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{server.url}/moto-api/", timeout=1).status_code == 200:
                    return server
            except httpx.HTTPError:
                time.sleep(0.1)
        if process.poll() is None:
            process.kill()
            process.wait()
            break
    raise RuntimeError(f"moto server did not start:\n{server.log()}")


def stop_moto(server: MotoServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    server.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """URL of a moto S3 server without authentication."""
    server = start_moto()
    try:
        yield server.url
    finally:
        stop_moto(server)


@pytest.fixture(scope="session")
def s3_auth_server() -> Iterator[MotoServer]:
    """A moto S3 server of its own, to call `require_auth()` on once users, buckets and objects exist."""
    server = start_moto()
    try:
        yield server
    finally:
        stop_moto(server)
