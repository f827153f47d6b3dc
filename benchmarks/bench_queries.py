"""Latency, throughput and memory of DP queries through a real Lomas server.

    python benchmarks/bench_queries.py [--rows 1000000] [--duration 10] [--workers 1]
                                       [--only NAME ...] [--out-dir bench-results]

Run it with the Python of an environment where `lomas` is installed (the server is started with the
same interpreter). See benchmarks/README.md for what it does and what it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

BENCH_USER = "bench"
BIG_DATASET = "PENGUIN_1M"
QUERY_EPSILON = 1.0
QUERY_DELTA = 1e-5
GRANT_EPSILON = 1e9
GRANT_DELTA = 0.5
WARMUP_REQUESTS = 5
HTTP_TIMEOUT_S = 120.0

COUNT_SQL = "SELECT COUNT(*) AS n FROM df"
GROUP_BY_SQL = "SELECT species, AVG(body_mass_g) AS m FROM df GROUP BY species"


def sql_body(dataset: str, sql: str) -> dict[str, Any]:
    return {
        "dataset_name": dataset,
        "query_str": sql,
        "epsilon": QUERY_EPSILON,
        "delta": QUERY_DELTA,
        "mechanisms": {},
        "postprocess": True,
    }


def penguin_metadata() -> dict[str, Any]:
    import lomas.server.demo as demo_package

    return yaml.safe_load((Path(demo_package.__file__).parent / "datasets" / "penguin_metadata.yaml").read_text())


def opendp_body(dataset: str, rows: int, statistic: str) -> dict[str, Any]:
    """A count (Laplace) or a bounded mean (Laplace) of the CSV rows, in the 0.4 wire format."""
    import opendp.prelude as dp

    from lomas.client.opendp import pipeline_json

    dp.enable_features("contrib")
    split = dp.t.make_split_dataframe(separator=",", col_names=list(penguin_metadata()["columns"]))
    if statistic == "count":
        pipeline = split >> dp.t.make_select_column(key="species", TOA=str) >> dp.t.then_count()
        measurement = pipeline >> dp.m.then_laplace(scale=1.0 / QUERY_EPSILON)
    else:
        pipeline = (
            split
            >> dp.t.make_select_column(key="bill_length_mm", TOA=str)
            >> dp.t.then_cast_default(TOA=float)
            >> dp.t.then_impute_constant(45.0)
            >> dp.t.then_clamp(bounds=(30.0, 65.0))
            >> dp.t.then_resize(size=rows, constant=45.0)
            >> dp.t.then_mean()
        )
        measurement = pipeline >> dp.m.then_laplace(scale=35.0 / rows / QUERY_EPSILON)
    return {"dataset_name": dataset, "opendp_json": pipeline_json(measurement), "fixed_delta": None}


def diffprivlib_body(dataset: str) -> dict[str, Any]:
    """StandardScaler + LogisticRegression predicting species from the bill's length and depth."""
    from diffprivlib import models
    from sklearn.pipeline import Pipeline

    from lomas.client.diffprivlib import serialise_pipeline

    pipeline = Pipeline(
        [
            ("scaler", models.StandardScaler(bounds=([30.0, 13.0], [65.0, 23.0]), epsilon=0.5)),
            ("classifier", models.LogisticRegression(data_norm=83.7, epsilon=QUERY_EPSILON)),
        ]
    )
    return {
        "dataset_name": dataset,
        "diffprivlib_json": serialise_pipeline(pipeline),
        "feature_columns": ["bill_length_mm", "bill_depth_mm"],
        "target_columns": ["species"],
        "test_size": 0.2,
        "test_train_split_seed": 1,
        "imputer_strategy": "drop",
    }


@dataclass(frozen=True)
class Query:
    """One benchmarked request: `POST /{library}_query` with `body(rows of the big dataset)`."""

    library: str
    dataset: str
    description: str
    body: Callable[[int], dict[str, Any]]


