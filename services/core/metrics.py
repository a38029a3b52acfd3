"""Prometheus metrics of a model service, on a registry owned by the app (no globals)."""

from __future__ import annotations

from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds; spans sub-millisecond cache hits up to the default request timeout.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
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
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PHASES = ("cache", "queue", "inference")


class ServiceMetrics:
    """Every metric a model service exports. Labels are bounded: task, phase, status class."""

    def __init__(self, task: str, registry: CollectorRegistry | None = None) -> None:
        self.task = task
        self.registry = registry or CollectorRegistry()
        counter = partial(Counter, registry=self.registry)
        histogram = partial(Histogram, registry=self.registry)
        gauge = partial(Gauge, registry=self.registry)
        self.requests = counter(
            "mtc_requests_total", "Prediction requests by outcome.", ["task", "status_class"]
        )
        self.request_duration = histogram(
            "mtc_request_duration_seconds",
            "Wall time of prediction requests, from routing to response.",
            ["task"],
            buckets=LATENCY_BUCKETS,
        )
        self.phase_duration = histogram(
            "mtc_phase_duration_seconds",
            "Time per request spent in each phase (cache lookup, queue wait, inference).",
            ["task", "phase"],
            buckets=LATENCY_BUCKETS,
        )
        self.cache_lookups = counter(
            "mtc_cache_lookups_total", "Per-item cache lookups by result.", ["task", "result"]
        )
        self.cache_errors = counter(
            "mtc_cache_errors_total",
            "Cache calls that failed or were skipped because the cache backend is down.",
            ["task"],
        )
        self.items_inferred = counter(
            "mtc_items_inferred_total",
            "Items that went through the model (cache misses).",
            ["task"],
        )
        self.batch_size = histogram(
            "mtc_batch_size", "Items per forward pass.", ["task"], buckets=BATCH_SIZE_BUCKETS
        )
        self.batch_fill = histogram(
            "mtc_batch_fill_ratio",
            "Real tokens / padded tokens of each forward pass (1.0 means no padding).",
            ["task"],
            buckets=(0.1, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
        )
        self.queue_depth = gauge("mtc_queue_depth", "Items waiting for the model.", ["task"])
        self.rejected = counter(
            "mtc_rejected_total",
            "Requests refused before inference, by reason (overloaded, timeout, not_ready).",
            ["task", "reason"],
        )
        self.model_info = gauge(
            "mtc_model_info",
            "The model being served (value 1), by name and version.",
            ["task", "model", "version"],
        )
        self.model_ready = gauge(
            "mtc_model_ready", "1 when the model is loaded and serving, else 0.", ["task"]
        )
        # Every series shown from the start, at 0 (not ready, nothing queued).
        for metric in (self.model_ready, self.queue_depth, self.cache_errors, self.items_inferred):
            metric.labels(task)
        for phase in PHASES:
            self.phase_duration.labels(task, phase)
        for result in ("hit", "miss"):
            self.cache_lookups.labels(task, result)

    def observe_phase(self, phase: str, seconds: float) -> None:
        """Record time spent in one phase of a request."""
        self.phase_duration.labels(self.task, phase).observe(seconds)

    def count_cache_error(self) -> None:
        """Count one failed or skipped cache call."""
        self.cache_errors.labels(self.task).inc()

    def mark_loaded(self, name: str, version: str) -> None:
        """Publish the loaded model's identity and readiness."""
        self.model_info.labels(self.task, name, version).set(1)
        self.model_ready.labels(self.task).set(1)
