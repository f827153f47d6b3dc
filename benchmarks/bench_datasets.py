"""SmartNoise-SQL latency and server memory on a large dataset: from memory, by scan, from PostgreSQL.

    python benchmarks/bench_datasets.py [--rows 10000000] [--duration 10] [--only memory scan postgresql]
                                        [--memory-limit-test [--limit-mib 600]] [--work-dir benchmarks/.data]

Run it with the Python of an environment where `lomas` is installed (the server is started with the
same interpreter). The server helpers come from bench_queries.py. See benchmarks/README.md for what it
does and what it prints.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from bench_queries import (
    BENCH_USER,
    COUNT_SQL,
    GRANT_DELTA,
    GRANT_EPSILON,
    HTTP_TIMEOUT_S,
    BenchmarkError,
    Server,
    free_port,
    machine_info,
    penguin_metadata,
    process_tree,
    server_memory,
    sql_body,
    start_server,
    stop_server,
)

from lomas.server.store.db import make_engine, session_factory, upgrade
from lomas.server.store.service import AdminStore

SCENARIOS = {
    "count": COUNT_SQL,
    "avg_group_by": "SELECT species, COUNT(*) AS n, AVG(bill_length_mm) AS avg_bill FROM df GROUP BY species",
}
SERVES = ("memory", "scan", "postgresql")
SUFFIX = {"memory": "MEM", "scan": "SCAN", "postgresql": "PG"}
WARMUP_QUERIES = 2
ROW_GROUP_ROWS = 1_000_000
SEED = 20240601
PG_BIN_DIR = Path(os.environ.get("LOMAS_BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_CONNECTION = "bench"  # the secret's name; the server reads LOMAS_SECRETS__POSTGRESQL__BENCH__URL
MIB = 2**20

# Per species: share of the rows, islands with their shares, and mean and standard deviation of the bill's
# length and depth, the flipper's length and the body mass (close to the Palmer penguins' figures).
ADELIE_ISLANDS = {"Biscoe": 0.29, "Dream": 0.37, "Torgersen": 0.34}
SPECIES = {
    "Adelie": (0.44, ADELIE_ISLANDS, (38.8, 2.7), (18.3, 1.2), (190, 6.5), (3700, 460)),
    "Chinstrap": (0.20, {"Dream": 1.0}, (48.8, 3.3), (18.4, 1.1), (196, 7.1), (3733, 384)),
    "Gentoo": (0.36, {"Biscoe": 1.0}, (47.5, 3.1), (15.0, 1.0), (217, 6.5), (5076, 504)),
}
MEASURES = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")
MISSING_MEASURE = 0.006  # share of missing values of each measure
MISSING_SEX = 0.03


# -- data ------------------------------------------------------------------------------------------
def rows_label(rows: int) -> str:
    """`10M`, `250K` or the plain number: the part of the dataset, file and table names telling the size."""
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows % 1_000 == 0:
        return f"{rows // 1_000}K"
    return str(rows)


def _strings(categories: list[str], codes: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    """A plain (not dictionary-encoded) Arrow string column from category codes."""
    indices = pa.array(codes.astype(np.int8), mask=missing)
    return pa.DictionaryArray.from_arrays(indices, pa.array(categories)).cast(pa.string())


def penguin_chunk(rng: np.random.Generator, rows: int, metadata: dict[str, Any]) -> pa.Table:
    """`rows` penguins with realistic values inside the metadata's bounds and categories."""
    columns = metadata["columns"]
    species_names = columns["species"]["categories"]
    islands = columns["island"]["categories"]
    if sorted(species_names) != sorted(SPECIES):
        raise BenchmarkError(f"the PENGUIN metadata's species {species_names} are not {sorted(SPECIES)}")
    species = rng.choice(len(species_names), size=rows, p=[SPECIES[name][0] for name in species_names])
    island = np.empty(rows, dtype=np.int8)
    values = {name: np.empty(rows) for name in MEASURES}
    for code, name in enumerate(species_names):
        _, island_shares, *stats = SPECIES[name]
        rows_of = np.flatnonzero(species == code)
        island_codes = [islands.index(island_name) for island_name in island_shares]
        island[rows_of] = rng.choice(island_codes, size=rows_of.size, p=list(island_shares.values()))
        for measure, (mean, sd) in zip(MEASURES, stats, strict=True):
            values[measure][rows_of] = rng.normal(mean, sd, size=rows_of.size)
    arrays: dict[str, pa.Array] = {
        "species": _strings(species_names, species),
        "island": _strings(islands, island),
    }
    for measure in MEASURES:
        bounds = columns[measure]
        clipped = np.clip(values[measure], bounds["lower"], bounds["upper"]).round(1)
        arrays[measure] = pa.array(clipped, mask=rng.random(rows) < MISSING_MEASURE)
    arrays["sex"] = _strings(
        columns["sex"]["categories"], rng.integers(0, 2, size=rows), rng.random(rows) < MISSING_SEX
    )
    arrays["year"] = pa.array(rng.choice(columns["year"]["categories"], size=rows).astype(np.int64))
    return pa.table({name: arrays[name] for name in columns})


