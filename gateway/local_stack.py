"""`python -m gateway.local_stack`: the whole stack as local processes, no cluster needed.

Starts one model service per task (or several replicas of one with `--replicas TASK=N`)
and the gateway in front of them, waits until every model is loaded, prints where to call,
and stops everything on Ctrl-C (or when any process dies). `make run` calls this after
building the starter models.

`--canary TASK=URI:WEIGHT` releases another version of a task's model beside the stable
one: one more service serves it, and the gateway sends it WEIGHT % of the task's traffic
(`MTC_GATEWAY_UPSTREAM_WEIGHTS`); each answer names its version (`x-model-version`).

Batch jobs (`/v1/jobs`) come with it when `redis-server` is installed: a throwaway Redis
(broker and job store) and one jobs worker are started too; `--no-jobs` leaves them out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import httpx

from services.core.kinds import kind_named, model_kinds

TEXT_SERVICE = kind_named("text").service
POSE_SERVICE = kind_named("image").service
AUDIO_SERVICE = kind_named("audio").service
DEFAULT_MODELS: dict[str, tuple[str, str]] = {
    task: (kind.service, model_dir)
    for kind in model_kinds().values()
    for task, model_dir in kind.starters.items()
}
"""Task -> (service module, model directory): every kind's starters."""
TASK_KIND_OF_SERVICE = {
    kind.service: kind.name for kind in model_kinds().values() if kind.name != "text"
}
"""Service module -> the kind the gateway is told for its tasks (text is the default)."""
SAMPLE_TEXT = "An absolute triumph, moving and beautifully acted"
JOBS_WORKER = "services.jobs.worker"


@dataclass(frozen=True)
class ServiceProcess:
    """One model service process to start: a task's replica on its own port."""

    task: str
    module: str
    model_uri: str
    port: int
    replica: int = 1
    replicas: int = 1
    canary: bool = False
    """Serves the task's canary version (`--canary`) rather than its stable one."""

    @property
    def name(self) -> str:
        """How messages refer to the process."""
        if self.canary:
            return f"{self.task} canary service"
        if self.replicas == 1:
            return f"{self.task} service"
        return f"{self.task} service (replica {self.replica} of {self.replicas})"


