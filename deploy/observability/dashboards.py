"""Grafana dashboards of mtc as data: one overview and one per service.

Panels read only mtc's own metrics (services/core/metrics.py, gateway/metrics.py), so every
query can be run against a Prometheus that scraped the local stack. `namespace` and `task`
are dashboard variables; Prometheus Operator adds the `namespace` label to every target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from deploy.observability.promql import NAMESPACE, RATE, TASK, quantile, rate_sum, ratio, selector
from services.core.kinds import ModelKind, ServiceImage, model_kinds

# Grafana's JSON model version these dashboards are written in (Grafana 10.x / 11.x).
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
FILTER = (NAMESPACE, TASK)
PANEL_HEIGHT = 8
PANEL_WIDTH = 12  # of Grafana's 24 columns: two panels a row

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


@dataclass(frozen=True)
class Dashboard:
    """A dashboard: its panels and which tasks its `task` variable selects at first."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    default_tasks: tuple[str, ...] = ()


def _single_query(
    title: str, description: str, expr: str, unit: Unit, legend: str = "{{task}}"
) -> Panel:
    """A panel of one query; its series are named by task unless `legend` says otherwise."""
    return Panel(title, description, (Query(expr, legend),), unit)


def _task_rate(metric: str) -> str:
    """Per-task rate of a counter, within the dashboard's filters."""
    return rate_sum(metric, "task", FILTER, RATE)


def _gauge(aggregation: str, metric: str, matchers: tuple[str, ...] = FILTER) -> str:
    """`aggregation (metric{matchers})`, e.g. `sum by (task)` of a gauge."""
    return f"{aggregation} ({metric}{selector(*matchers)})"


def _mean(histogram: str) -> str:
    """Per-task mean of a histogram's observations."""
    return ratio(_task_rate(f"{histogram}_sum"), _task_rate(f"{histogram}_count"))