def ensure_parquet(path: Path, rows: int, metadata: dict[str, Any]) -> None:
    """Write `rows` penguins to `path` in row groups of ROW_GROUP_ROWS, unless a file of that size is there.

    The rows are made and written one row group at a time, so generating stays within ~100 MiB whatever
    `rows`; the file is written under a temporary name and renamed, so an interrupted run leaves none.
    """
    if path.is_file() and pq.ParquetFile(path).metadata.num_rows == rows:
        print(f"  {path.name}: {rows:,} rows, cached")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    started = time.perf_counter()
    rng = np.random.default_rng([SEED, rows])
    writer: pq.ParquetWriter | None = None
    try:
        for offset in range(0, rows, ROW_GROUP_ROWS):
            chunk = penguin_chunk(rng, min(ROW_GROUP_ROWS, rows - offset), metadata)
            if writer is None:
                writer = pq.ParquetWriter(partial, chunk.schema)
            writer.write_table(chunk, row_group_size=ROW_GROUP_ROWS)
    finally:
        if writer is not None:
            writer.close()
    partial.replace(path)
    print(
        f"  {path.name}: wrote {rows:,} rows ({path.stat().st_size / MIB:.0f} MiB on disk) "
        f"in {time.perf_counter() - started:.1f} s"
    )


def arrow_nbytes(path: Path) -> int:
    """Bytes of the file's rows as an Arrow table (pyarrow's `Table.nbytes`), read one row group at a time."""
    parquet = pq.ParquetFile(path)
    return int(sum(parquet.read_row_group(index).nbytes for index in range(parquet.num_row_groups)))


def rows_for_arrow_bytes(target_bytes: int, metadata: dict[str, Any]) -> int:
    """Rows (a whole number of millions) whose Arrow table holds at least `target_bytes`."""
    sample = 100_000
    per_row: float = penguin_chunk(np.random.default_rng(SEED), sample, metadata).nbytes / sample
    return math.ceil(target_bytes / per_row / 1_000_000) * 1_000_000


