"""A static file server on loopback for the download tests (pytest plugin: `pytest_plugins = ["http_fixture"]`).

`http_server` (session): serves a temporary directory (`root`) over HTTP/1.1 on 127.0.0.1, on a free
port, from a thread of the test process; stopped at the end. Paths:

- `/<path>`: the file `root/<path>`, with a Content-Length;
- `/private/<path>`: the same file, only with `Authorization: Bearer <token>`: no header answers 401,
  another value 403;
- `/chunked/<path>`: the file in chunked transfer encoding, without Content-Length (a length the
  client cannot know in advance);
- `/goto?<url>`: a 302 redirect to `<url>` (relative or absolute).

`requests` records the path and headers of every request, so a test can tell whether the network was
touched and which headers were sent.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

TOKEN = "s3cr3t-token-for-tests"


@dataclass
class HttpServer:
    url: str
    root: Path
    token: str
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def _handler(server: HttpServer) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(server.root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            server.requests.append((self.path, {key.lower(): value for key, value in self.headers.items()}))
            parts = urlsplit(self.path)
            if parts.path == "/goto":
                self._answer(HTTPStatus.FOUND, b"", {"Location": unquote(parts.query)})
            elif parts.path.startswith("/private/"):
                given = self.headers.get("Authorization")
                if given is None:
                    self._answer(HTTPStatus.UNAUTHORIZED, b"no token", {"WWW-Authenticate": "Bearer"})
                elif given != f"Bearer {server.token}":
                    self._answer(HTTPStatus.FORBIDDEN, b"body that must not be shown")
                else:
                    self.path = self.path.removeprefix("/private")
                    super().do_GET()
            elif parts.path.startswith("/chunked/"):
                self._chunked(server.root / unquote(parts.path.removeprefix("/chunked/")))
            elif parts.path.startswith("/slow/"):
                self._chunked(server.root / unquote(parts.path.removeprefix("/slow/")), chunk_bytes=1, pause_s=0.1)
            else:
                super().do_GET()

        def _answer(self, status: HTTPStatus, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _chunked(self, path: Path, chunk_bytes: int = 64 * 1024, pause_s: float = 0.0) -> None:
            if not path.is_file():
                self._answer(HTTPStatus.NOT_FOUND, b"not found")
                return
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            with path.open("rb") as source:
                while chunk := source.read(chunk_bytes):
                    try:
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        return
                    time.sleep(pause_s)
            self.wfile.write(b"0\r\n\r\n")

    return Handler


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """A file server on 127.0.0.1 serving a temporary directory; tests put their files in `root`."""
    root = tmp_path_factory.mktemp("http-root")
    state = HttpServer(url="", root=root, token=TOKEN)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="http-fixture", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    return _free_port()
