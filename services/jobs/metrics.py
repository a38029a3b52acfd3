"""Prometheus metrics of batch jobs. The names are a contract (dashboards and alerts
depend on them): `mtc_jobs_total{state}`, `mtc_jobs_running`, `mtc_job_items_total{task}`,
`mtc_job_upstream_retries_total{task}`, `mtc_jobs_queue_length`, with
`mtc_jobs_queue_length_age_seconds` and `mtc_jobs_queue_read_errors_total` beside it.

`mtc_jobs_total` is counted where each state is entered: `queued` and `cancelled` by the
gateway (submission and `DELETE`), `running`, `succeeded` and `failed` by the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.jobs.store import JobState

logger = logging.getLogger(__name__)

GATEWAY_STATES = (JobState.QUEUED, JobState.CANCELLED)
WORKER_STATES = (JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED)
# The queue length is read by a thread of its own this often; scrapes show the last value.
QUEUE_LENGTH_REFRESH_SECONDS = 5.0
# A length older than this is left out: autoscaling on a backlog nobody can see any more would
# be a guess (without the series the HPA holds its replica count).
QUEUE_LENGTH_STALE_SECONDS = 60.0


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
        counter = partial(Counter, registry=self.registry)
        self.items = counter("mtc_job_items_total", "Items predicted by jobs.", ["task"])
        self.retries = counter(
            "mtc_job_upstream_retries_total",
            "Repeated calls from jobs to a model service after a failed attempt.",
            ["task"],
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

    def watch_queue(self, read_length: Callable[[], int]) -> QueueLengthPoller:
        """Export `mtc_jobs_queue_length`, read with `read_length` by the returned poller
        (started by the caller), never at scrape time."""
        poller = QueueLengthPoller(read_length)
        self.registry.register(poller)
        return poller

    def _task_label(self, task: str) -> str:
        # Tasks come from configuration, but a job stored by a differently configured
        # gateway could name anything: keep the label set bounded.
        return task if task in self.tasks else "unknown"


class QueueLengthPoller(Collector):
    """`mtc_jobs_queue_length`, read from the broker by a thread of its own every
    `refresh_seconds`, so that a scrape (and a probe on the same server) never waits for the
    broker: against an unreachable Redis one read can take seconds.

    Beside it, `mtc_jobs_queue_length_age_seconds` (since the last successful read; since
    the start before the first) and `mtc_jobs_queue_read_errors_total`. A length older than
    `stale_after_seconds` is left out.
    """

    def __init__(
        self,
        read_length: Callable[[], int],
        *,
        refresh_seconds: float = QUEUE_LENGTH_REFRESH_SECONDS,
        stale_after_seconds: float = QUEUE_LENGTH_STALE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read_length = read_length
        self.refresh_seconds = refresh_seconds
        self.stale_after_seconds = stale_after_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._last_read: tuple[float, int] | None = None
        self._started = clock()
        self._errors = 0
        self._failing = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="mtc-queue-length", daemon=True)

    def start(self) -> None:
        """Read now, then every `refresh_seconds` until `stop()`, in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop reading (waits for a read under way)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def refresh(self) -> None:
        """Read the length once; a failure is counted, never raised, and logged when it
        starts and ends (not every few seconds of an outage)."""
        try:
            length = self.read_length()
        except Exception as error:  # noqa: BLE001 - the poller outlives broker outages
            with self._lock:
                self._errors += 1
            if not self._failing:
                logger.warning("could not read the job queue length: %s", error)
            self._failing = True
            return
        with self._lock:
            self._last_read = (self._clock(), length)
        if self._failing:
            logger.info("the job queue length can be read again")
        self._failing = False

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        """The last length read (unless stale), its age and the failed reads so far."""
        with self._lock:
            last_read, errors = self._last_read, self._errors
        now = self._clock()
        length = GaugeMetricFamily(
            "mtc_jobs_queue_length", "Job messages waiting in the Celery queue."
        )
        if last_read is not None and now - last_read[0] <= self.stale_after_seconds:
            length.add_metric([], float(last_read[1]))
        yield length
        yield GaugeMetricFamily(
            "mtc_jobs_queue_length_age_seconds",
            "Seconds since mtc_jobs_queue_length was last read from the broker (since the "
            "worker started, before the first read).",
            value=now - (last_read[0] if last_read is not None else self._started),
        )
        yield CounterMetricFamily(
            "mtc_jobs_queue_read_errors",
            "Failed reads of the job queue's length from the broker.",
            value=errors,
        )

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self.refresh()
            self._stopping.wait(self.refresh_seconds)
