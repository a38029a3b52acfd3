"""The worker's metrics and probes: the contracted names, bounded labels, the queue length
read off the request path, and health endpoints that never wait for Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from deploy.render import REPO
from services.core.metrics_server import MetricsServer
from services.jobs.metrics import (
    GATEWAY_STATES,
    QueueLengthPoller,
    WorkerMetrics,
    jobs_counter,
)
from services.jobs.queue import create_celery_app, queue_length
from services.jobs.settings import JobsSettings
from services.jobs.store import JobState
from services.jobs.worker import QUEUE_READ_TIMEOUT_SECONDS
from tests.support.processes import free_port


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_the_worker_exports_the_contracted_names() -> None:
    metrics = WorkerMetrics(["sentiment"])
    metrics.watch_queue(lambda: 7).refresh()
    metrics.entered(JobState.RUNNING)
    metrics.predicted("sentiment", 64)
    metrics.predicted("made-up-task", 1)
    metrics.retried("sentiment")
    metrics.running.inc()

    text = exposition(metrics.registry)

    assert 'mtc_jobs_total{state="running"} 1.0' in text
    assert 'mtc_jobs_total{state="succeeded"} 0.0' in text
    assert 'mtc_jobs_total{state="failed"} 0.0' in text
    assert 'mtc_job_items_total{task="sentiment"} 64.0' in text
    assert 'mtc_job_items_total{task="unknown"} 1.0' in text
    assert 'mtc_job_upstream_retries_total{task="sentiment"} 1.0' in text
    assert "mtc_jobs_running 1.0" in text
    assert "mtc_jobs_queue_length 7.0" in text


def test_the_gateway_counts_queued_and_cancelled_jobs() -> None:
    registry = CollectorRegistry()
    counter = jobs_counter(registry, GATEWAY_STATES)
    counter.labels(state="queued").inc()

    text = exposition(registry)

    assert 'mtc_jobs_total{state="queued"} 1.0' in text
    assert 'mtc_jobs_total{state="cancelled"} 0.0' in text


def samples(poller: QueueLengthPoller) -> dict[str, float]:
    return {sample.name: sample.value for family in poller.collect() for sample in family.samples}


def test_a_scrape_shows_the_last_length_read_and_its_age() -> None:
    now = [100.0]
    reads: list[int] = []

    def read() -> int:
        reads.append(1)
        return 3

    poller = QueueLengthPoller(read, clock=lambda: now[0])
    poller.refresh()
    now[0] += 4.0

    assert samples(poller) == {
        "mtc_jobs_queue_length": 3.0,
        "mtc_jobs_queue_length_age_seconds": 4.0,
        "mtc_jobs_queue_read_errors_total": 0.0,
    }
    assert samples(poller)["mtc_jobs_queue_length"] == 3.0
    assert len(reads) == 1, "scrapes never read the broker"


def test_a_failed_read_is_counted_and_an_old_length_left_out() -> None:
    now = [100.0]
    lengths = iter([5])

    def read() -> int:
        return next(lengths)  # the broker answers once, then never again

    poller = QueueLengthPoller(read, stale_after_seconds=60.0, clock=lambda: now[0])
    poller.refresh()
    now[0] += 30.0
    poller.refresh()
    assert samples(poller) == {
        "mtc_jobs_queue_length": 5.0,
        "mtc_jobs_queue_length_age_seconds": 30.0,
        "mtc_jobs_queue_read_errors_total": 1.0,
    }

    now[0] += 31.0
    poller.refresh()
    assert samples(poller) == {
        "mtc_jobs_queue_length_age_seconds": 61.0,
        "mtc_jobs_queue_read_errors_total": 2.0,
    }


def test_an_unreachable_redis_is_reported_within_the_read_timeout() -> None:
    settings = JobsSettings(
        broker_url=f"redis://127.0.0.1:{free_port()}/0", upstreams={"sentiment": "http://s"}
    )
    app = create_celery_app(settings)  # nothing listens on that port: connections are refused
    poller = QueueLengthPoller(
        lambda: queue_length(app, settings.queue, timeout_seconds=QUEUE_READ_TIMEOUT_SECONDS)
    )

    started = time.monotonic()
    poller.refresh()

    # Without the timeout kombu retries a refused connection for about 6 s.
    assert time.monotonic() - started < QUEUE_READ_TIMEOUT_SECONDS
    measured = samples(poller)
    assert measured["mtc_jobs_queue_read_errors_total"] == 1.0
    assert "mtc_jobs_queue_length" not in measured


@pytest.fixture
def worker_metrics_with_redis_hanging() -> Iterator[tuple[str, threading.Event, list[str]]]:
    """A worker's metrics server whose queue reader is stuck in a read that never returns."""
    release, reading = threading.Event(), threading.Event()
    reader_threads: list[str] = []

    def hanging_read() -> int:
        reader_threads.append(threading.current_thread().name)
        reading.set()
        release.wait()
        return 0

    stopping = threading.Event()
    metrics = WorkerMetrics(["sentiment"])
    poller = metrics.watch_queue(hanging_read)
    server = MetricsServer(
        metrics.registry, "127.0.0.1", 0, ready=lambda: not stopping.is_set()
    ).start()
    poller.start()
    assert reading.wait(5), "the poller reads at once"
    try:
        yield f"http://127.0.0.1:{server.port}", stopping, reader_threads
    finally:
        release.set()
        poller.stop()
        server.stop()


def worker_probes() -> dict[str, dict[str, object]]:
    deployment = next(
        doc
        for doc in yaml.safe_load_all((REPO / "base/worker.yaml").read_text(encoding="utf-8"))
        if doc["kind"] == "Deployment"
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}


def test_probes_and_scrapes_answer_at_once_while_redis_hangs(
    worker_metrics_with_redis_hanging: tuple[str, threading.Event, list[str]],
) -> None:
    base, stopping, reader_threads = worker_metrics_with_redis_hanging
    probe_timeout = min(float(str(probe["timeoutSeconds"])) for probe in worker_probes().values())

    for path, status in (("/health/live", 200), ("/health/ready", 200), ("/metrics", 200)):
        started = time.monotonic()
        response = httpx.get(base + path, timeout=probe_timeout)
        assert response.status_code == status, path
        assert time.monotonic() - started < probe_timeout
    assert reader_threads == ["mtc-queue-length"], "only the poller's thread reads the broker"
    assert "mtc_jobs_queue_length_age_seconds" in response.text

    stopping.set()
    assert httpx.get(base + "/health/ready").status_code == 503
    assert httpx.get(base + "/health/live").json() == {"status": "alive"}
