"""Grafana dashboards of mtc as data: one overview and one per service.

Panels read only mtc's own metrics (services/core/metrics.py, gateway/metrics.py), so every
query can be run against a Prometheus that scraped the local stack. `namespace` and `task`
are dashboard variables; Prometheus Operator adds the `namespace` label to every target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from deploy.observability.promql import NAMESPACE, RATE, TASK, quantile, rate_sum, ratio
from services.core.kinds import ModelKind, ServiceImage, model_kinds

# Grafana's JSON model version these dashboards are written in (Grafana 10.x / 11.x).
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
FILTER = (NAMESPACE, TASK)
PANEL_HEIGHT = 8

Unit = Literal["reqps", "ops", "s", "percentunit", "short", "none"]


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a panel and how its series are named in the legend."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    """A time-series panel."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: Unit
    width: int = 12


@dataclass(frozen=True)
class Dashboard:
    """A dashboard: its panels and which tasks its `task` variable selects at first."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    default_tasks: tuple[str, ...] = ()
    tags: tuple[str, ...] = field(default=("mtc",))


def _status_rate(metric: str) -> Panel:
    return Panel(
        "Requests per second by status",
        "Prediction requests answered, by task and status class (health checks and scrapes "
        "are not counted).",
        (Query(rate_sum(metric, "task, status_class", FILTER, RATE), "{{task}} {{status_class}}"),),
        "reqps",
    )


def _latency(histogram: str, title: str, description: str) -> Panel:
    return Panel(
        title,
        description,
        tuple(
            Query(quantile(q, histogram, "task", FILTER, RATE), f"p{round(q * 100)} {{{{task}}}}")
            for q in (0.5, 0.9, 0.99)
        ),
        "s",
    )


def _error_ratio(metric: str, title: str) -> Panel:
    errors = rate_sum(metric, "task", ('status_class="5xx"', *FILTER), RATE)
    return Panel(
        title,
        "Share of prediction requests answered 5xx (model not ready, upstream down or slow).",
        (Query(ratio(errors, rate_sum(metric, "task", FILTER, RATE)), "{{task}}"),),
        "percentunit",
    )


def _cache_hit_ratio() -> Panel:
    hits = rate_sum("mtc_cache_lookups_total", "task", ('result="hit"', *FILTER), RATE)
    lookups = rate_sum("mtc_cache_lookups_total", "task", FILTER, RATE)
    return Panel(
        "Cache hit ratio",
        "Share of items answered from the prediction cache (per item, so a batch can be "
        "partly cached).",
        (Query(ratio(hits, lookups), "{{task}}"),),
        "percentunit",
    )


def _queue_depth() -> Panel:
    return Panel(
        "Queue depth",
        "Items waiting for the model, summed over replicas. Past MTC_MAX_QUEUED_ITEMS per "
        "replica new requests are refused with 429.",
        (Query(f"sum by (task) (mtc_queue_depth{{{NAMESPACE}, {TASK}}})", "{{task}}"),),
        "short",
    )


def _batch_size() -> Panel:
    mean = ratio(
        rate_sum("mtc_batch_size_sum", "task", FILTER, RATE),
        rate_sum("mtc_batch_size_count", "task", FILTER, RATE),
    )
    return Panel(
        "Batch size",
        "Items per forward pass: mean and 90th percentile. Small batches under load mean the "
        "batching window or MTC_MAX_BATCH_SIZE limits throughput.",
        (
            Query(mean, "mean {{task}}"),
            Query(quantile(0.9, "mtc_batch_size", "task", FILTER, RATE), "p90 {{task}}"),
        ),
        "short",
    )


def _replicas() -> Panel:
    return Panel(
        "Model replicas",
        "Replicas scraped per task, and how many of them have their model loaded.",
        (
            Query(f"count by (task) (mtc_model_ready{{{NAMESPACE}, {TASK}}})", "{{task}} running"),
            Query(f"sum by (task) (mtc_model_ready{{{NAMESPACE}, {TASK}}})", "{{task}} ready"),
        ),
        "short",
    )


def overview() -> Dashboard:
    """Traffic, errors, latency, cache, queues, batches and replicas of every task."""
    return Dashboard(
        uid="mtc-overview",
        title="mtc / Overview",
        description="Every task through the gateway, and its model service behind it.",
        panels=(
            Panel(
                "Requests per second",
                "Prediction requests through the gateway, by task.",
                (Query(rate_sum("mtc_gateway_requests_total", "task", FILTER, RATE), "{{task}}"),),
                "reqps",
            ),
            _error_ratio("mtc_gateway_requests_total", "Error ratio (5xx) at the gateway"),
            _latency(
                "mtc_gateway_request_duration_seconds",
                "Latency at the gateway",
                "Time from receiving a prediction request to answering it, per task.",
            ),
            _cache_hit_ratio(),
            _queue_depth(),
            _batch_size(),
            _replicas(),
            Panel(
                "Items inferred per second",
                "Items that went through a model (cache misses), by task.",
                (Query(rate_sum("mtc_items_inferred_total", "task", FILTER, RATE), "{{task}}"),),
                "ops",
            ),
        ),
    )


def _service_panels() -> tuple[Panel, ...]:
    phase_p99 = quantile(0.99, "mtc_phase_duration_seconds", "task, phase", FILTER, RATE)
    return (
        _status_rate("mtc_requests_total"),
        _error_ratio("mtc_requests_total", "Error ratio (5xx)"),
        _latency(
            "mtc_request_duration_seconds",
            "Request latency",
            "Wall time of prediction requests inside the service.",
        ),
        Panel(
            "Time per phase (p99)",
            "Where a request's time goes: cache lookup, waiting in the queue, inference.",
            (Query(phase_p99, "{{task}} {{phase}}"),),
            "s",
        ),
        _queue_depth(),
        Panel(
            "Refused before inference",
            "Requests refused by reason: overloaded (queue full, 429), timeout (504), "
            "not_ready (503).",
            (
                Query(
                    rate_sum("mtc_rejected_total", "task, reason", FILTER, RATE),
                    "{{task}} {{reason}}",
                ),
            ),
            "reqps",
        ),
        _cache_hit_ratio(),
        Panel(
            "Cache errors",
            "Cache calls that failed or were skipped while Redis was down (requests are still "
            "served, uncached).",
            (Query(rate_sum("mtc_cache_errors_total", "task", FILTER, RATE), "{{task}}"),),
            "ops",
        ),
        _batch_size(),
        _replicas(),
        Panel(
            "Model served",
            "Name and version of the loaded model (1 per replica serving it).",
            (
                Query(
                    f"sum by (task, model, version) (mtc_model_info{{{NAMESPACE}, {TASK}}})",
                    "{{task}} {{model}} {{version}}",
                ),
            ),
            "short",
        ),
    )


def service_dashboard(kind: ModelKind, image: ServiceImage) -> Dashboard:
    """The dashboard of one kind's service, for every task it serves."""
    fill = ratio(
        rate_sum("mtc_batch_fill_ratio_sum", "task", FILTER, RATE),
        rate_sum("mtc_batch_fill_ratio_count", "task", FILTER, RATE),
    )
    return Dashboard(
        uid=f"mtc-{image.name}",
        title=f"mtc / {image.name.capitalize()} service",
        description=f"{kind.name.capitalize()} classification service: traffic, phases, queue, "
        "cache, batching.",
        panels=(
            *_service_panels(),
            Panel(
                "Batch fill ratio",
                "Real / padded cost per forward pass (1.0 = no padding wasted, as always for "
                "kinds whose items all cost the same); low values mean items of very different "
                "sizes share batches.",
                (Query(fill, "{{task}}"),),
                "percentunit",
            ),
        ),
        default_tasks=tuple(kind.starters),
    )


