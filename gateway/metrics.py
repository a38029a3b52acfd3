"""The gateway's Prometheus metrics, kept in a registry of their own."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from functools import partial
from typing import Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.replicas import CircuitState, ReplicaSet
from services.core.metrics import LATENCY_BUCKETS

UNKNOWN_TASK_LABEL = "unknown"

MAX_MODEL_VERSIONS_PER_TASK = 8
"""Distinct `model_version` label values kept per task (a stable and a canary version, and
a few past ones over the gateway's life); later ones are counted as `other`: the values
come from the services, and a series per value must stay bounded."""
MAX_MODEL_VERSION_LENGTH = 128
NO_MODEL_VERSION_LABEL = "none"
"""An answer without a version: the service's model is not loaded yet (503), or the service
predates the `x-model-version` header."""
OTHER_MODEL_VERSION_LABEL = "other"

# From a cache hit on a small model (milliseconds) to a batch on a slow CPU model (tens of s):
# the services' buckets from 5 ms, and a minute.
REQUEST_DURATION_BUCKETS = (*LATENCY_BUCKETS[LATENCY_BUCKETS.index(0.005) :], 60.0)

UpstreamErrorKind = Literal["connect", "timeout", "protocol", "circuit_open"]
RejectionReason = Literal["missing_api_key", "invalid_api_key", "rate_limited"]


class GatewayMetrics:
    """Traffic through the gateway, its failures to reach services, retries, refused
    requests (auth and quotas), and the state of each upstream URL.

    Each instance owns its registry, so several apps (tests, workers) never collide on the
    process-wide default one. Task labels are limited to the configured tasks plus
    `unknown`, so a client cannot create series by inventing task names.
    """

    def __init__(self, tasks: Iterable[str]) -> None:
        self._tasks = frozenset(tasks)
        self.registry = CollectorRegistry()
        counter = partial(Counter, registry=self.registry)
        self._requests = counter(
            "mtc_gateway_requests_total",
            "Predict requests answered by the gateway, by task and status class.",
            ["task", "status_class"],
        )
        self._duration = Histogram(
            "mtc_gateway_request_duration_seconds",
            "Time from receiving a predict request to sending its response headers.",
            ["task"],
            buckets=REQUEST_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._upstream_errors = counter(
            "mtc_gateway_upstream_errors_total",
            "Attempts to reach a task's service that failed, by kind.",
            ["task", "kind"],
        )
        self._retries = counter(
            "mtc_gateway_upstream_retries_total",
            "Attempts repeated because the connection to a service could not be opened.",
            ["task"],
        )
        self._rejected = counter(
            "mtc_gateway_rejected_total",
            "Requests refused before forwarding: missing or invalid API key, or over quota.",
            ["reason"],
        )
        self._model_answers = counter(
            "mtc_gateway_model_responses_total",
            "Answers of a task's services, by the model version that gave them (their "
            "x-model-version header, `name/version`) and status class: a canary's share of the "
            "traffic and its errors beside the stable version's.",
            ["task", "model_version", "status_class"],
        )
        self._model_versions_seen: dict[str, set[str]] = {}
        self._quota_store_errors = counter(
            "mtc_gateway_quota_store_errors_total",
            "Quota checks counted in memory because Redis failed or was being skipped.",
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

    def observe_retry(self, task: str) -> None:
        """Count one repeated attempt to reach the task's service."""
        self._retries.labels(task=self.task_label(task)).inc()

    def observe_rejection(self, reason: RejectionReason) -> None:
        """Count one request refused by the API key check or the quota."""
        self._rejected.labels(reason=reason).inc()

    def observe_model_answer(self, task: str, model_version: str | None, status_code: int) -> None:
        """Count one answer of the task's service by the model version it named."""
        self._model_answers.labels(
            task=self.task_label(task),
            model_version=self._model_version_label(task, model_version),
            status_class=f"{status_code // 100}xx",
        ).inc()

    def _model_version_label(self, task: str, model_version: str | None) -> str:
        if not model_version:
            return NO_MODEL_VERSION_LABEL
        seen = self._model_versions_seen.setdefault(task, set())
        if model_version in seen:
            return model_version
        if (
            len(seen) >= MAX_MODEL_VERSIONS_PER_TASK
            or len(model_version) > MAX_MODEL_VERSION_LENGTH
        ):
            return OTHER_MODEL_VERSION_LABEL
        seen.add(model_version)
        return model_version

    def count_quota_store_error(self) -> None:
        """Count one quota check that could not use Redis."""
        self._quota_store_errors.inc()

    def watch_replicas(self, replica_sets: Mapping[str, ReplicaSet]) -> None:
        """Export each replica's circuit state and requests in flight at scrape time."""
        self.registry.register(_ReplicaCollector(replica_sets))

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _ReplicaCollector(Collector):
    """Reads the replicas when scraped, so the gauges are never stale.

    A replica is named by its task and its position in the task's list of URLs (`0`,
    `1`, ...), never by its URL: `/metrics` is public, and internal addresses are not."""

    def __init__(self, replica_sets: Mapping[str, ReplicaSet]) -> None:
        self._replica_sets = replica_sets

    def collect(self) -> Iterator[Metric]:
        circuit = GaugeMetricFamily(
            "mtc_gateway_upstream_circuit_open",
            "1 while the circuit of a replica (task, position in its URL list) is open or "
            "half-open (no regular traffic), 0 while closed.",
            labels=["task", "replica"],
        )
        in_flight = GaugeMetricFamily(
            "mtc_gateway_upstream_in_flight",
            "Requests forwarded to a replica (task, position in its URL list) and not yet "
            "answered.",
            labels=["task", "replica"],
        )
        for task, replica_set in self._replica_sets.items():
            for index, replica in enumerate(replica_set.replicas):
                is_open = replica.breaker.state is not CircuitState.CLOSED
                circuit.add_metric([task, str(index)], 1.0 if is_open else 0.0)
                in_flight.add_metric([task, str(index)], float(replica.in_flight))
        yield circuit
        yield in_flight
