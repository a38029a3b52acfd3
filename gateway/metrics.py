"""The gateway's Prometheus metrics, kept in a registry of their own."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

UNKNOWN_TASK_LABEL = "unknown"

# From a cache hit on a small model (milliseconds) to a batch on a slow CPU model (tens of s).
REQUEST_DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

UpstreamErrorKind = Literal["connect", "timeout", "protocol"]


class GatewayMetrics:
    """Predict traffic through the gateway and its failures to reach services.

    Each instance owns its registry, so several apps (tests, workers) never collide on the
    process-wide default one. Task labels are limited to the configured tasks plus
    `unknown`, so a client cannot create series by inventing task names.
    """

    def __init__(self, tasks: Iterable[str]) -> None:
        self._tasks = frozenset(tasks)
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "mtc_gateway_requests_total",
            "Predict requests answered by the gateway, by task and status class.",
            ["task", "status_class"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "mtc_gateway_request_duration_seconds",
            "Time from receiving a predict request to sending its response headers.",
            ["task"],
            buckets=REQUEST_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._upstream_errors = Counter(
            "mtc_gateway_upstream_errors_total",
            "Predict requests that could not be completed with the task's service, by kind.",
            ["task", "kind"],
            registry=self.registry,
        )

    def task_label(self, task: str) -> str:
        """The `task` label value for a task name taken from a request path."""
        return task if task in self._tasks else UNKNOWN_TASK_LABEL

    def observe_request(self, task: str, status_code: int, duration_seconds: float) -> None:
        """Count one answered predict request and record how long it took."""
        label = self.task_label(task)
        self._requests.labels(task=label, status_class=f"{status_code // 100}xx").inc()
        self._duration.labels(task=label).observe(duration_seconds)

    def observe_upstream_error(self, task: str, kind: UpstreamErrorKind) -> None:
        """Count one forwarded request that failed before the service answered."""
        self._upstream_errors.labels(task=self.task_label(task), kind=kind).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
