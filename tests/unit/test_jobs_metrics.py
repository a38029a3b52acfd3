"""The worker's metrics: the contracted names, bounded labels, and the queue length read
from the broker at most once a second."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from services.jobs.metrics import (
    GATEWAY_STATES,
    QueueLengthCollector,
    WorkerMetrics,
    jobs_counter,
)
from services.jobs.store import JobState


def exposition(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_the_worker_exports_the_contracted_names() -> None:
    metrics = WorkerMetrics(["sentiment"])
    metrics.watch_queue(lambda: 7)
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


def test_the_queue_length_is_read_at_most_once_a_second() -> None:
    reads: list[int] = []

    def read() -> int:
        reads.append(1)
        return len(reads)

    collector = QueueLengthCollector(read)
    first = [sample.value for family in collector.collect() for sample in family.samples]
    second = [sample.value for family in collector.collect() for sample in family.samples]

    assert first == second == [1.0]
    assert len(reads) == 1


def test_an_unreachable_broker_leaves_the_queue_length_out() -> None:
    def broken() -> int:
        raise ConnectionError("broker down")

    assert list(QueueLengthCollector(broken).collect()) == []