# -- PostgreSQL ------------------------------------------------------------------------------------
class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 and a socket there.

    The same steps as tests/pg_fixture.py (which benchmarks do not import: it is a pytest plugin). As root,
    PostgreSQL runs as the `postgres` system user through `runuser`.
    """

    def __init__(self, bin_dir: Path) -> None:
        missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (bin_dir / name).is_file()]
        if missing:
            raise BenchmarkError(f"PostgreSQL binaries missing from {bin_dir}: {', '.join(missing)}")
        self.bin_dir = bin_dir
        self.run_as = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="lomas-bench-pg-", dir="/tmp" if self.run_as else None))
        if self.run_as is not None:
            os.chown(self.root, self.run_as.pw_uid, self.run_as.pw_gid)
        self.data_dir = self.root / "data"
        self.port = 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as.pw_name, "--", *command]
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        return subprocess.run(
            command, check=False, cwd=self.root, env=env, capture_output=True, text=True, timeout=120
        )

    def start(self) -> None:
        """initdb, then start on a free port; fsync off, `wal_level=minimal` so that COPY skips the WAL."""
        initdb = self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        if initdb.returncode != 0:
            raise BenchmarkError(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
        for _attempt in range(5):  # the free port may be taken between finding it and binding it
            self.port = free_port()
            options = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c wal_level=minimal -c max_wal_senders=0"
            )
            log = str(self.root / "postgres.log")
            started = self._run("pg_ctl", "-D", str(self.data_dir), "-l", log, "-o", options, "-w", "start")
            if started.returncode == 0:
                return
        raise BenchmarkError(f"PostgreSQL did not start:\n{started.stdout}\n{started.stderr}")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


PG_TYPES = {pa.string(): "text", pa.float64(): "double precision", pa.int64(): "bigint"}


def load_into_postgres(url: str, parquet_path: Path, table: str) -> None:
    """Create `table` and COPY the file into it, one row group at a time as CSV; then ANALYZE it."""
    parquet = pq.ParquetFile(parquet_path)
    columns = ", ".join(f"{column.name} {PG_TYPES[column.type]}" for column in parquet.schema_arrow)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as connection:
        # Created and filled in one transaction: with wal_level=minimal the rows skip the WAL, and FREEZE
        # writes them as already vacuumed.
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {table} ({columns})")
            with cursor.copy(f"COPY {table} FROM STDIN (FORMAT csv, FREEZE)") as copy:
                options = pa_csv.WriteOptions(include_header=False)  # nulls are written empty, unquoted
                for index in range(parquet.num_row_groups):
                    buffer = io.BytesIO()
                    pa_csv.write_csv(parquet.read_row_group(index), buffer, options)
                    copy.write(buffer.getbuffer())
        connection.execute(f"ANALYZE {table}")
        row = connection.execute(f"SELECT pg_total_relation_size('{table}')").fetchone()
        assert row is not None
    print(
        f"  loaded {parquet.metadata.num_rows:,} rows into {table} ({row[0] / MIB:.0f} MiB) "
        f"in {time.perf_counter() - started:.1f} s"
    )


# -- the store -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """One registered dataset: its name, how it is served, and its access document."""

    name: str
    serve: str
    rows: int
    access: dict[str, Any]


def make_dataset(serve: str, rows: int, parquet_path: Path) -> Dataset:
    label = rows_label(rows)
    if serve == "postgresql":
        access = {
            "kind": "postgresql",
            "connection": PG_CONNECTION,
            "table": f"public.penguins_{label.lower()}",
        }
    else:
        access = {"kind": "local", "path": str(parquet_path.resolve()), "format": "parquet", "serve": serve}
    return Dataset(f"PENGUIN_{label}_{SUFFIX[serve]}", serve, rows, access)


def seed_store(data_dir: Path, datasets: list[Dataset], metadata: dict[str, Any]) -> None:
    """An admin store holding `datasets` and the benchmark user, with a grant on each."""
    engine = make_engine(f"sqlite:///{(data_dir / 'lomas.db').resolve()}")
    try:
        upgrade(engine)
        store = AdminStore(session_factory(engine))
        store.add_user(BENCH_USER)
        for dataset in datasets:
            store.register_dataset(dataset.name, dataset.access, {**metadata, "rows": dataset.rows})
            store.grant(BENCH_USER, dataset.name, GRANT_EPSILON, GRANT_DELTA)
    finally:
        engine.dispose()


# -- measuring -------------------------------------------------------------------------------------
@dataclass
class Latencies:
    """One scenario: a single client sending the same query back to back for the duration."""

    dataset: str
    serve: str
    scenario: str
    first_ms: float
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float


def timed_query(client: httpx.Client, body: dict[str, Any]) -> float:
    """Seconds taken by one `POST /smartnoise_sql_query`; BenchmarkError unless it answers 200."""
    started = time.perf_counter()
    response = client.post("/smartnoise_sql_query", json=body)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise BenchmarkError(f"{body['dataset_name']}: HTTP {response.status_code}: {response.text[:500]}")
    return elapsed


def run_scenario(client: httpx.Client, dataset: Dataset, scenario: str, duration: float) -> Latencies:
    """WARMUP_QUERIES queries (the first one's time is kept), then queries back to back for `duration` s."""
    body = sql_body(dataset.name, SCENARIOS[scenario])
    first = timed_query(client, body)
    for _ in range(WARMUP_QUERIES - 1):
        timed_query(client, body)
    samples: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < duration:
        samples.append(timed_query(client, body))
    elapsed = time.perf_counter() - started
    p50, p95, p99 = np.percentile(np.array(samples) * 1000, [50, 95, 99])
    return Latencies(
        dataset.name, dataset.serve, scenario, round(first * 1000, 1), len(samples),
        round(float(p50), 1), round(float(p95), 1), round(float(p99), 1), round(len(samples) / elapsed, 1),
    )  # fmt: skip


def bench_client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"user-name": BENCH_USER}, timeout=HTTP_TIMEOUT_S)