def _traffic_by_model_version() -> Panel:
    return Panel(
        "Answers per second by model version",
        "Answers of each task's services by the model version that gave them (their "
        "x-model-version header): during a canary release, the stable and the canary "
        "version's shares of the traffic; `none` is a service without a loaded model.",
        (
            Query(
                rate_sum("mtc_gateway_model_responses_total", "task, model_version", FILTER, RATE),
                "{{task}} {{model_version}}",
            ),
        ),
        "reqps",
    )


def _errors_by_model_version() -> Panel:
    metric = "mtc_gateway_model_responses_total"
    answers = rate_sum(metric, "task, model_version", FILTER, RATE)
    # A version without a single 5xx has no such series: 0 for it, not a missing line.
    five_xx = rate_sum(metric, "task, model_version", ('status_class="5xx"', *FILTER), RATE)
    errors = f"{five_xx}\nor\n0 * {answers}"
    return Panel(
        "Error ratio (5xx) by model version",
        "Share of each model version's answers that are 5xx: a canary whose ratio rises above "
        "the stable version's is one to roll back (docs/deploy.md, \"Releasing a model "
        'version").',
        (
            Query(
                ratio(errors, answers),
                "{{task}} {{model_version}}",
            ),
        ),
        "percentunit",
    )


def gateway() -> Dashboard:
    """The gateway: traffic per task and model version, and how its upstreams behave."""
    return Dashboard(
        uid="mtc-gateway",
        title="mtc / Gateway",
        description="The public API: traffic, latency, and failures to reach model services.",
        panels=(
            _status_rate("mtc_gateway_requests_total"),
            _latency(
                "mtc_gateway_request_duration_seconds",
                "Latency",
                "Time from receiving a prediction request to sending its response headers.",
            ),
            _traffic_by_model_version(),
            _errors_by_model_version(),
            Panel(
                "Upstream errors",
                "Attempts to reach a task's service that failed: connect, timeout, protocol, "
                "or refused by an open circuit.",
                (
                    Query(
                        rate_sum("mtc_gateway_upstream_errors_total", "task, kind", FILTER, RATE),
                        "{{task}} {{kind}}",
                    ),
                ),
                "ops",
            ),
            Panel(
                "Requests in flight per task",
                "Requests forwarded and not yet answered, summed over gateway replicas.",
                (
                    Query(
                        f"sum by (task) (mtc_gateway_upstream_in_flight{{{NAMESPACE}, {TASK}}})",
                        "{{task}}",
                    ),
                ),
                "short",
            ),
            Panel(
                "Open circuits",
                "Upstream URLs whose circuit is open or half-open (no regular traffic).",
                (
                    Query(
                        f"sum by (task) (mtc_gateway_upstream_circuit_open{{{NAMESPACE}, {TASK}}})",
                        "{{task}}",
                    ),
                ),
                "short",
            ),
            Panel(
                "Refused requests",
                "Requests refused before forwarding: missing or invalid API key (401), over "
                "the key's quota (429). Only with API keys on.",
                (
                    Query(
                        rate_sum("mtc_gateway_rejected_total", "reason", (NAMESPACE,), RATE),
                        "{{reason}}",
                    ),
                ),
                "reqps",
            ),
            Panel(
                "Quota checks without Redis",
                "Quota checks counted in memory because Redis failed: quotas are then per "
                "gateway replica instead of shared.",
                (
                    Query(
                        f"sum (rate(mtc_gateway_quota_store_errors_total{{{NAMESPACE}}}[{RATE}]))",
                        "quota store errors",
                    ),
                ),
                "ops",
            ),
            Panel(
                "Gateway replicas",
                "Gateway replicas scraped (each exports one quota-error counter).",
                (
                    Query(
                        f"count (mtc_gateway_quota_store_errors_total{{{NAMESPACE}}})",
                        "replicas",
                    ),
                ),
                "short",
            ),
        ),
    )


