"""Faults behind the gateway, with real processes: a service stopped and restarted, a slow
service, and one of two replicas killed while requests are flowing.

The services are real text services (`python -m services.text`) serving a tiny random
BERT, the slow one a stand-in that takes 60 s per answer; all run as processes on
127.0.0.1 and are stopped by PID. Client timeouts are hang guards, never measurements.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_processes import (
    free_ports,
    start_gateway,
    start_model_service,
    start_slow_text_service,
)
from tests.support.processes import stop, wait_for_http

pytestmark = pytest.mark.e2e

TEXT_SERVICE = "services.text"
SLOW_TASK_TIMEOUT_SECONDS = 2.0
# The gateway waits this much past a task's timeout, for the service's own answer.
TIMEOUT_MARGIN_SECONDS = 1.0
CIRCUIT_OPEN_SECONDS = 1.0
# Far below the gateway's 30 s request timeout: an answer within it proves no hang.
HANG_GUARD = httpx.Timeout(10.0)


@dataclass
class FaultStack:
    """The gateway and its services; a service can be stopped and started again."""

    gateway: str
    model_dir: Path
    logs: Path
    ports: dict[str, int]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def service_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start_service(self, name: str) -> None:
        """Start (or restart) a text service and wait until its model is loaded."""
        task = name.split("-", 1)[0]
        process = start_model_service(
            TEXT_SERVICE, task, self.model_dir, self.ports[name], self.logs / f"{name}.log"
        )
        self.processes[name] = process
        wait_for_http(f"{self.service_url(name)}/health/ready", process, timeout=180)

    def predict(self, task: str, client: httpx.Client | None = None) -> httpx.Response:
        body = {"text": ["the gateway keeps working"]}
        url = f"{self.gateway}/v1/{task}/predict"
        if client is not None:
            return client.post(url, json=body)
        return httpx.post(url, json=body, timeout=HANG_GUARD)


@pytest.fixture(scope="module")
def stack(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    logs = tmp_path_factory.mktemp("fault-stack")
    names = ["sentiment-a", "sentiment-b", "disaster", "slow", "gateway"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    stack = FaultStack(f"http://127.0.0.1:{ports['gateway']}", tiny_model_dir, logs, ports)
    try:
        stack.processes["slow"] = start_slow_text_service(
            "slow", ports["slow"], 60.0, logs / "slow.log"
        )
        for name in ("sentiment-a", "sentiment-b", "disaster"):
            stack.start_service(name)
        gateway = start_gateway(
            ports["gateway"],
            logs / "gateway.log",
            upstreams={
                "sentiment": [stack.service_url("sentiment-a"), stack.service_url("sentiment-b")],
                "disaster": stack.service_url("disaster"),
                "slow": stack.service_url("slow"),
            },
            task_timeouts={"slow": SLOW_TASK_TIMEOUT_SECONDS},
            upstream_timeout_margin_seconds=TIMEOUT_MARGIN_SECONDS,
            circuit_failure_threshold=3,
            circuit_open_seconds=CIRCUIT_OPEN_SECONDS,
        )
        stack.processes["gateway"] = gateway
        wait_for_http(f"{stack.gateway}/health/ready", gateway, timeout=60)
        yield stack
    finally:
        for process in stack.processes.values():
            stop(process)


def test_a_stopped_service_fails_fast_while_other_tasks_work(stack: FaultStack) -> None:
    stop(stack.processes["disaster"])

    down = stack.predict("disaster")
    other = stack.predict("sentiment")
    listed = httpx.get(f"{stack.gateway}/v1/models", timeout=HANG_GUARD).json()["models"]

    assert down.status_code == 503
    assert down.json()["error_type"] == "upstream_unavailable"
    assert other.status_code == 200
    disaster = next(entry for entry in listed if entry["task"] == "disaster")
    assert (disaster["ready"], disaster["status"]) == (False, "unreachable")


def test_a_restarted_service_is_used_again_within_the_cool_down(stack: FaultStack) -> None:
    if stack.processes["disaster"].poll() is None:
        stop(stack.processes["disaster"])
    assert stack.predict("disaster").status_code == 503

    stack.start_service("disaster")
    # Once the service answers, the gateway's circuit lets a probe through within its
    # cool-down; the bound below only keeps a broken gateway from hanging the suite.
    deadline = time.monotonic() + CIRCUIT_OPEN_SECONDS + 10
    answer = stack.predict("disaster")
    while answer.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        answer = stack.predict("disaster")

    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0][0]["label"] in {"NEGATIVE", "POSITIVE"}


def test_a_slow_service_answers_504_within_its_timeout(stack: FaultStack) -> None:
    started = time.monotonic()
    response = httpx.post(
        f"{stack.gateway}/v1/slow/predict",
        json={"text": ["anyone there?"]},
        timeout=httpx.Timeout(SLOW_TASK_TIMEOUT_SECONDS + 10),
    )

    assert response.status_code == 504
    assert response.json() == {
        "detail": f"the service for task 'slow' did not answer within "
        f"{SLOW_TASK_TIMEOUT_SECONDS + TIMEOUT_MARGIN_SECONDS:g} seconds",
        "error_type": "upstream_timeout",
    }
    # The slow service takes 60 s; the client gave up after the timeout + 10 s.
    assert time.monotonic() - started < SLOW_TASK_TIMEOUT_SECONDS + 10


@dataclass
class LoadRecord:
    started: float
    outcome: int | str


def _served_requests(stack: FaultStack, name: str) -> float:
    text = httpx.get(f"{stack.service_url(name)}/metrics", timeout=HANG_GUARD).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mtc_requests_total{") and 'status_class="2xx"' in line
    )


def test_killing_one_of_two_replicas_fails_only_requests_in_flight_on_it(
    stack: FaultStack,
) -> None:
    records: list[LoadRecord] = []
    lock = threading.Lock()
    in_flight = 0
    stopping = threading.Event()

    def send_requests() -> None:
        nonlocal in_flight
        with httpx.Client(timeout=HANG_GUARD) as client:
            while not stopping.is_set():
                with lock:
                    in_flight += 1
                    record = LoadRecord(time.monotonic(), "pending")
                    records.append(record)
                try:
                    record.outcome = stack.predict("sentiment", client).status_code
                except httpx.HTTPError as error:
                    record.outcome = repr(error)
                with lock:
                    in_flight -= 1

    def wait_for(condition: str, done: int, since: float) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                finished = [r for r in records if r.started >= since and r.outcome != "pending"]
            if len(finished) >= done:
                return
            time.sleep(0.05)
        raise AssertionError(f"load stalled before {condition}")

    replica_a_before = _served_requests(stack, "sentiment-a")
    replica_b_before = _served_requests(stack, "sentiment-b")
    workers = [threading.Thread(target=send_requests) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        wait_for("the kill", 30, since=0.0)
        both_served = (
            _served_requests(stack, "sentiment-a") > replica_a_before,
            _served_requests(stack, "sentiment-b") > replica_b_before,
        )
        # Holding the lock, no request starts while the replica dies: every request is
        # either counted in flight at the kill or starts after the process is gone.
        with lock:
            in_flight_at_kill = in_flight
            stop(stack.processes["sentiment-a"], kill=True)
            killed_at = time.monotonic()
        wait_for("enough requests after the kill", 60, since=killed_at)
    finally:
        stopping.set()
        for worker in workers:
            worker.join(timeout=30)
        stack.start_service("sentiment-a")

    after_kill = [record for record in records if record.started >= killed_at]
    failed = [record for record in records if record.outcome != 200]
    assert both_served == (True, True), "the gateway balanced the load over both replicas"
    assert {record.outcome for record in after_kill} == {200}
    assert all(record.started < killed_at for record in failed)
    assert len(failed) <= in_flight_at_kill