def _status_rate(metric: str) -> Panel:
    return _single_query(
        "Requests per second by status",
        "Prediction requests answered, by task and status class (health checks and scrapes "
        "are not counted).",
        rate_sum(metric, "task, status_class", FILTER, RATE),
        "reqps",
        legend="{{task}} {{status_class}}",
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
    return _single_query(
        title,
        "Share of prediction requests answered 5xx (model not ready, upstream down or slow).",
        ratio(errors, _task_rate(metric)),
        "percentunit",
    )


# Panels of the overview and of every service's dashboard.
_CACHE_HIT_RATIO = _single_query(
    "Cache hit ratio",
    "Share of items answered from the prediction cache (per item, so a batch can be "
    "partly cached).",
    ratio(
        rate_sum("mtc_cache_lookups_total", "task", ('result="hit"', *FILTER), RATE),
        _task_rate("mtc_cache_lookups_total"),
    ),
    "percentunit",
)

_QUEUE_DEPTH = _single_query(
    "Queue depth",
    "Items waiting for the model, summed over replicas. Past MTC_MAX_QUEUED_ITEMS per "
    "replica new requests are refused with 429.",
    _gauge("sum by (task)", "mtc_queue_depth"),
    "short",
)

_BATCH_SIZE = Panel(
    "Batch size",
    "Items per forward pass: mean and 90th percentile. Small batches under load mean the "
    "batching window or MTC_MAX_BATCH_SIZE limits throughput.",
    (
        Query(_mean("mtc_batch_size"), "mean {{task}}"),
        Query(quantile(0.9, "mtc_batch_size", "task", FILTER, RATE), "p90 {{task}}"),
    ),
    "short",
)

_REPLICAS = Panel(
    "Model replicas",
    "Replicas scraped per task, and how many of them have their model loaded.",
    (
        Query(_gauge("count by (task)", "mtc_model_ready"), "{{task}} running"),
        Query(_gauge("sum by (task)", "mtc_model_ready"), "{{task}} ready"),
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
            _single_query(
                "Requests per second",
                "Prediction requests through the gateway, by task.",
                _task_rate("mtc_gateway_requests_total"),
                "reqps",
            ),
            _error_ratio("mtc_gateway_requests_total", "Error ratio (5xx) at the gateway"),
            _latency(
                "mtc_gateway_request_duration_seconds",
                "Latency at the gateway",
                "Time from receiving a prediction request to answering it, per task.",
            ),
            _CACHE_HIT_RATIO,
            _QUEUE_DEPTH,
            _BATCH_SIZE,
            _REPLICAS,
            _single_query(
                "Items inferred per second",
                "Items that went through a model (cache misses), by task.",
                _task_rate("mtc_items_inferred_total"),
                "ops",
            ),
        ),
    )


def service_dashboard(kind: ModelKind, image: ServiceImage) -> Dashboard:
    """The dashboard of one kind's service, for every task it serves."""
    return Dashboard(
        uid=f"mtc-{image.name}",
        title=f"mtc / {image.name.capitalize()} service",
        description=f"{kind.name.capitalize()} classification service: traffic, phases, queue, "
        "cache, batching.",
        panels=(
            _status_rate("mtc_requests_total"),
            _error_ratio("mtc_requests_total", "Error ratio (5xx)"),
            _latency(
                "mtc_request_duration_seconds",
                "Request latency",
                "Wall time of prediction requests inside the service.",
            ),
            _single_query(
                "Time per phase (p99)",
                "Where a request's time goes: cache lookup, waiting in the queue, inference.",
                quantile(0.99, "mtc_phase_duration_seconds", "task, phase", FILTER, RATE),
                "s",
                legend="{{task}} {{phase}}",
            ),
            _QUEUE_DEPTH,
            _single_query(
                "Refused before inference",
                "Requests refused by reason: overloaded (queue full, 429), timeout (504), "
                "not_ready (503).",
                rate_sum("mtc_rejected_total", "task, reason", FILTER, RATE),
                "reqps",
                legend="{{task}} {{reason}}",
            ),
            _CACHE_HIT_RATIO,
            _single_query(
                "Cache errors",
                "Cache calls that failed or were skipped while Redis was down (requests are still "
                "served, uncached).",
                _task_rate("mtc_cache_errors_total"),
                "ops",
            ),
            _BATCH_SIZE,
            _REPLICAS,
            _single_query(
                "Model served",
                "Name and version of the loaded model (1 per replica serving it).",
                _gauge("sum by (task, model, version)", "mtc_model_info"),
                "short",
                legend="{{task}} {{model}} {{version}}",
            ),
            _single_query(
                "Batch fill ratio",
                "Real / padded cost per forward pass (1.0 = no padding wasted, as always for "
                "kinds whose items all cost the same); low values mean items of very different "
                "sizes share batches.",
                _mean("mtc_batch_fill_ratio"),
                "percentunit",
            ),
        ),
        default_tasks=tuple(kind.starters),
    )


def gateway() -> Dashboard:
    """The gateway: traffic per task and model version, and how its upstreams behave."""
    metric = "mtc_gateway_model_responses_total"
    answers = rate_sum(metric, "task, model_version", FILTER, RATE)
    # A version without a single 5xx has no such series: 0 for it, not a missing line.
    five_xx = rate_sum(metric, "task, model_version", ('status_class="5xx"', *FILTER), RATE)
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
            _single_query(
                "Answers per second by model version",
                "Answers of each task's services by the model version that gave them (their "
                "x-model-version header): during a canary release, the stable and the canary "
                "version's shares of the traffic; `none` is a service without a loaded model.",
                answers,
                "reqps",
                legend="{{task}} {{model_version}}",
            ),
            _single_query(
                "Error ratio (5xx) by model version",
                "Share of each model version's answers that are 5xx: a canary whose ratio rises "
                "above the stable version's is one to roll back (docs/deploy.md, \"Releasing a "
                'model version").',
                ratio(f"{five_xx}\nor\n0 * {answers}", answers),
                "percentunit",
                legend="{{task}} {{model_version}}",
            ),
            _single_query(
                "Upstream errors",
                "Attempts to reach a task's service that failed: connect, timeout, protocol, "
                "or refused by an open circuit.",
                rate_sum("mtc_gateway_upstream_errors_total", "task, kind", FILTER, RATE),
                "ops",
                legend="{{task}} {{kind}}",
            ),
            _single_query(
                "Requests in flight per task",
                "Requests forwarded and not yet answered, summed over gateway replicas.",
                _gauge("sum by (task)", "mtc_gateway_upstream_in_flight"),
                "short",
            ),
            _single_query(
                "Open circuits",
                "Upstream URLs whose circuit is open or half-open (no regular traffic).",
                _gauge("sum by (task)", "mtc_gateway_upstream_circuit_open"),
                "short",
            ),
            _single_query(
                "Refused requests",
                "Requests refused before forwarding: missing or invalid API key (401), over "
                "the key's quota (429). Only with API keys on.",
                rate_sum("mtc_gateway_rejected_total", "reason", (NAMESPACE,), RATE),
                "reqps",
                legend="{{reason}}",
            ),
            _single_query(
                "Quota checks without Redis",
                "Quota checks counted in memory because Redis failed: quotas are then per "
                "gateway replica instead of shared.",
                f"sum (rate(mtc_gateway_quota_store_errors_total{{{NAMESPACE}}}[{RATE}]))",
                "ops",
                legend="quota store errors",
            ),
            _single_query(
                "Gateway replicas",
                "Gateway replicas scraped (each exports one quota-error counter).",
                _gauge("count", "mtc_gateway_quota_store_errors_total", (NAMESPACE,)),
                "short",
                legend="replicas",
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
            _single_query(
                "Jobs entering each state",
                "Jobs per second that were queued (gateway), started running (worker; again "
                "after a worker was lost), succeeded, failed or were cancelled.",
                rate_sum("mtc_jobs_total", "state", (NAMESPACE,), RATE),
                "ops",
                legend="{{state}}",
            ),
            _single_query(
                "Items predicted per second",
                "Items of jobs answered by the model services, by task.",
                _task_rate("mtc_job_items_total"),
                "ops",
            ),
            Panel(
                "Queue: waiting and running",
                "Jobs waiting in the queue (every worker reads the same queue, hence max) and "
                "jobs running on workers: their sum is what the worker autoscaler follows.",
                (
                    Query(_gauge("max", "mtc_jobs_queue_length", (NAMESPACE,)), "waiting"),
                    Query(_gauge("sum", "mtc_jobs_running", (NAMESPACE,)), "running"),
                ),
                "short",
            ),
            _single_query(
                "Retried calls to model services",
                "Chunks of jobs sent again after a connection failure, 429, 503 or 504 from a "
                "model service, by task.",
                _task_rate("mtc_job_upstream_retries_total"),
                "ops",
            ),
            _single_query(
                "Workers",
                "Worker processes scraped.",
                _gauge("count", "mtc_jobs_running", (NAMESPACE,)),
                "short",
                legend="workers",
            ),
        ),
    )


