"""compose.yaml, run as a user without a cluster runs it: `podman-compose up` from the built
images, the gateway on :8080 balancing two sentiment replicas, a batch job through the worker,
and a replica stopped without the API noticing."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deployment.test_deployment import _port_is_free, _require_images
from tests.support.jobs import wait_for_job
from tests.support.pod_runner import CONTAINERS_CONF

REPO = Path(__file__).resolve().parents[2]
PROJECT = "mtc-compose-test"
GATEWAY = "http://127.0.0.1:8080"
TIMEOUT = httpx.Timeout(120.0)


def compose(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF)),
        # The registry's Redis image cannot be pulled on every host; this one is built here.
        "MTC_REDIS_IMAGE": "localhost/mtc-redis:bookworm",
    }
    command = ["podman-compose", "--project-name", PROJECT, "--file", "compose.yaml", *arguments]
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[None]:
    if not _port_is_free(8080):
        raise RuntimeError("port 8080 is taken; compose.yaml publishes the gateway there")
    _require_images()
    compose("down")
    try:
        started = compose("up", "--detach")
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{GATEWAY}/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                logs = compose("logs").stdout
                raise RuntimeError(f"compose stack not ready in 300 s:\n{logs[-5000:]}")
            time.sleep(2)
        yield
    finally:
        compose("down")


def test_every_service_answers_through_the_gateway(stack: None) -> None:
    models = httpx.get(f"{GATEWAY}/v1/models", timeout=TIMEOUT).json()["models"]
    assert {model["task"] for model in models} == {"sentiment", "disaster", "pose", "audio"}
    assert all(model["ready"] for model in models)
    response = httpx.post(
        f"{GATEWAY}/v1/sentiment/predict", json={"text": ["a warm, funny film"]}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0][0]["label"] == "POSITIVE"


def test_a_batch_job_runs_on_the_worker(stack: None) -> None:
    with httpx.Client(base_url=GATEWAY, timeout=TIMEOUT) as client:
        submitted = client.post("/v1/jobs", json={"task": "disaster", "inputs": ["Forest fire"]})
        assert submitted.status_code == 202, submitted.text
        job = wait_for_job(client, submitted.json()["id"], timeout=180)
    assert job["state"] == "succeeded", job


def test_the_gateway_serves_on_when_a_replica_stops(stack: None) -> None:
    stopped = compose("stop", "sentiment-1")
    assert stopped.returncode == 0, stopped.stderr
    try:
        for n in range(10):
            response = httpx.post(
                f"{GATEWAY}/v1/sentiment/predict",
                json={"text": [f"replica test review number {n}"]},
                timeout=TIMEOUT,
            )
            assert response.status_code == 200, response.text
    finally:
        compose("start", "sentiment-1")
