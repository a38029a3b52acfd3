"""Faults under load, with real processes: Redis killed and restarted, a slow model, and
10,000 requests against one service process.

Services are real text services (`python -m services.text`, tiny random BERT) and a real
redis-server, on 127.0.0.1, stopped by PID. A model service killed behind the gateway is
covered by `test_gateway_faults.py`. Client timeouts are hang guards, never measurements.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from services.text.api import build_app
from services.text.models.sequence_classifier import SequenceClassifier, TextInput, TextPrediction
from services.text.settings import TextSettings
from tests.support.gateway_processes import free_ports
from tests.support.processes import start, start_redis, stop, wait_for_http
from tests.support.service_client import metric, wait_ready

pytestmark = pytest.mark.e2e

HANG_GUARD = httpx.Timeout(30.0)
URL = "/v1/sentiment/predict"


def start_text_service(
    model_dir: Path, port: int, log: Path, **settings: str
) -> subprocess.Popen[bytes]:
    env = {
        "MTC_TASK": "sentiment",
        "MTC_MODEL_URI": str(model_dir),
        "MTC_HOST": "127.0.0.1",
        "MTC_PORT": str(port),
        "MTC_TORCH_THREADS": "1",
        **{f"MTC_{name.upper()}": value for name, value in settings.items()},
    }
    process = start([sys.executable, "-m", "services.text"], env=env, log=log)
    wait_for_http(f"http://127.0.0.1:{port}/health/ready", process, timeout=180)
    return process


class Load:
    """Requests in a loop from a few threads until stopped; every answer is recorded."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        self.statuses: list[int | str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(index,)) for index in range(threads)
        ]

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=HANG_GUARD) as client:
            number = 0
            while not self._stop.is_set():
                # A few texts come back again and again (cache hits), one is always new.
                body = {"text": [f"repeated {number % 5}", f"thread {index} fresh {number}"]}
                try:
                    status: int | str = client.post(URL, json=body).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with self._lock:
                    self.statuses.append(status)
                number += 1

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.statuses)

    def wait_for(self, more: int) -> None:
        """Block until `more` further answers have arrived."""
        target = self.count + more
        while self.count < target:
            time.sleep(0.01)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=HANG_GUARD.read)


def test_redis_killed_and_restarted_under_load_fails_no_request_and_the_cache_recovers(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    redis_port, service_port = free_ports(2)
    url = f"http://127.0.0.1:{service_port}"
    redis = start_redis(redis_port)
    service = start_text_service(
        tiny_model_dir,
        service_port,
        tmp_path / "service.log",
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        redis_retry_seconds="0.2",
    )
    probe = httpx.Client(base_url=url, timeout=HANG_GUARD)
    try:
        with Load(url) as load:
            load.wait_for(200)
            assert metric(probe, "mtc_cache_lookups_total", result="hit") > 0
            stop(redis, kill=True)
            before_outage = load.count
            load.wait_for(300)
            during_outage = load.count - before_outage
            errors_while_down = metric(probe, "mtc_cache_errors_total")
            assert errors_while_down > 0
            redis = start_redis(redis_port)
            hits_at_restart = metric(probe, "mtc_cache_lookups_total", result="hit")
            # Recovered: hits climb again and Redis errors stop.
            while metric(probe, "mtc_cache_lookups_total", result="hit") < hits_at_restart + 50:
                assert service.poll() is None
                time.sleep(0.05)
            errors_after = metric(probe, "mtc_cache_errors_total")
            load.wait_for(200)
            assert metric(probe, "mtc_cache_errors_total") == errors_after
    finally:
        probe.close()
        stop(service)
        stop(redis, kill=True)
    assert during_outage >= 300
    assert load.statuses == [200] * len(load.statuses)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def test_ten_thousand_requests_do_not_grow_the_service_memory(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    service = start_text_service(tiny_model_dir, port, tmp_path / "service.log")
    statuses: dict[int, int] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=HANG_GUARD) as client:
            for number in range(10_000):
                # Cached after the first round: this measures the serving path, not the model.
                status = client.post(URL, json={"text": [f"steady {number % 20}"]}).status_code
                statuses[status] = statuses.get(status, 0) + 1
                if number == 2_000:
                    warmed = rss_kib(service.pid)
            final = rss_kib(service.pid)
    finally:
        stop(service)
    assert statuses == {200: 10_000}
    # Generous: a leak of even 2 KiB per request would pass 16 MiB over these 8,000.
    assert final - warmed < 16 * 1024, (warmed, final)


class SlowClassifier(SequenceClassifier):
    """The tiny model, made slow: every batch takes half a second."""

    def predict(self, batch: Sequence[TextInput]) -> list[TextPrediction]:
        time.sleep(0.5)
        return super().predict(batch)


def test_a_slow_model_times_requests_out_without_leaking_threads_or_work(
    tiny_model_dir: Path,
) -> None:
    settings = TextSettings(
        task="sentiment",
        model_uri=str(tiny_model_dir),
        request_timeout_seconds=0.05,
        inference_workers=1,
        max_batch_size=1,
        cache_ttl_seconds=0,
    )
    model = SlowClassifier()
    with TestClient(build_app(settings, model)) as client:
        wait_ready(client)
        # The first round lets the bounded thread pools reach their working size.
        warm_up = [client.post(URL, json={"text": [f"warm {i}"]}) for i in range(20)]
        threads_before = threading.active_count()
        answers = [client.post(URL, json={"text": [f"slow {i}"]}) for i in range(100)]
        threads_after = threading.active_count()
        # Timed-out work is withdrawn: the queue empties instead of running every batch.
        deadline = time.monotonic() + 10
        while metric(client, "mtc_queue_depth") > 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        inferred = metric(client, "mtc_items_inferred_total")
    assert [a.status_code for a in warm_up + answers] == [504] * 120
    assert {a.json()["error_type"] for a in answers} == {"timeout"}
    assert threads_after <= threads_before
    # Only batches already running when their request gave up reached the model.
    assert inferred < 60