PENGUIN_ROWS = 344
QUERIES = {
    "sql_count": Query("smartnoise_sql", "PENGUIN", COUNT_SQL, lambda _: sql_body("PENGUIN", COUNT_SQL)),
    "sql_group_by_1m": Query(
        "smartnoise_sql", BIG_DATASET, GROUP_BY_SQL, lambda _: sql_body(BIG_DATASET, GROUP_BY_SQL)
    ),
    "opendp_count": Query(
        "opendp", "PENGUIN", "count, Laplace", lambda _: opendp_body("PENGUIN", PENGUIN_ROWS, "count")
    ),
    "opendp_mean": Query(
        "opendp", "PENGUIN", "bounded mean, Laplace", lambda _: opendp_body("PENGUIN", PENGUIN_ROWS, "mean")
    ),
    "opendp_count_1m": Query(
        "opendp", BIG_DATASET, "count, Laplace", lambda rows: opendp_body(BIG_DATASET, rows, "count")
    ),
    "opendp_mean_1m": Query(
        "opendp", BIG_DATASET, "bounded mean, Laplace", lambda rows: opendp_body(BIG_DATASET, rows, "mean")
    ),
    "diffprivlib_logreg": Query(
        "diffprivlib", "PENGUIN", "StandardScaler + LogisticRegression", lambda _: diffprivlib_body("PENGUIN")
    ),
    "diffprivlib_logreg_1m": Query(
        "diffprivlib", BIG_DATASET, "StandardScaler + LogisticRegression", lambda _: diffprivlib_body(BIG_DATASET)
    ),
}
SCENARIOS = [
    ("sql_count", 1),
    ("sql_count", 8),
    ("sql_group_by_1m", 1),
    ("sql_group_by_1m", 8),
    ("opendp_count", 1),
    ("opendp_count", 8),
    ("opendp_mean", 1),
    ("opendp_count_1m", 1),
    ("opendp_mean_1m", 1),
    ("diffprivlib_logreg", 1),
    ("diffprivlib_logreg_1m", 1),
]
TARGETS = {  # what the project aims for; reported, never asserted
    "sql_count p50 ms (1 client)": ("sql_count", 1, "p50_ms", "<=", 6.0),
    "sql_group_by_1m p50 ms (1 client)": ("sql_group_by_1m", 1, "p50_ms", "<=", 100.0),
    "sql_count throughput req/s (8 clients)": ("sql_count", 8, "throughput_rps", ">=", 300.0),
    "opendp_count p50 ms (1 client)": ("opendp_count", 1, "p50_ms", "<=", 3.0),
}


class BenchmarkError(RuntimeError):
    pass


# -- machine and processes -------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total_kib = _proc_status_kib(Path("/proc/meminfo"), "MemTotal")
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_total_mib": round(mem_total_kib / 1024, 1) if mem_total_kib else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _proc_status_kib(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (found through the parent pid of every process in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(root: int) -> float:
    return sum(_cpu_seconds(pid) for pid in process_tree(root))


def server_memory(root: int) -> dict[str, Any]:
    """Peak resident memory (VmHWM) of the server process and each of its descendants."""
    processes = []
    for pid in process_tree(root):
        status = Path(f"/proc/{pid}/status")
        hwm = _proc_status_kib(status, "VmHWM")
        rss = _proc_status_kib(status, "VmRSS")
        if hwm is None:
            continue
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmdline = ""
        processes.append(
            {
                "pid": pid,
                "vm_hwm_mib": round(hwm / 1024, 1),
                "vm_rss_mib": round((rss or 0) / 1024, 1),
                "cmd": cmdline[:160],
            }
        )
    return {
        "processes": processes,
        "vm_hwm_sum_mib": round(sum(p["vm_hwm_mib"] for p in processes), 1),
        "vm_hwm_max_mib": max((p["vm_hwm_mib"] for p in processes), default=0.0),
    }