@dataclass(frozen=True)
class Canary:
    """A new version of a task's model served beside the stable one."""

    model_uri: str
    weight: float
    """Percent of the task's traffic it gets (0-100); the stable replicas share the rest."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.local_stack",
        description="Run the gateway and one model service per task as local processes.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface for every process")
    parser.add_argument("--gateway-port", type=int, default=8080, help="gateway port")
    parser.add_argument(
        "--first-service-port",
        type=int,
        default=8101,
        help="port of the first model service; the next tasks take the following ports",
    )
    # Options that may be given several times, each a list (empty when not given).
    repeatable = (
        (
            "--model",
            "TASK=URI",
            "serve text TASK from URI (repeatable); without any --model, --pose-model or "
            "--audio-model: the starter models in .mtc/models",
        ),
        (
            "--pose-model",
            "TASK=URI",
            "serve image TASK with the pose service from URI (repeatable)",
        ),
        (
            "--audio-model",
            "TASK=URI",
            "serve recordings for TASK with the audio service from URI (repeatable)",
        ),
        (
            "--serve",
            "KIND:TASK=URI",
            "serve TASK with the service of KIND (any kind a package under services/ "
            f"declares: {', '.join(model_kinds())}) from URI (repeatable)",
        ),
        (
            "--replicas",
            "TASK=N",
            "run N processes of TASK's service on consecutive ports, balanced by the "
            "gateway (repeatable; default 1 each)",
        ),
        (
            "--canary",
            "TASK=URI:WEIGHT",
            "also serve TASK's model from URI with one more service and send it WEIGHT %% "
            "of TASK's traffic, the stable version the rest (repeatable; batch jobs stay on the "
            "stable version). Promote: run again with --model TASK=URI; roll back: without it",
        ),
    )
    for flag, metavar, help_text in repeatable:
        parser.add_argument(flag, action="append", default=[], metavar=metavar, help=help_text)
    parser.add_argument(
        "--ready-timeout", type=float, default=300.0, help="seconds to wait for every model"
    )
    parser.add_argument(
        "--no-jobs",
        action="store_true",
        help="run without batch jobs (no Redis, no jobs worker; /v1/jobs answers 503)",
    )
    parser.add_argument(
        "--jobs-metrics-port",
        type=int,
        default=None,
        help="port of the jobs worker's /metrics (default: the port after the last model "
        "service, or any free port if that one is taken)",
    )
    return parser.parse_args(argv)


def models_from(
    text_pairs: list[str], pose_pairs: list[str], audio_pairs: list[str], kind_pairs: list[str]
) -> dict[str, tuple[str, str]]:
    """TASK -> (service module, model URI); the starter models when no pair is given.
    `kind_pairs` are `KIND:TASK=URI` (`--serve`), the others `TASK=URI`."""
    models: dict[str, tuple[str, str]] = {}
    chosen = [(TEXT_SERVICE, text_pairs), (POSE_SERVICE, pose_pairs), (AUDIO_SERVICE, audio_pairs)]
    for pair in kind_pairs:
        kind, colon, rest = pair.partition(":")
        if not colon:
            raise SystemExit(f"--serve expects KIND:TASK=URI, got {pair!r}")
        try:
            chosen.append((kind_named(kind).service, [rest]))
        except ValueError as exc:
            raise SystemExit(f"--serve {pair!r}: {exc}") from None
    for module, pairs in chosen:
        for pair in pairs:
            task, sep, uri = pair.partition("=")
            if not sep or not task or not uri:
                raise SystemExit(f"model options expect TASK=URI, got {pair!r}")
            models[task] = (module, uri)
    return models or dict(DEFAULT_MODELS)


def replica_counts(pairs: list[str], tasks: list[str]) -> dict[str, int]:
    """TASK -> number of processes, from `--replicas TASK=N` options (1 when not given)."""
    counts = dict.fromkeys(tasks, 1)
    for pair in pairs:
        task, sep, number = pair.partition("=")
        if not sep or task not in counts or not number.isdigit() or int(number) < 1:
            raise SystemExit(
                f"--replicas expects TASK=N with a served task ({', '.join(tasks)}) and "
                f"N >= 1, got {pair!r}"
            )
        counts[task] = int(number)
    return counts


def canaries_from(pairs: list[str], tasks: list[str]) -> dict[str, Canary]:
    """TASK -> its canary, from `--canary TASK=URI:WEIGHT` options."""
    canaries: dict[str, Canary] = {}
    for pair in pairs:
        task, sep, rest = pair.partition("=")
        # The URI may hold colons itself (s3://, file://): the weight is after the last one.
        uri, colon, weight = rest.rpartition(":")
        try:
            share = float(weight)
        except ValueError:
            share = -1.0
        if not sep or task not in tasks or not colon or not uri or not 0 <= share <= 100:
            raise SystemExit(
                f"--canary expects TASK=URI:WEIGHT with a served task ({', '.join(tasks)}) "
                f"and a WEIGHT from 0 to 100, got {pair!r}"
            )
        canaries[task] = Canary(uri, share)
    return canaries


def plan_services(
    models: dict[str, tuple[str, str]],
    replicas: dict[str, int],
    first_port: int,
    canaries: dict[str, Canary] | None = None,
) -> list[ServiceProcess]:
    """Every service process, on consecutive ports from `first_port`, in task order; the
    canaries' after all the stable ones."""
    services: list[ServiceProcess] = []
    for task, (module, uri) in models.items():
        count = replicas.get(task, 1)
        for replica in range(1, count + 1):
            port = first_port + len(services)
            services.append(ServiceProcess(task, module, uri, port, replica, count))
    for task, canary in (canaries or {}).items():
        module = models[task][0]
        port = first_port + len(services)
        services.append(ServiceProcess(task, module, canary.model_uri, port, canary=True))
    return services