def jobs() -> Dashboard:
    """Batch jobs: states, throughput, the queue and the workers (services/jobs/metrics.py)."""
    return Dashboard(
        uid="mtc-jobs",
        title="mtc / Batch jobs",
        description="Jobs submitted to /v1/jobs: how many enter each state, how fast their "
        "items are predicted, what waits in the queue, and the workers running them.",
        panels=(
            Panel(
                "Jobs entering each state",
                "Jobs per second that were queued (gateway), started running (worker; again "
                "after a worker was lost), succeeded, failed or were cancelled.",
                (Query(rate_sum("mtc_jobs_total", "state", (NAMESPACE,), RATE), "{{state}}"),),
                "ops",
            ),
            Panel(
                "Items predicted per second",
                "Items of jobs answered by the model services, by task.",
                (Query(rate_sum("mtc_job_items_total", "task", FILTER, RATE), "{{task}}"),),
                "ops",
            ),
            Panel(
                "Queue: waiting and running",
                "Jobs waiting in the queue (every worker reads the same queue, hence max) and "
                "jobs running on workers: their sum is what the worker autoscaler follows.",
                (
                    Query(f"max (mtc_jobs_queue_length{{{NAMESPACE}}})", "waiting"),
                    Query(f"sum (mtc_jobs_running{{{NAMESPACE}}})", "running"),
                ),
                "short",
            ),
            Panel(
                "Retried calls to model services",
                "Chunks of jobs sent again after a connection failure, 429, 503 or 504 from a "
                "model service, by task.",
                (
                    Query(
                        rate_sum("mtc_job_upstream_retries_total", "task", FILTER, RATE),
                        "{{task}}",
                    ),
                ),
                "ops",
            ),
            Panel(
                "Workers",
                "Worker processes scraped.",
                (Query(f"count (mtc_jobs_running{{{NAMESPACE}}})", "workers"),),
                "short",
            ),
        ),
    )


