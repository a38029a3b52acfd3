"""Graceful shutdown: SIGTERM to a service under load loses none of the work it accepted.

The service is a real text service process (`python -m services.text`, tiny random BERT)
on 127.0.0.1; the queue test drives the batching queue directly. Client timeouts are hang
guards, never measurements.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path

import httpx
import pytest

from services.core.batching import BatchQueue
from services.core.metrics import ServiceMetrics
from services.core.model import Prediction
from tests.support.gateway_processes import free_ports, start_model_service
from tests.support.models import CountingModel
from tests.support.processes import stop, wait_for_http
from tests.support.service_client import metric

CLIENTS = 6
TEXTS_PER_REQUEST = 600
HANG_GUARD = httpx.Timeout(120.0)


@pytest.mark.e2e
def test_sigterm_under_load_answers_every_accepted_request_then_exits(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    # One item per forward pass: thousands of queued items take seconds to answer, so
    # work is still waiting when the signal comes, however fast the machine.
    process = start_model_service(
        "services.text",
        "sentiment",
        tiny_model_dir,
        port,
        tmp_path / "service.log",
        settings={"MTC_MAX_BATCH_SIZE": "1", "MTC_INFERENCE_WORKERS": "1"},
    )
    statuses: list[int | str] = []
    answered: list[int] = []
    lock = threading.Lock()

    def one_heavy_request(client_index: int) -> None:
        # Distinct long texts: nothing is cached, every item costs the model real work.
        texts = [
            f"client {client_index} review {i} " + "a long and winding sentence " * 8
            for i in range(TEXTS_PER_REQUEST)
        ]
        try:
            response = httpx.post(
                f"{url}/v1/sentiment/predict", json={"text": texts}, timeout=HANG_GUARD
            )
        except httpx.HTTPError as exc:
            with lock:
                statuses.append(type(exc).__name__)
            return
        with lock:
            statuses.append(response.status_code)
            if response.status_code == 200:
                answered.append(len(response.json()["predictions"]))

    try:
        wait_for_http(f"{url}/health/ready", process, timeout=180)
        clients = [
            threading.Thread(target=one_heavy_request, args=(index,)) for index in range(CLIENTS)
        ]
        for thread in clients:
            thread.start()
        # Every request has passed the cache (all misses), so all are accepted, and items
        # wait in the queue (a request's items are queued once their token counts are in).
        with httpx.Client(base_url=url, timeout=HANG_GUARD) as probe:
            while True:
                misses = metric(probe, "mtc_cache_lookups_total", result="miss")
                waiting_at_signal = metric(probe, "mtc_queue_depth")
                if misses >= CLIENTS * TEXTS_PER_REQUEST and waiting_at_signal > 0:
                    break
                assert process.poll() is None
                assert all(thread.is_alive() for thread in clients), statuses
        process.send_signal(signal.SIGTERM)
        # A client arriving after the signal is turned away at the door, not half-served:
        # its connection is refused, or reset unanswered if it reached the listen backlog
        # just before the listener closed.
        refused = False
        while process.poll() is None and not refused:
            try:
                httpx.get(f"{url}/health/live", timeout=HANG_GUARD)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                refused = True
        for thread in clients:
            thread.join(timeout=HANG_GUARD.read)
        exit_code = process.wait(timeout=60)
    finally:
        stop(process, kill=True)

    # Work was still queued when the signal came, so the answers below prove the drain.
    assert waiting_at_signal > 0
    assert refused
    assert statuses == [200] * CLIENTS
    assert answered == [TEXTS_PER_REQUEST] * CLIENTS
    # It ended by itself: uvicorn re-raises the signal once its shutdown is complete.
    assert exit_code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (tmp_path / "service.log").read_text()


async def test_stopping_the_queue_answers_queued_items_first() -> None:
    model = CountingModel(delay=0.05)
    queue: BatchQueue[str, Prediction] = BatchQueue(
        model,
        ServiceMetrics("drain"),
        max_batch_size=2,
        max_batch_tokens=10_000,
        max_queued_items=100,
        workers=1,
    )
    await queue.start()
    queued = await queue.submit([f"item {i}" for i in range(10)], [5] * 10)
    await queue.stop(drain_seconds=60)
    assert all(p.future.done() and not p.future.cancelled() for p in queued)
    assert sorted(model.seen) == sorted(f"item {i}" for i in range(10))


async def test_stopping_without_a_drain_cancels_what_waits() -> None:
    # The contrast case: the drain above is what answers the queued items.
    queue: BatchQueue[str, Prediction] = BatchQueue(
        CountingModel(delay=0.05),
        ServiceMetrics("no-drain"),
        max_batch_size=2,
        max_batch_tokens=10_000,
        max_queued_items=100,
        workers=1,
    )
    await queue.start()
    queued = await queue.submit([f"item {i}" for i in range(10)], [5] * 10)
    await asyncio.sleep(0)
    await queue.stop()
    assert any(p.future.cancelled() for p in queued)