def gateway_environment(
    services: list[ServiceProcess],
    host: str,
    port: int,
    canaries: dict[str, Canary] | None = None,
) -> dict[str, str]:
    """The gateway's settings for these services: every replica's URL per task, the kind of
    each image task (text is the default), and for a task with a canary the share of each
    URL: the canary's weight, and the rest split evenly between the stable replicas."""
    upstreams: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for service in services:
        upstreams.setdefault(service.task, []).append(f"http://{host}:{service.port}")
        if service.module in TASK_KIND_OF_SERVICE:
            kinds[service.task] = TASK_KIND_OF_SERVICE[service.module]
    weights: dict[str, dict[str, float]] = {}
    for task, canary in (canaries or {}).items():
        serving = [service for service in services if service.task == task]
        stable_count = sum(1 for service in serving if not service.canary)
        weights[task] = {
            f"http://{host}:{service.port}": (
                canary.weight if service.canary else (100 - canary.weight) / stable_count
            )
            for service in serving
        }
    environment = {
        "MTC_GATEWAY_HOST": host,
        "MTC_GATEWAY_PORT": str(port),
        "MTC_GATEWAY_UPSTREAMS": json.dumps(upstreams),
        "MTC_GATEWAY_TASK_KINDS": json.dumps(kinds),
    }
    if weights:
        environment["MTC_GATEWAY_UPSTREAM_WEIGHTS"] = json.dumps(weights)
    return environment


def jobs_environment(
    services: list[ServiceProcess], host: str, redis_port: int, metrics_port: int
) -> dict[str, str]:
    """The jobs settings shared by the gateway and the worker: the local Redis as broker
    and store, the same services as the gateway's but the canaries (jobs are not weighted:
    they stay on the stable versions)."""
    gateway_env = gateway_environment(
        [service for service in services if not service.canary], host, 0
    )
    return {
        "MTC_JOBS_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MTC_JOBS_UPSTREAMS": gateway_env["MTC_GATEWAY_UPSTREAMS"],
        "MTC_JOBS_TASK_KINDS": gateway_env["MTC_GATEWAY_TASK_KINDS"],
        "MTC_JOBS_METRICS_HOST": host,
        "MTC_JOBS_METRICS_PORT": str(metrics_port),
    }