def all_dashboards() -> tuple[Dashboard, ...]:
    """Every dashboard shipped."""
    services = tuple(
        service_dashboard(kind, kind.image) for kind in model_kinds().values() if kind.image
    )
    return (overview(), *services, gateway(), jobs())


def _variables(dashboard: Dashboard) -> list[dict[str, Any]]:
    namespaces = "label_values(mtc_model_ready, namespace)"
    tasks = 'label_values(mtc_model_ready{namespace=~"$namespace"}, task)'
    if dashboard.default_tasks:
        current: dict[str, Any] = {
            "text": list(dashboard.default_tasks),
            "value": list(dashboard.default_tasks),
        }
    else:
        current = {"text": ["All"], "value": ["$__all"]}
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "hide": 0,
        },
        {
            "name": "namespace",
            "label": "Namespace",
            "type": "query",
            "datasource": DATASOURCE,
            "definition": namespaces,
            "query": {"query": namespaces, "refId": "namespace"},
            "refresh": 2,
            "sort": 1,
            "includeAll": False,
            "multi": False,
            "hide": 0,
        },
        {
            "name": "task",
            "label": "Task",
            "type": "query",
            "datasource": DATASOURCE,
            "definition": tasks,
            "query": {"query": tasks, "refId": "task"},
            "refresh": 2,
            "sort": 1,
            "includeAll": True,
            "allValue": ".+",
            "multi": True,
            "current": current,
            "hide": 0,
        },
    ]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": PANEL_HEIGHT, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "min": 0,
                "custom": {"drawStyle": "line", "fillOpacity": 10, "showPoints": "never"},
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
                "range": True,
            }
            for index, query in enumerate(panel.queries)
        ],
    }


def to_json(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard in Grafana's JSON model, panels laid out two per row."""
    panels: list[dict[str, Any]] = []
    x = y = 0
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y = 0, y + PANEL_HEIGHT
        panels.append(_panel_json(panel, panel_id, x, y))
        x += panel.width
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": list(dashboard.tags),
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": _variables(dashboard)},
        "panels": panels,
    }
