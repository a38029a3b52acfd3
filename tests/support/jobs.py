"""Batch job helpers for tests: the worker process, moto S3 and waiting on a job."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.support.processes import start, stop, wait_for_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def jobs_env(**settings: object) -> dict[str, str]:
    """`MTC_JOBS_<NAME>` variables from keywords (JSON for anything but strings)."""
    return {
        f"MTC_JOBS_{name.upper()}": value if isinstance(value, str) else json.dumps(value)
        for name, value in settings.items()
    }


def start_jobs_worker(
    env: dict[str, str], log: Path, *, s3_endpoint: str | None = None
) -> subprocess.Popen[bytes]:
    """`python -m services.jobs.worker` with `env` (see `jobs_env`), waiting until its
    metrics port listens."""
    full_env = {**env, **AWS_TEST_ENV}
    if s3_endpoint is not None:
        full_env["MTC_S3_ENDPOINT_URL"] = s3_endpoint
    process = start([sys.executable, "-m", "services.jobs.worker"], env=full_env, log=log)
    wait_for_port(int(env["MTC_JOBS_METRICS_PORT"]), process, timeout=60)
    return process


def start_moto(port: int, log: Path) -> subprocess.Popen[bytes]:
    """An S3-compatible moto server on 127.0.0.1:`port`."""
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if binary is None:
        raise RuntimeError("moto_server not found; install the dev extra (moto[server])")
    process = start([binary, "-H", "127.0.0.1", "-p", str(port)], log=log)
    wait_for_port(port, process)
    return process


def s3_client(endpoint: str) -> S3Client:
    """A boto3 S3 client for the emulator at `endpoint`."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def object_exists(client: S3Client, bucket: str, key: str) -> bool:
    """Whether `s3://bucket/key` exists."""
    listed = client.list_objects_v2(Bucket=bucket, Prefix=key)
    return any(entry["Key"] == key for entry in listed.get("Contents", []))


def read_object(client: S3Client, bucket: str, key: str) -> bytes:
    """The bytes of `s3://bucket/key`."""
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def wait_for_job(
    client: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool] = lambda job: job["state"] in FINAL_STATES,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Poll `GET /v1/jobs/{id}` until `until(job)`; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"/v1/jobs/{job_id}")
        response.raise_for_status()
        job = response.json()
        if until(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not get there within {timeout} s: {job}")


RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def start_rabbitmq(
    port: int, epmd_port: int, dist_port: int, scratch: Path
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """A throwaway RabbitMQ broker on 127.0.0.1:`port` (user guest, password guest), with
    its own epmd in the foreground (RabbitMQ would otherwise start a daemon no PID of ours
    stops); returns (epmd, broker), to stop broker first. Waits until AMQP listens."""
    epmd_binary = shutil.which("epmd") or next(
        iter(sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))), None
    )
    if not RABBITMQ_SERVER.is_file() or epmd_binary is None:
        raise RuntimeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    epmd = start(
        [str(epmd_binary), "-port", str(epmd_port), "-address", "127.0.0.1"],
        log=scratch / "epmd.log",
    )
    wait_for_port(epmd_port, epmd)
    for folder in ("mnesia", "log"):
        (scratch / folder).mkdir(parents=True, exist_ok=True)
    broker = start(
        [str(RABBITMQ_SERVER)],
        env={
            "HOME": str(scratch),
            "RABBITMQ_NODENAME": f"mtc-test-{port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(scratch / "mnesia"),
            "RABBITMQ_LOG_BASE": str(scratch / "log"),
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        },
        log=scratch / "rabbitmq.log",
    )
    try:
        wait_for_port(port, broker, timeout=120)
    except BaseException:
        stop(broker, kill=True)
        stop(epmd, kill=True)
        raise
    return epmd, broker
