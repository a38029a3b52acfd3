"""Real processes for gateway tests: model services, the gateway, a slow service.

Every process binds 127.0.0.1 on a port the caller chose free, writes its output to a log
file, runs in its own session, and is stopped by PID with `tests.support.processes.stop`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.processes import start

REPO = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports nothing listens on right now."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def consecutive_free_ports(count: int) -> int:
    """A port P such that P, P + 1, ..., P + count - 1 are all free right now."""
    for _ in range(200):
        (first,) = free_ports(1)
        taken: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                taken.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in taken:
                sock.close()
        return first
    raise RuntimeError(f"no {count} consecutive free ports found")


def start_model_service(
    module: str,
    task: str,
    model_dir: Path,
    port: int,
    log: Path,
    settings: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m services.text` (or `.pose`) serving `task` from `model_dir` on `port`;
    `settings` adds or overrides `MTC_*` variables."""
    env = {
        "MTC_TASK": task,
        "MTC_MODEL_URI": str(model_dir),
        "MTC_HOST": "127.0.0.1",
        "MTC_PORT": str(port),
        # One thread per process: the test machine's cores are shared by several services.
        "MTC_TORCH_THREADS": "1",
        **(settings or {}),
    }
    return start([sys.executable, "-m", module], env=env, log=log)


def start_gateway(port: int, log: Path, **settings: object) -> subprocess.Popen[bytes]:
    """`python -m gateway` on `port`; each keyword becomes `MTC_GATEWAY_<NAME>` (JSON for
    anything but strings), e.g. `upstreams={"sentiment": ["http://..."]}`."""
    env = {"MTC_GATEWAY_HOST": "127.0.0.1", "MTC_GATEWAY_PORT": str(port)}
    for name, value in settings.items():
        env[f"MTC_GATEWAY_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return start([sys.executable, "-m", "gateway"], env=env, log=log)


def start_slow_text_service(
    task: str, port: int, delay_seconds: float, log: Path
) -> subprocess.Popen[bytes]:
    """A text service process that takes `delay_seconds` to answer each predict request."""
    command = [
        sys.executable,
        "-m",
        "tests.support.slow_text_service",
        "--port",
        str(port),
        "--task",
        task,
        "--delay",
        str(delay_seconds),
    ]
    # `tests` is not an installed package: let the child import it from this checkout.
    return start(command, env={"PYTHONPATH": str(REPO)}, log=log)