def all_dashboards() -> tuple[Dashboard, ...]:
    """Every dashboard shipped."""
    services = tuple(
        service_dashboard(kind, kind.image) for kind in model_kinds().values() if kind.image
    )
    return (overview(), *services, gateway(), jobs())


def _query_variable(name: str, query: str, **options: Any) -> dict[str, Any]:
    """A variable whose values a PromQL `label_values` query lists."""
    return {
        "name": name,
        "label": name.capitalize(),
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": name},
        "refresh": 2,
        "sort": 1,
        **options,
        "hide": 0,
    }


def _variables(dashboard: Dashboard) -> list[dict[str, Any]]:
    tasks = list(dashboard.default_tasks)
    current = {"text": tasks, "value": tasks} if tasks else {"text": ["All"], "value": ["$__all"]}
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "hide": 0,
        },
        _query_variable(
            "namespace",
            "label_values(mtc_model_ready, namespace)",
            includeAll=False,
            multi=False,
        ),
        _query_variable(
            "task",
            'label_values(mtc_model_ready{namespace=~"$namespace"}, task)',
            includeAll=True,
            allValue=".+",
            multi=True,
            current=current,
        ),
    ]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": x, "y": y},
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
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["mtc"],
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
        "panels": [
            _panel_json(panel, index + 1, PANEL_WIDTH * (index % 2), PANEL_HEIGHT * (index // 2))
            for index, panel in enumerate(dashboard.panels)
        ],
    }
