"""`python -m gateway.local_stack`: the whole stack as local processes, no cluster needed.

Starts one model service per task (or several replicas of one with `--replicas TASK=N`)
and the gateway in front of them, waits until every model is loaded, prints where to call,
and stops everything on Ctrl-C (or when any process dies). `make run` calls this after
building the starter models.

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

TEXT_SERVICE = "services.text"
POSE_SERVICE = "services.pose"
AUDIO_SERVICE = "services.audio"
DEFAULT_MODELS: dict[str, tuple[str, str]] = {
    "sentiment": (TEXT_SERVICE, ".mtc/models/sentiment"),
    "disaster": (TEXT_SERVICE, ".mtc/models/disaster"),
    "pose": (POSE_SERVICE, ".mtc/models/pose"),
    "audio": (AUDIO_SERVICE, ".mtc/models/audio"),
}
TASK_KIND_OF_SERVICE = {POSE_SERVICE: "image", AUDIO_SERVICE: "audio"}
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

    @property
    def name(self) -> str:
        """How messages refer to the process."""
        if self.replicas == 1:
            return f"{self.task} service"
        return f"{self.task} service (replica {self.replica} of {self.replicas})"


@dataclass
class Child:
    """One process of the stack."""

    name: str
    process: subprocess.Popen[bytes]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
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
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="TASK=URI",
        help="serve text TASK from URI (repeatable); without any --model, --pose-model or "
        "--audio-model: the starter models in .mtc/models",
    )
    parser.add_argument(
        "--pose-model",
        action="append",
        default=[],
        metavar="TASK=URI",
        help="serve image TASK with the pose service from URI (repeatable)",
    )
    parser.add_argument(
        "--audio-model",
        action="append",
        default=[],
        metavar="TASK=URI",
        help="serve recordings for TASK with the audio service from URI (repeatable)",
    )
    parser.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="TASK=N",
        help="run N processes of TASK's service on consecutive ports, balanced by the "
        "gateway (repeatable; default 1 each)",
    )
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
    text_pairs: list[str], pose_pairs: list[str], audio_pairs: list[str] | None = None
) -> dict[str, tuple[str, str]]:
    """TASK -> (service module, model URI); the starter models when no pair is given."""
    audio_pairs = audio_pairs or []
    if not text_pairs and not pose_pairs and not audio_pairs:
        return dict(DEFAULT_MODELS)
    models: dict[str, tuple[str, str]] = {}
    chosen = ((TEXT_SERVICE, text_pairs), (POSE_SERVICE, pose_pairs), (AUDIO_SERVICE, audio_pairs))
    for module, pairs in chosen:
        for pair in pairs:
            task, sep, uri = pair.partition("=")
            if not sep or not task or not uri:
                raise SystemExit(f"model options expect TASK=URI, got {pair!r}")
            models[task] = (module, uri)
    return models


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


def plan_services(
    models: dict[str, tuple[str, str]], replicas: dict[str, int], first_port: int
) -> list[ServiceProcess]:
    """Every service process, on consecutive ports from `first_port`, in task order."""
    services: list[ServiceProcess] = []
    for task, (module, uri) in models.items():
        count = replicas.get(task, 1)
        for replica in range(1, count + 1):
            port = first_port + len(services)
            services.append(ServiceProcess(task, module, uri, port, replica, count))
    return services


def gateway_environment(services: list[ServiceProcess], host: str, port: int) -> dict[str, str]:
    """The gateway's settings for these services: every replica's URL per task, and the
    kind of each image task (text is the default)."""
    upstreams: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    for service in services:
        upstreams.setdefault(service.task, []).append(f"http://{host}:{service.port}")
        if service.module in TASK_KIND_OF_SERVICE:
            kinds[service.task] = TASK_KIND_OF_SERVICE[service.module]
    return {
        "MTC_GATEWAY_HOST": host,
        "MTC_GATEWAY_PORT": str(port),
        "MTC_GATEWAY_UPSTREAMS": json.dumps(upstreams),
        "MTC_GATEWAY_TASK_KINDS": json.dumps(kinds),
    }


def jobs_environment(
    services: list[ServiceProcess], host: str, redis_port: int, metrics_port: int
) -> dict[str, str]:
    """The jobs settings shared by the gateway and the worker: the local Redis as broker
    and store, the same services as the gateway's."""
    gateway_env = gateway_environment(services, host, 0)
    return {
        "MTC_JOBS_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MTC_JOBS_UPSTREAMS": gateway_env["MTC_GATEWAY_UPSTREAMS"],
        "MTC_JOBS_TASK_KINDS": gateway_env["MTC_GATEWAY_TASK_KINDS"],
        "MTC_JOBS_METRICS_HOST": host,
        "MTC_JOBS_METRICS_PORT": str(metrics_port),
    }


