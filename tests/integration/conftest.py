"""Real servers for integration tests: redis-server and an S3-compatible moto server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port, start, start_redis, stop, wait_for_port


@pytest.fixture
def redis_server() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A redis-server on a free port, stopped by PID after the test."""
    port = free_port()
    process = start_redis(port)
    yield process, port
    stop(process, kill=True)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real S3-compatible HTTP server (moto) on a free port."""
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if binary is None:
        raise RuntimeError("moto_server not found; install the dev extra (moto[server])")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    process = start([binary, "-H", "127.0.0.1", "-p", str(port)], log=log)
    wait_for_port(port, process)
    yield f"http://127.0.0.1:{port}"
    stop(process)


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials: the S3 emulator accepts any, boto3 insists on some."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
