"""Shared fixtures: a real Lomas server process on loopback, with its own data dir and store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytest_plugins = ["pg_fixture", "http_fixture", "s3_fixture"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(data_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> LiveServer:
    """Start `python -m lomas.server` and wait until /state answers."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"server-{port}.log"
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("LOMAS_")}
    full_env.update(env or {})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lomas.server", "--port", str(port), "--data-dir", str(data_dir), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", data_dir, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/state", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not start in {timeout}s:\n{server.log()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One demo server (open mode, seeded store) shared by the tests that only read or spend their own user."""
    server = start_server(tmp_path_factory.mktemp("demo-server"), "--demo")
    yield server
    stop_server(server)


@pytest.fixture()
def fresh_demo_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A demo server of the test's own, for tests that spend budgets and count what was spent."""
    server = start_server(tmp_path / "server", "--demo")
    yield server
    stop_server(server)
