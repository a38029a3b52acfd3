"""Prometheus metrics of batch jobs. The names are a contract (dashboards and alerts
depend on them): `mtc_jobs_total{state}`, `mtc_jobs_running`, `mtc_job_items_total{task}`,
`mtc_job_upstream_retries_total{task}`, `mtc_jobs_queue_length`.

`mtc_jobs_total` is counted where each state is entered: `queued` and `cancelled` by the
gateway (submission and `DELETE`), `running`, `succeeded` and `failed` by the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.jobs.store import JobState

logger = logging.getLogger(__name__)

GATEWAY_STATES = (JobState.QUEUED, JobState.CANCELLED)
WORKER_STATES = (JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED)
QUEUE_LENGTH_CACHE_SECONDS = 1.0


def jobs_counter(registry: CollectorRegistry, states: Sequence[JobState]) -> Counter:
    """`mtc_jobs_total{state}`, with the `states` this process counts shown from zero."""
    counter = Counter(
        "mtc_jobs_total", "Jobs that entered each state.", ["state"], registry=registry
    )
    for state in states:
        counter.labels(state=state.value)
    return counter


class WorkerMetrics:
    """What a worker exports on its metrics port."""

    def __init__(self, tasks: Iterable[str], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.tasks = frozenset(tasks)
        self.jobs = jobs_counter(self.registry, WORKER_STATES)
        self.running = Gauge(
            "mtc_jobs_running", "Jobs this worker is running now.", registry=self.registry
        )
        self.items = Counter(
            "mtc_job_items_total", "Items predicted by jobs.", ["task"], registry=self.registry
        )
        self.retries = Counter(
            "mtc_job_upstream_retries_total",
            "Repeated calls from jobs to a model service after a failed attempt.",
            ["task"],
            registry=self.registry,
        )
        for task in self.tasks:
            self.items.labels(task=task)
            self.retries.labels(task=task)

    def entered(self, state: JobState) -> None:
        """Count one job entering `state`."""
        self.jobs.labels(state=state.value).inc()

    def predicted(self, task: str, count: int) -> None:
        """Count `count` items predicted for `task`."""
        self.items.labels(task=self._task_label(task)).inc(count)

    def retried(self, task: str) -> None:
        """Count one retried call to `task`'s service."""
        self.retries.labels(task=self._task_label(task)).inc()

    def watch_queue(self, read_length: Callable[[], int]) -> None:
        """Export `mtc_jobs_queue_length`, read with `read_length` at scrape time."""
        self.registry.register(QueueLengthCollector(read_length))

    def _task_label(self, task: str) -> str:
        # Tasks come from configuration, but a job stored by a differently configured
        # gateway could name anything: keep the label set bounded.
        return task if task in self.tasks else "unknown"


class QueueLengthCollector(Collector):
    """`mtc_jobs_queue_length`, read from the broker at most once a second; left out of a
    scrape when the broker cannot be reached (the failure is logged)."""

    def __init__(self, read_length: Callable[[], int]) -> None:
        self.read_length = read_length
        self._lock = threading.Lock()
        self._cached: tuple[float, int] | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        length = self._length()
        if length is None:
            return
        gauge = GaugeMetricFamily(
            "mtc_jobs_queue_length", "Job messages waiting in the Celery queue."
        )
        gauge.add_metric([], float(length))
        yield gauge

    def _length(self) -> int | None:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < QUEUE_LENGTH_CACHE_SECONDS:
                return self._cached[1]
            try:
                length = self.read_length()
            except Exception as error:  # noqa: BLE001 - a scrape must not fail on the broker
                logger.warning("could not read the job queue length: %s", error)
                return None
            self._cached = (now, length)
            return length
