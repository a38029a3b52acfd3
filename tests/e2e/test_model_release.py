"""Releasing a model version end to end: a canary beside the stable version, its share of the
traffic, every answer naming its version, then promotion and rollback by reconfiguring the
gateway alone (docs/deploy.md, "Releasing a model version")."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.local_stack import all_replicas_ready
from services.artifacts.manifest import write_manifest
from tests.support.gateway_processes import start_gateway, start_model_service
from tests.support.models import TINY_LABELS
from tests.support.processes import (
    free_port,
    free_port_run,
    local_stack_command,
    start,
    stop,
    wait_for_http,
)

pytestmark = pytest.mark.e2e

STABLE_VERSION = "tiny-sentiment/1.0.0"
CANARY_VERSION = "tiny-sentiment/1.1.0"
REQUESTS = 200
# A fair split of 200 answers falls outside 15-85 % with odds far below one in a billion; the
# gateway's split is exact (smooth weighted round robin), the bounds only allow for retries.
MOST_ONE_VERSION_MAY_TAKE = 0.85


def _model_version(source: Path, target: Path, version: str) -> Path:
    """A copy of the tiny model released as `version` (its manifest says so)."""
    shutil.copytree(source, target)
    write_manifest(
        target, name="tiny-sentiment", task="sentiment", version=version, labels=TINY_LABELS
    )
    return target


@dataclass(frozen=True)
class Versions:
    stable: Path
    canary: Path


@pytest.fixture(scope="module")
def versions(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Versions:
    root = tmp_path_factory.mktemp("release")
    return Versions(
        stable=_model_version(tiny_model_dir, root / "1.0.0", "1.0.0"),
        canary=_model_version(tiny_model_dir, root / "1.1.0", "1.1.0"),
    )


def _predict_many(base: str, count: int = REQUESTS) -> Counter[str]:
    """Send `count` predictions; every answer must name its version, as its body does."""
    versions: Counter[str] = Counter()
    with httpx.Client(base_url=base, timeout=60) as client:
        for number in range(count):
            answer = client.post("/v1/sentiment/predict", json={"text": [f"review {number}"]})
            assert answer.status_code == 200, answer.text
            model = answer.json()["model"]
            version = answer.headers["x-model-version"]
            assert version == f"{model['name']}/{model['version']}"
            versions[version] += 1
    return versions


def _wait_for_every_replica(
    base: str, process: subprocess.Popen[bytes], timeout: float = 180
) -> None:
    """The gateway is ready once one replica per task is; wait for the canary too."""
    deadline = time.monotonic() + timeout
    while not all_replicas_ready(httpx.get(f"{base}/v1/models", timeout=10).json()):
        assert process.poll() is None, "the stack exited"
        assert time.monotonic() < deadline, "a replica did not load its model in time"
        time.sleep(0.2)


def _answers_by_version(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {
        sample.labels["model_version"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mtc_gateway_model_responses_total"
        and sample.labels["status_class"] == "2xx"
    }


def test_the_local_stack_sends_a_canary_its_share(versions: Versions, tmp_path: Path) -> None:
    gateway_port, first_service_port = free_port(), free_port_run(2)
    command = local_stack_command(
        gateway_port,
        first_service_port,
        "--no-jobs",
        "--model",
        f"sentiment={versions.stable}",
        "--canary",
        f"sentiment={versions.canary}:50",
    )
    stack = start(command, env={"MTC_TORCH_THREADS": "1"}, log=tmp_path / "stack.log")
    base = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_for_http(f"{base}/health/ready", stack, timeout=180)
        _wait_for_every_replica(base, stack)
        split = _predict_many(base)
        counted = _answers_by_version(base)
    finally:
        stop(stack)

    assert set(split) == {STABLE_VERSION, CANARY_VERSION}, split
    assert max(split.values()) <= MOST_ONE_VERSION_MAY_TAKE * REQUESTS, split
    assert counted == {version: float(count) for version, count in split.items()}


@dataclass
class Release:
    """A stable and a canary service, running throughout; the gateway is restarted at will."""

    stable_url: str
    canary_url: str
    stable: subprocess.Popen[bytes]
    canary: subprocess.Popen[bytes]
    logs: Path


@pytest.fixture(scope="module")
def release(versions: Versions, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    logs = tmp_path_factory.mktemp("release-logs")
    port = free_port_run(2)
    stable = start_model_service(
        "services.text", "sentiment", versions.stable, port, logs / "stable.log"
    )
    canary = start_model_service(
        "services.text", "sentiment", versions.canary, port + 1, logs / "canary.log"
    )
    try:
        for process, service_port in ((stable, port), (canary, port + 1)):
            wait_for_http(f"http://127.0.0.1:{service_port}/health/ready", process, timeout=180)
        yield Release(
            f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}", stable, canary, logs
        )
    finally:
        stop(canary)
        stop(stable)


def _split_through_a_gateway(
    release: Release, stable_weight: int, canary_weight: int
) -> Counter[str]:
    """Start a gateway with these weights, send it the requests, stop it."""
    port = free_port()
    gateway = start_gateway(
        port,
        release.logs / f"gateway-{stable_weight}-{canary_weight}.log",
        upstreams={"sentiment": [release.stable_url, release.canary_url]},
        upstream_weights={
            "sentiment": {release.stable_url: stable_weight, release.canary_url: canary_weight}
        },
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health/ready", gateway, timeout=60)
        return _predict_many(base, count=40)
    finally:
        stop(gateway)


def test_promotion_and_rollback_need_no_restart_of_the_stable_version(
    release: Release,
) -> None:
    canary_share = _split_through_a_gateway(release, 90, 10)
    promoted = _split_through_a_gateway(release, 0, 100)
    rolled_back = _split_through_a_gateway(release, 100, 0)

    assert canary_share == {STABLE_VERSION: 36, CANARY_VERSION: 4}
    assert promoted == {CANARY_VERSION: 40}
    assert rolled_back == {STABLE_VERSION: 40}
    # The same two service processes answered throughout: only the gateway changed.
    assert release.stable.poll() is None
    assert release.canary.poll() is None