def vm_status(pid: int) -> dict[str, int]:
    """The `Vm*` and `Rss*` figures of /proc/<pid>/status in bytes (VmHWM, VmRSS, VmSize, VmData...)."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith(("Vm", "Rss")) and value.strip().endswith("kB"):
            figures[key] = int(value.split()[0]) * 1024
    return figures


@dataclass
class ServerRun:
    """Peak resident memory of the server process serving one dataset, from its start to its end."""

    dataset: Dataset
    hwm_start_mib: float
    hwm_end_mib: float
    results: list[Latencies] = field(default_factory=list)

    @property
    def growth_mib(self) -> float:
        return self.hwm_end_mib - self.hwm_start_mib


@contextmanager
def fresh_server(data_dir: Path, extra_env: dict[str, str]) -> Iterator[Server]:
    """A server of its own for one measurement (one worker); `extra_env` holds the PostgreSQL secret."""
    server = start_server(data_dir, 1, extra_env=extra_env)
    try:
        yield server
    except BenchmarkError:
        print(f"server log (tail):\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        stop_server(server)


def serving_pid(server: Server) -> int:
    """The process that answers: with one worker, uvicorn serves from the process it was started in."""
    return server.process.pid


def measure_dataset(
    data_dir: Path, extra_env: dict[str, str], dataset: Dataset, duration: float
) -> ServerRun:
    """Both scenarios on `dataset` in a server of its own, so that its peak memory is the dataset's."""
    with fresh_server(data_dir, extra_env) as server:
        pid = serving_pid(server)
        run = ServerRun(dataset, vm_status(pid)["VmHWM"] / MIB, 0.0)
        with bench_client(server) as client:
            for scenario in SCENARIOS:
                print(f"  {dataset.name}: {scenario} for {duration:g} s")
                run.results.append(run_scenario(client, dataset, scenario, duration))
        run.hwm_end_mib = vm_status(pid)["VmHWM"] / MIB
        others = [
            process for process in server_memory(server.process.pid)["processes"] if process["pid"] != pid
        ]
        if others:
            print(f"  (other server processes, not counted: {[(p['pid'], p['vm_hwm_mib']) for p in others]})")
    return run


# -- the memory limit ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limit:
    """An rlimit set on the idle server: the `/proc/<pid>/status` figure it starts from, plus the headroom."""

    rlimit: int
    base: str
    prlimit_option: str


LIMITS: dict[str, Limit | None] = {
    "none": None,  # the control: the same queries without a limit
    # Private writable mappings (Linux >= 4.7), which hold every anonymous page: anonymous RSS stays under it.
    "RLIMIT_DATA": Limit(resource.RLIMIT_DATA, "VmRSS", "--data"),
    # All address space, reserved or not: it cannot start below the idle VmSize.
    "RLIMIT_AS": Limit(resource.RLIMIT_AS, "VmSize", "--as"),
}
CAUSE = re.compile(r"^[\w.]+(Error|Exception)\b| ERROR ")  # an exception, or a logged error


