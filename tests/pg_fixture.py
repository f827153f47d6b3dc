"""A throwaway PostgreSQL 15 cluster for the tests (pytest plugin: `pytest_plugins = ["pg_fixture"]`).

`postgres_url` (session): starts a private cluster in a temporary directory, listening on 127.0.0.1
only, on a free port, with its unix socket in that directory and fsync off; yields a SQLAlchemy URL
`postgresql://postgres@127.0.0.1:PORT/postgres`; stops the cluster and deletes it at the end.

`fresh_pg_url` (function): a new empty database `test_<n>` on that cluster, for one test.

`store_url` (function, parametrized): the URL of an empty admin store, once on a SQLite file and once
on a fresh PostgreSQL database (marked `postgres`); `engine` and `sessions` open that store, migrated.

PostgreSQL refuses to run as root. When the tests run as root, the cluster runs as the unprivileged
`postgres` system user (created by Debian's postgresql packages) through `runuser`. Missing binaries
or a missing `postgres` user make the fixture fail with a message saying what to install: the
PostgreSQL tests are never silently skipped.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from lomas.server.store.db import make_engine, session_factory, upgrade

PG_BIN_DIR = Path(os.environ.get("LOMAS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_SYSTEM_USER = "postgres"
_database_numbers = itertools.count(1)


class PostgresCluster:
    """A private PostgreSQL cluster driven with initdb / pg_ctl."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.run_as = _unprivileged_user()
        # As root, $TMPDIR may be a directory the postgres user cannot enter: /tmp always lets it in.
        parent = "/tmp" if self.run_as is not None else None
        self.root = Path(tempfile.mkdtemp(prefix="lomas-pg-", dir=parent))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = 0
        if self.run_as is not None:
            os.chown(self.root, self.run_as.pw_uid, self.run_as.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as.pw_name, "--", *command]
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        return subprocess.run(
            command, cwd=self.root, env=env, capture_output=True, text=True, check=check, timeout=120
        )

    def start(self) -> None:
        initdb = self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            check=False,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
        for _attempt in range(5):  # the free port may be taken between finding it and binding it
            self.port = _free_port()
            options = " ".join(
                [
                    f"-p {self.port}",
                    "-c listen_addresses=127.0.0.1",
                    f"-c unix_socket_directories={self.root}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=300",
                    "-c shared_buffers=32MB",
                ]
            )
            started = self._run(
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
                check=False,
            )
            if started.returncode == 0:
                return
        raise RuntimeError(f"PostgreSQL did not start:\n{started.stdout}\n{started.stderr}\n{self.log()}")

    def stop(self) -> None:
        if self.data_dir.joinpath("postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unprivileged_user() -> pwd.struct_passwd | None:
    """None when we are not root (run the cluster as ourselves), else the `postgres` system user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pytest.fail(
            "PostgreSQL refuses to run as root and there is no 'postgres' system user to run it as. "
            "Install Debian's postgresql-15 package (it creates the user) or create one: "
            "useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres",
            pytrace=False,
        )


def _check_binaries(bin_dir: Path) -> None:
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (bin_dir / name).is_file()]
    if missing:
        pytest.fail(
            f"PostgreSQL 15 binaries not found in {bin_dir} (missing: {', '.join(missing)}). The admin "
            "store tests need them: apt-get install postgresql-15, or point LOMAS_TEST_PG_BIN at the bin "
            "directory.",
            pytrace=False,
        )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.fail(
            "Running as root needs `runuser` (util-linux) to start PostgreSQL as 'postgres'.", pytrace=False
        )


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    _check_binaries(PG_BIN_DIR)
    cluster = PostgresCluster(PG_BIN_DIR)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """SQLAlchemy URL of the maintenance database `postgres` of the throwaway cluster."""
    return postgres_cluster.url


@pytest.fixture()
def fresh_pg_url(postgres_cluster: PostgresCluster) -> str:
    """SQLAlchemy URL of a new, empty database of the test's own."""
    return postgres_cluster.create_database(f"test_{next(_database_numbers)}")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty admin store: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'lomas.db'}"
    return str(request.getfixturevalue("fresh_pg_url"))


@pytest.fixture()
def engine(store_url: str) -> Iterator[Engine]:
    engine = make_engine(store_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture()
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)