def free_port(host: str, preferred: int = 0) -> int:
    """`preferred` if nothing listens on it right now, else a TCP port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, preferred))
        except OSError:
            sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(binary: str, port: int) -> Child:
    """A throwaway redis-server on 127.0.0.1 (no persistence), quiet unless it fails."""
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    command += ["--appendonly", "no", "--loglevel", "warning"]
    process = subprocess.Popen(command, start_new_session=True)
    return Child("redis", process)


def wait_for_port(port: int, child: Child, timeout: float = 15.0) -> None:
    """Block until `child` accepts connections on `port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited with code {child.process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not listen on port {port} within {timeout:g} s")


def banner(
    base: str,
    models: dict[str, tuple[str, str]],
    jobs_metrics: str | None = None,
    canaries: dict[str, Canary] | None = None,
) -> str:
    """What to tell the user once everything is up: where to look, one call per kind."""
    lines = [
        f"\nmtc is up: gateway {base} ({', '.join(models)})",
        *(
            f"  canary:    {task} {canary.weight:g} % from {canary.model_uri} (the answers' "
            "x-model-version header names the version)"
            for task, canary in (canaries or {}).items()
        ),
        f"  web page:  {base}/ui",
        f"  API docs:  {base}/docs",
        f"  models:    curl {base}/v1/models",
    ]
    text_tasks = [task for task, (module, _) in models.items() if module == TEXT_SERVICE]
    for kind in model_kinds().values():
        served = [task for task, (module, _) in models.items() if module == kind.service]
        if served and kind.try_it:
            lines.append(
                f"  {kind.name + ':':<10} curl -s -X POST {base}/v1/{served[0]}/predict "
                + kind.try_it
            )
    if jobs_metrics is not None and text_tasks:
        lines.append(
            f"  a job:     curl -s -X POST {base}/v1/jobs -H 'content-type: application/json' "
            f'-d \'{{"task": "{text_tasks[0]}", "inputs": ["{SAMPLE_TEXT}"]}}\''
        )
        lines.append(f"  jobs worker metrics: {jobs_metrics}")
    lines.append("Press Ctrl-C to stop.\n")
    return "\n".join(lines)


def start_child(name: str, module: str, env: dict[str, str]) -> Child:
    """Start `python -m module` with extra environment, output going to our terminal."""
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        env={**os.environ, **env},
        start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
    )
    return Child(name, process)


def stop_all(children: list[Child]) -> None:
    """SIGTERM every child, then SIGKILL whatever has not exited after a grace period."""
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + 15
    for child in reversed(children):
        remaining = max(0.1, deadline - time.monotonic())
        try:
            child.process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def all_replicas_ready(models: object) -> bool:
    """Whether a `/v1/models` answer shows every replica of every task ready."""
    listed = models.get("models") if isinstance(models, dict) else None
    return isinstance(listed, list) and all(
        isinstance(model, dict)
        and model.get("ready")
        and model.get("replicas_ready") == model.get("replicas")
        for model in listed
    )


def wait_until_ready(
    url: str, children: list[Child], timeout: float, interrupted: Callable[[], bool]
) -> None:
    """Poll the gateway's `/v1/models` (`url`) until every replica of every task has its
    model loaded: the gateway is ready with one replica per task, but a replica (a canary)
    still loading would answer its share of the traffic 503."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if interrupted():
            raise RuntimeError("interrupted before the stack was ready")
        for child in children:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode}")
        try:
            answer = httpx.get(url, timeout=2.0)
            if answer.status_code == 200 and all_replicas_ready(answer.json()):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the stack was not ready within {timeout:g} s ({url})")


def main(argv: list[str] | None = None) -> int:
    """Run the stack until interrupted; returns the exit code."""
    args = parse_args(argv)
    models = models_from(args.model, args.pose_model, args.audio_model, args.serve)
    children: list[Child] = []
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    canaries = canaries_from(args.canary, list(models))
    services = plan_services(
        models, replica_counts(args.replicas, list(models)), args.first_service_port, canaries
    )
    try:
        for service in services:
            env = {
                "MTC_TASK": service.task,
                "MTC_MODEL_URI": service.model_uri,
                "MTC_HOST": args.host,
                "MTC_PORT": str(service.port),
            }
            children.append(start_child(service.name, service.module, env))
        gateway_env = gateway_environment(services, args.host, args.gateway_port, canaries)
        jobs_metrics: str | None = None
        redis_binary = shutil.which("redis-server")
        if args.no_jobs:
            print("batch jobs are off (--no-jobs): /v1/jobs answers 503", flush=True)
        elif redis_binary is None:
            print(
                "redis-server is not installed, so batch jobs are off (/v1/jobs answers "
                "503); install it (apt-get install redis-server) to turn them on",
                flush=True,
            )
        else:
            redis_port = free_port("127.0.0.1")
            redis = start_redis(redis_binary, redis_port)
            children.append(redis)
            wait_for_port(redis_port, redis)
            metrics_port = args.jobs_metrics_port or services[-1].port + 1
            if args.jobs_metrics_port is None:
                metrics_port = free_port(args.host, metrics_port)
            jobs_env = jobs_environment(services, args.host, redis_port, metrics_port)
            children.append(start_child("jobs worker", JOBS_WORKER, jobs_env))
            gateway_env.update(jobs_env)
            jobs_metrics = f"http://{args.host}:{metrics_port}/metrics"
        children.append(start_child("gateway", "gateway", gateway_env))
        base = f"http://{args.host}:{args.gateway_port}"
        wait_until_ready(f"{base}/v1/models", children, args.ready_timeout, lambda: stopping)
        print(banner(base, models, jobs_metrics, canaries), flush=True)
        while not stopping:
            for child in children:
                if child.process.poll() is not None:
                    print(f"{child.name} exited with code {child.process.returncode}; stopping")
                    return 1
            time.sleep(0.25)
        return 0
    except RuntimeError as exc:
        print(f"mtc local stack failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all(children)


if __name__ == "__main__":
    sys.exit(main())