def cgroup_v2_memory() -> str:
    """Whether a cgroup v2 `memory.max` could confine the server here, and if not, why."""
    mounts = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    cgroup2 = [fields for fields in mounts if fields[fields.index("-") + 1] == "cgroup2"]
    if not cgroup2:
        return "no cgroup v2 hierarchy is mounted"
    mount_point, options = cgroup2[0][4], cgroup2[0][5]
    own = next(
        line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::")
    )
    directory = Path(mount_point + own)
    controllers = (directory / "cgroup.controllers").read_text().split()
    if "memory" not in controllers:
        offered = " ".join(controllers) or "none"
        return f"the cgroup v2 hierarchy at {mount_point} offers no memory controller here ({offered})"
    if "ro" in options.split(","):
        return f"{mount_point} is mounted read-only"
    return f"{directory} offers the memory controller: memory.max could confine the server (not tried here)"


@dataclass
class LimitSetup:
    """The dataset of the memory limit test: twice the headroom, as Arrow, served by scan and from memory."""

    headroom: int
    rows: int
    nbytes: int
    scan: Dataset
    memory: Dataset
    cgroup: str

    def describe(self) -> str:
        return (
            f"{self.rows:,} rows, Arrow {self.nbytes / MIB:.0f} MiB = {self.nbytes / self.headroom:.1f} x "
            f"the headroom of {self.headroom / MIB:.0f} MiB (the limit: idle VmRSS + headroom for "
            f"RLIMIT_DATA, idle VmSize + headroom for RLIMIT_AS); cgroup v2: {self.cgroup}"
        )


def prepare_limit_test(work_dir: Path, limit_mib: int, metadata: dict[str, Any]) -> LimitSetup:
    """Generate (or find) a file whose Arrow table is at least twice `limit_mib`."""
    headroom = limit_mib * MIB
    rows = rows_for_arrow_bytes(2 * headroom, metadata)
    path = work_dir / f"penguin_{rows_label(rows).lower()}.parquet"
    ensure_parquet(path, rows, metadata)
    return LimitSetup(
        headroom,
        rows,
        arrow_nbytes(path),
        make_dataset("scan", rows, path),
        make_dataset("memory", rows, path),
        cgroup_v2_memory(),
    )


@dataclass
class LimitRun:
    """The scan-mode dataset, then its memory-mode twin, queried in a fresh server under one limit."""

    limit: str
    idle: dict[str, int]
    limit_bytes: int | None
    results: list[Latencies] = field(default_factory=list)
    scan_error: str | None = None
    hwm_end_mib: float = math.nan
    memory_mode: str = "not tried: the server had exited"


def logged_cause(server: Server) -> str:
    """The server log's last exception or error line (`ArrowMemoryError`, `OutOfMemoryException`...)."""
    causes = [line for line in server.log_tail(200).splitlines() if CAUSE.search(line)]
    return f" [server log: {causes[-1][:200]}]" if causes else ""


def limit_run(data_dir: Path, name: str, setup: LimitSetup, duration: float) -> LimitRun:
    """A fresh server, idle, gets the limit `name` (its idle figure + the headroom); then both scenarios
    on the scan-mode dataset, and one COUNT on the memory-mode one (the same file)."""
    limit, headroom, scan, loaded = LIMITS[name], setup.headroom, setup.scan, setup.memory
    with fresh_server(data_dir, {}) as server:
        pid = serving_pid(server)
        idle = vm_status(pid)
        run = LimitRun(name, idle, None)
        described = "no limit"
        if limit is not None:
            run.limit_bytes = idle[limit.base] + headroom
            for process in process_tree(server.process.pid):  # what `prlimit --pid P --data=N` does
                resource.prlimit(process, limit.rlimit, (run.limit_bytes, run.limit_bytes))
            described = (
                f"limit {limit.base} + {headroom / MIB:.0f} MiB = {run.limit_bytes / MIB:.0f} MiB "
                f"(prlimit --pid {pid} {limit.prlimit_option}={run.limit_bytes})"
            )
        print(
            f"  idle VmRSS {idle['VmRSS'] / MIB:.0f} MiB, VmData {idle['VmData'] / MIB:.0f} MiB, "
            f"VmSize {idle['VmSize'] / MIB:.0f} MiB; {described}"
        )
        with bench_client(server) as client:
            try:
                for scenario in SCENARIOS:
                    print(f"  {scan.name}, {name}: {scenario} for {duration:g} s")
                    run.results.append(run_scenario(client, scan, scenario, duration))
            except (BenchmarkError, httpx.HTTPError) as error:
                run.scan_error = str(error)[:300] + logged_cause(server)
            if server.process.poll() is None:
                run.hwm_end_mib = vm_status(pid)["VmHWM"] / MIB
                print(f"  {loaded.name}, {name}: one COUNT (loads {loaded.rows:,} rows into memory)")
                run.memory_mode = memory_mode_outcome(client, server, loaded)
    return run