def port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on `port` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(port: int) -> Child:
    """A throwaway redis-server on 127.0.0.1 (no persistence), quiet unless it fails."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
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


def banner(base: str, models: dict[str, tuple[str, str]], jobs_metrics: str | None = None) -> str:
    """What to tell the user once everything is up: where to look, one call per kind."""
    lines = [
        f"\nmtc is up: gateway {base} ({', '.join(models)})",
        f"  web page:  {base}/ui",
        f"  API docs:  {base}/docs",
        f"  models:    curl {base}/v1/models",
    ]
    text_tasks = [task for task, (module, _) in models.items() if module == TEXT_SERVICE]
    pose_tasks = [task for task, (module, _) in models.items() if module == POSE_SERVICE]
    if text_tasks:
        lines.append(
            f"  try:       curl -s -X POST {base}/v1/{text_tasks[0]}/predict "
            f"-H 'content-type: application/json' -d '{{\"text\": [\"{SAMPLE_TEXT}\"]}}'"
        )
    if pose_tasks:
        lines.append(
            f"  a photo:   curl -s -X POST {base}/v1/{pose_tasks[0]}/predict -F image=@photo.jpg"
        )
    audio_tasks = [task for task, (module, _) in models.items() if module == AUDIO_SERVICE]
    if audio_tasks:
        lines.append(
            f"  a call:    curl -s -X POST {base}/v1/{audio_tasks[0]}/predict -F audio=@call.wav"
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


def wait_until_ready(
    url: str, children: list[Child], timeout: float, interrupted: Callable[[], bool]
) -> None:
    """Poll the gateway's readiness until every upstream model is loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if interrupted():
            raise RuntimeError("interrupted before the stack was ready")
        for child in children:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the stack was not ready within {timeout:g} s ({url})")


def main(argv: list[str] | None = None) -> int:
    """Run the stack until interrupted; returns the exit code."""
    args = parse_args(argv)
    models = models_from(args.model, args.pose_model, args.audio_model)
    children: list[Child] = []
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    services = plan_services(
        models, replica_counts(args.replicas, list(models)), args.first_service_port
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
        gateway_env = gateway_environment(services, args.host, args.gateway_port)
        jobs_metrics: str | None = None
        if args.no_jobs:
            print("batch jobs are off (--no-jobs): /v1/jobs answers 503", flush=True)
        elif shutil.which("redis-server") is None:
            print(
                "redis-server is not installed, so batch jobs are off (/v1/jobs answers "
                "503); install it (apt-get install redis-server) to turn them on",
                flush=True,
            )
        else:
            redis_port = free_port("127.0.0.1")
            redis = start_redis(redis_port)
            children.append(redis)
            wait_for_port(redis_port, redis)
            metrics_port = args.jobs_metrics_port or services[-1].port + 1
            if args.jobs_metrics_port is None and not port_is_free(args.host, metrics_port):
                metrics_port = free_port(args.host)
            jobs_env = jobs_environment(services, args.host, redis_port, metrics_port)
            children.append(start_child("jobs worker", JOBS_WORKER, jobs_env))
            gateway_env.update(jobs_env)
            jobs_metrics = f"http://{args.host}:{metrics_port}/metrics"
        children.append(start_child("gateway", "gateway", gateway_env))
        base = f"http://{args.host}:{args.gateway_port}"
        wait_until_ready(f"{base}/health/ready", children, args.ready_timeout, lambda: stopping)
        print(banner(base, models, jobs_metrics), flush=True)
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