# -- seeding and the server ------------------------------------------------------------------------
def seed_store(data_dir: Path, rows: int) -> None:
    """Demo content, then PENGUIN_1M (Parquet, `rows` dummy rows) and the benchmark user's grants."""
    from lomas.core.metadata import Metadata
    from lomas.server.demo.seed import seed_if_empty
    from lomas.server.dummy import make_dummy_frame
    from lomas.server.store.db import make_engine, session_factory, upgrade
    from lomas.server.store.service import AdminStore

    import lomas.server.demo as demo_package

    engine = make_engine(f"sqlite:///{(data_dir / 'lomas.db').resolve()}")
    try:
        upgrade(engine)
        if not seed_if_empty(engine, data_dir):
            raise BenchmarkError("the fresh store was not empty")
        metadata_path = Path(demo_package.__file__).parent / "datasets" / "penguin_metadata.yaml"
        document = yaml.safe_load(metadata_path.read_text())
        document["rows"] = rows
        started = time.perf_counter()
        frame = make_dummy_frame(Metadata.model_validate(document), rows, seed=42)
        parquet_path = (data_dir / "penguin_1m.parquet").resolve()
        frame.to_parquet(parquet_path, index=False)
        print(
            f"  wrote {rows:,} rows to {parquet_path.name} "
            f"({parquet_path.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - started:.1f} s)"
        )
        store = AdminStore(session_factory(engine))
        access = {"kind": "local", "path": str(parquet_path), "format": "parquet"}
        store.register_dataset(BIG_DATASET, access, document)
        store.add_user(BENCH_USER)
        for dataset in ("PENGUIN", BIG_DATASET):
            store.grant(BENCH_USER, dataset, GRANT_EPSILON, GRANT_DELTA)
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def start_server(
    data_dir: Path, workers: int, timeout: float = 120.0, extra_env: dict[str, str] | None = None
) -> Server:
    port = free_port()
    log_path = data_dir / "server.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("LOMAS_")}
    env["LOMAS_AUTH__OPEN_MODE"] = "true"
    env.update(extra_env or {})
    command = [
        sys.executable, "-m", "lomas.server",
        "--port", str(port), "--data-dir", str(data_dir), "--workers", str(workers),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        # A session of its own, so that stopping it can reach the worker processes it forks.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchmarkError(f"the server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/state", timeout=2).status_code == 200:
                if workers > 1:
                    _wait_for_workers(process.pid, workers, deadline)
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise BenchmarkError(f"the server did not answer within {timeout} s:\n{server.log_tail()}")


def _wait_for_workers(root: int, workers: int, deadline: float) -> None:
    """With several workers the first answer may come before the others have started."""
    while time.monotonic() < deadline:
        started = sum(1 for pid in process_tree(root) if _is_uvicorn_worker(pid))
        if started >= workers:
            return
        time.sleep(0.2)


def _is_uvicorn_worker(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"multiprocessing.spawn" in cmdline


def stop_server(server: Server) -> None:
    """SIGTERM to the server's process group (the server and its workers), SIGKILL if it lingers."""
    if server.process.poll() is None:
        try:
            os.killpg(server.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:  # workers left behind by a killed supervisor belong to the same process group
        os.killpg(server.process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if server.process.poll() is None:
        server.process.wait(timeout=10)


# -- load ------------------------------------------------------------------------------------------
def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"user-name": BENCH_USER}, timeout=HTTP_TIMEOUT_S)


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code != 200:
        raise BenchmarkError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")


def warm_up(url: str, name: str, body: dict[str, Any], clients: int) -> dict[str, Any]:
    """First requests pay the query planning and the dataset load; several clients reach every worker."""
    path = f"/{QUERIES[name].library}_query"
    with _client(url) as client:
        started = time.perf_counter()
        response = client.post(path, json=body)
        first_ms = (time.perf_counter() - started) * 1000
        _check(response, f"warm-up {name}")
        cost = {"epsilon": response.json()["epsilon"], "delta": response.json()["delta"]}
    errors: list[str] = []

    def repeat() -> None:
        try:
            with _client(url) as client:
                for _ in range(WARMUP_REQUESTS):
                    _check(client.post(path, json=body), f"warm-up {name}")
        except Exception as error:  # reported by the main thread
            errors.append(str(error))

    threads = [threading.Thread(target=repeat) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchmarkError(errors[0])
    return {"first_request_ms": round(first_ms, 1), "cost": cost}


@dataclass
class ScenarioResult:
    scenario: str
    dataset: str
    query: str
    clients: int
    requests: int
    elapsed_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    throughput_rps: float
    server_cpu_s: float
    server_cpu_ms_per_request: float
    client_cpu_s: float
    load_avg_after: list[float] = field(default_factory=list)
    server_vm_hwm_sum_mib_after: float = 0.0


def run_scenario(
    url: str, server_pid: int, name: str, body: dict[str, Any], clients: int, duration: float
) -> ScenarioResult:
    path = f"/{QUERIES[name].library}_query"
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    stop = threading.Event()
    barrier = threading.Barrier(clients + 1)
    http_clients = [_client(url) for _ in range(clients)]

    def work(index: int) -> None:
        client, mine = http_clients[index], latencies[index]
        try:
            client.get("/state")  # open the keep-alive connection before the clock starts
            barrier.wait()
            while not stop.is_set():
                started = time.perf_counter()
                response = client.post(path, json=body)
                elapsed = time.perf_counter() - started
                _check(response, f"{name} with {clients} clients")
                mine.append(elapsed)
        except threading.BrokenBarrierError:
            pass
        except Exception as error:  # reported by the main thread; stop everyone
            errors.append(str(error))
            stop.set()
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(clients)]
    try:
        for thread in threads:
            thread.start()
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            raise BenchmarkError(errors[0] if errors else "clients failed to start") from None
        cpu_before, client_cpu_before = server_cpu_seconds(server_pid), time.process_time()
        started = time.perf_counter()
        stop.wait(duration)
        stop.set()
        for thread in threads:
            thread.join(timeout=HTTP_TIMEOUT_S + 10)
        elapsed = time.perf_counter() - started  # includes the requests in flight at the deadline
        cpu_used = server_cpu_seconds(server_pid) - cpu_before
        client_cpu = time.process_time() - client_cpu_before
    finally:
        stop.set()
        for client in http_clients:
            client.close()
    if errors:
        raise BenchmarkError(errors[0])
    samples = np.array([value for mine in latencies for value in mine]) * 1000
    if samples.size == 0:
        raise BenchmarkError(f"{name} with {clients} clients: no request completed")
    p50, p95, p99 = np.percentile(samples, [50, 95, 99])
    return ScenarioResult(
        scenario=name,
        dataset=QUERIES[name].dataset,
        query=QUERIES[name].description,
        clients=clients,
        requests=int(samples.size),
        elapsed_s=round(elapsed, 3),
        p50_ms=round(float(p50), 2),
        p95_ms=round(float(p95), 2),
        p99_ms=round(float(p99), 2),
        mean_ms=round(float(samples.mean()), 2),
        max_ms=round(float(samples.max()), 2),
        throughput_rps=round(samples.size / elapsed, 1),
        server_cpu_s=round(cpu_used, 2),
        server_cpu_ms_per_request=round(cpu_used * 1000 / samples.size, 2),
        client_cpu_s=round(client_cpu, 2),
        load_avg_after=[round(x, 2) for x in os.getloadavg()],
        server_vm_hwm_sum_mib_after=server_memory(server_pid)["vm_hwm_sum_mib"],
    )


# -- report ----------------------------------------------------------------------------------------
def print_table(results: list[ScenarioResult]) -> None:
    header = (
        "scenario", "dataset", "clients", "requests", "p50 ms", "p95 ms", "p99 ms", "req/s", "srv cpu ms/req",
    )  # fmt: skip
    rows = [
        (
            r.scenario, r.dataset, str(r.clients), str(r.requests), f"{r.p50_ms:.1f}", f"{r.p95_ms:.1f}",
            f"{r.p99_ms:.1f}", f"{r.throughput_rps:.1f}", f"{r.server_cpu_ms_per_request:.2f}",
        )  # fmt: skip
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def check_targets(results: list[ScenarioResult]) -> dict[str, Any]:
    outcome = {}
    for label, (scenario, clients, metric, op, target) in TARGETS.items():
        match = next((r for r in results if r.scenario == scenario and r.clients == clients), None)
        if match is None:
            continue
        value = getattr(match, metric)
        met = value <= target if op == "<=" else value >= target
        outcome[label] = {"value": value, "target": f"{op} {target}", "met": met}
    return outcome


def git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        git = ["git", "-C", str(root)]
        rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
        if rev.returncode != 0:
            return None
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of PENGUIN_1M (default 1,000,000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario (default 10)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(QUERIES), metavar="NAME", help=f"run only these: {', '.join(QUERIES)}"
    )
    parser.add_argument("--out-dir", type=Path, default=Path("bench-results"), help="where the JSON goes")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir (debugging)")
    args = parser.parse_args(argv)
    if args.rows <= 0 or args.duration <= 0 or args.workers <= 0:
        parser.error("--rows, --duration and --workers must be positive")

    # SIGTERM unwinds like Ctrl-C, so that the server is stopped and the temporary data dir removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    machine = machine_info()
    load_before = [round(x, 2) for x in os.getloadavg()]
    print(
        f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['mem_total_mib']:.0f} MiB RAM, "
        f"Python {machine['python']}; load average {os.getloadavg()[0]:.2f}"
    )
    data_dir = Path(tempfile.mkdtemp(prefix="lomas-bench-"))
    server: Server | None = None
    try:
        print(f"seeding {data_dir}")
        seed_store(data_dir, args.rows)
        print(f"starting the server ({args.workers} worker{'s' if args.workers > 1 else ''})")
        server = start_server(data_dir, args.workers)
        pid = server.process.pid
        memory_at_start = server_memory(pid)
        scenarios = [(name, clients) for name, clients in SCENARIOS if not args.only or name in args.only]
        bodies = {name: QUERIES[name].body(args.rows) for name, _ in scenarios}
        warmups = {}
        for name, body in bodies.items():
            warmups[name] = warm_up(server.url, name, body, clients=8)
            print(
                f"  warm-up {name}: first request {warmups[name]['first_request_ms']:.0f} ms, "
                f"cost per query {warmups[name]['cost']}"
            )
        memory_after_warmup = server_memory(pid)
        results = []
        for name, clients in scenarios:
            print(f"running {name} with {clients} client{'s' if clients > 1 else ''} for {args.duration:g} s")
            results.append(run_scenario(server.url, pid, name, bodies[name], clients, args.duration))
        memory = server_memory(pid)
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        if server is not None:
            print(f"server log (tail):\n{server.log_tail()}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            stop_server(server)
        if args.keep_data:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)

    print()
    print_table(results)
    print()
    nprocs = len(memory["processes"])
    print(
        f"server peak memory (VmHWM): sum over the {nprocs} server process{'es' if nprocs > 1 else ''} "
        f"{memory['vm_hwm_sum_mib']:.0f} MiB, largest single process {memory['vm_hwm_max_mib']:.0f} MiB "
        f"(at start {memory_at_start['vm_hwm_sum_mib']:.0f} MiB, "
        f"after warm-up {memory_after_warmup['vm_hwm_sum_mib']:.0f} MiB)"
    )
    for process in memory["processes"]:
        print(f"  pid {process['pid']}: VmHWM {process['vm_hwm_mib']:.0f} MiB  {process['cmd'][:90]}")
    print(
        f"machine: nproc {machine['nproc']}, {machine['cpu_model']}, {machine['mem_total_mib']:.0f} MiB RAM; "
        "the clients run on the same machine and share its CPUs with the server"
    )
    targets = check_targets(results)
    print("targets:")
    for label, outcome in targets.items():
        verdict = "met" if outcome["met"] else "MISSED"
        print(f"  {label}: {outcome['value']} (target {outcome['target']}) {verdict}")

    record = {
        "benchmark": "queries",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git_revision(),
        "config": {
            "rows": args.rows,
            "duration_s": args.duration,
            "workers": args.workers,
            "query_epsilon": QUERY_EPSILON,
            "query_delta": QUERY_DELTA,
        },
        "machine": machine,
        "load_avg_before": load_before,
        "warmup": warmups,
        "scenarios": [asdict(result) for result in results],
        "server_memory": memory,
        "server_memory_at_start": memory_at_start,
        "server_memory_after_warmup": memory_after_warmup,
        "targets": targets,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = args.out_dir / f"queries-w{args.workers}-{stamp}.json"
    out_path.write_text(json.dumps(record, indent=2))
    print(f"results written to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