def memory_mode_outcome(client: httpx.Client, server: Server, dataset: Dataset) -> str:
    """What became of one COUNT on a dataset that must be loaded into memory: an answer, an error, a crash."""
    started = time.perf_counter()
    try:
        response = client.post("/smartnoise_sql_query", json=sql_body(dataset.name, COUNT_SQL))
        outcome = f"HTTP {response.status_code}"
        if response.status_code != 200:
            outcome += f": {response.json().get('message', response.text)[:120]}{logged_cause(server)}"
    except httpx.HTTPError as error:
        outcome = f"{type(error).__name__}: {error}"
    elapsed = time.perf_counter() - started
    time.sleep(0.5)
    if server.process.poll() is not None:
        outcome += f"; the server exited with {server.process.returncode}"
    else:
        outcome += f"; VmHWM then {vm_status(serving_pid(server))['VmHWM'] / MIB:.0f} MiB"
    return f"{outcome} ({elapsed:.1f} s)"


# -- report ----------------------------------------------------------------------------------------
def markdown(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; `|` and line breaks in cells are replaced so that the table stays one."""
    cells = [[str(cell).replace("|", "/").replace("\n", " ") for cell in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def latency_table(runs: list[ServerRun]) -> str:
    header = ["dataset", "serve", "scenario", "first ms", "requests", "p50 ms", "p95 ms", "p99 ms", "req/s"]
    rows = [
        [r.dataset, r.serve, r.scenario, r.first_ms, r.requests, r.p50_ms, r.p95_ms, r.p99_ms, r.rps]
        for run in runs
        for r in run.results
    ]
    return markdown(header, rows)


def memory_table(runs: list[ServerRun], nbytes: int) -> str:
    header = ["dataset", "VmHWM at start MiB", "VmHWM after MiB", "growth MiB", "growth / Arrow size"]
    rows = [
        [
            run.dataset.name,
            f"{run.hwm_start_mib:.0f}",
            f"{run.hwm_end_mib:.0f}",
            f"{run.growth_mib:.0f}",
            f"{run.growth_mib * MIB / nbytes:.2f}",
        ]
        for run in runs
    ]
    return markdown(header, rows)


def scan_outcome(run: LimitRun) -> str:
    """`count p50 12.3 ms p99 15.0 ms (456 req), ...` and why the scan queries failed, if they did."""
    answered = [f"{r.scenario} p50 {r.p50_ms} ms p99 {r.p99_ms} ms ({r.requests} req)" for r in run.results]
    failed = [] if run.scan_error is None else [f"failed: {run.scan_error}"]
    return ", ".join(answered + failed)


def limit_table(runs: list[LimitRun]) -> str:
    header = [
        "limit",
        "idle VmRSS MiB",
        "idle VmData MiB",
        "idle VmSize MiB",
        "limit MiB",
        "scan-mode queries",
        "VmHWM after them MiB",
        "memory-mode COUNT",
    ]
    rows = [
        [
            run.limit,
            f"{run.idle['VmRSS'] / MIB:.0f}",
            f"{run.idle['VmData'] / MIB:.0f}",
            f"{run.idle['VmSize'] / MIB:.0f}",
            "-" if run.limit_bytes is None else f"{run.limit_bytes / MIB:.0f}",
            scan_outcome(run),
            f"{run.hwm_end_mib:.0f}",
            run.memory_mode,
        ]
        for run in runs
    ]
    return markdown(header, rows)


def report(
    machine: dict[str, Any],
    rows: int,
    nbytes: int,
    runs: list[ServerRun],
    limit_setup: LimitSetup | None,
    limit_runs: list[LimitRun],
) -> str:
    """The figures as Markdown, to paste into a note."""
    parts = [
        (
            f"Machine: {machine['cpu_model']}, {machine['cpu_count']} CPUs ({machine['nproc']} available), "
            f"{machine['mem_total_mib'] / 1024:.1f} GiB RAM, Python {machine['python']}.\n"
        ),
        (
            f"Dataset: {rows:,} PENGUIN rows, Arrow in memory {nbytes / MIB:.0f} MiB. One client, one "
            "server worker; each dataset is served by a fresh server process.\n"
        ),
        latency_table(runs),
        "",
        memory_table(runs, nbytes),
    ]
    if limit_setup is not None:
        parts += ["", f"Memory limit test: {limit_setup.describe()}.\n", limit_table(limit_runs)]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the dataset (default 10M)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario (default 10)")
    parser.add_argument(
        "--only", nargs="+", choices=SERVES, metavar="SERVE", help=f"only these: {', '.join(SERVES)}"
    )
    parser.add_argument(
        "--memory-limit-test",
        action="store_true",
        help="also query, under memory limits, a scan-mode dataset twice the size of the limit",
    )
    parser.add_argument(
        "--limit-mib", type=int, default=600, help="the limit's headroom over the idle server (default 600)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(__file__).resolve().parent / ".data",
        help="where the Parquet files are kept between runs (default benchmarks/.data)",
    )
    args = parser.parse_args(argv)
    if args.rows <= 0 or args.duration <= 0 or args.limit_mib <= 0:
        parser.error("--rows, --duration and --limit-mib must be positive")

    # SIGTERM unwinds like Ctrl-C, so that the servers and the PostgreSQL cluster are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    machine = machine_info()
    print(
        f"machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"{machine['mem_total_mib']:.0f} MiB RAM"
    )
    metadata = penguin_metadata()
    print(f"data in {args.work_dir}")
    parquet_path = args.work_dir / f"penguin_{rows_label(args.rows).lower()}.parquet"
    ensure_parquet(parquet_path, args.rows, metadata)
    nbytes = arrow_nbytes(parquet_path)
    print(f"  Arrow in memory: {nbytes / MIB:.0f} MiB ({nbytes / args.rows:.1f} bytes per row)")
    datasets = [
        make_dataset(serve, args.rows, parquet_path) for serve in SERVES if serve in (args.only or SERVES)
    ]
    limit_setup = (
        prepare_limit_test(args.work_dir, args.limit_mib, metadata) if args.memory_limit_test else None
    )
    if limit_setup is not None:
        print(f"  memory limit test: {limit_setup.describe()}")

    data_dir = Path(tempfile.mkdtemp(prefix="lomas-bench-datasets-"))
    cluster: PostgresCluster | None = None
    runs: list[ServerRun] = []
    limit_runs: list[LimitRun] = []
    failed = False
    try:
        extra_env: dict[str, str] = {}
        in_postgres = next((dataset for dataset in datasets if dataset.serve == "postgresql"), None)
        if in_postgres is not None:
            cluster = PostgresCluster(PG_BIN_DIR)
            cluster.start()
            print(f"PostgreSQL 15 on port {cluster.port}")
            load_into_postgres(cluster.url, parquet_path, in_postgres.access["table"])
            extra_env[f"LOMAS_SECRETS__POSTGRESQL__{PG_CONNECTION.upper()}__URL"] = cluster.url
        limit_datasets = [] if limit_setup is None else [limit_setup.scan, limit_setup.memory]
        seed_store(data_dir, datasets + limit_datasets, metadata)
        for dataset in datasets:
            print(f"a fresh server for {dataset.name}")
            runs.append(measure_dataset(data_dir, extra_env, dataset, args.duration))
        if limit_setup is not None:
            for limit in LIMITS:
                print(f"a fresh server for {limit_setup.scan.name} and {limit_setup.memory.name}: {limit}")
                limit_runs.append(limit_run(data_dir, limit, limit_setup, args.duration))
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        failed = True
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print()
    print(report(machine, args.rows, nbytes, runs, limit_setup, limit_runs))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
