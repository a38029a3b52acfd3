"""Prometheus alerting rules of mtc as data.

Each alert keeps its `signal` (the measured quantity, without the threshold) beside its
`expr`, so tests can check that the signal has data in a Prometheus that scraped the stack
even while the alert rightly does not fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from deploy.observability.promql import quantile, rate_sum, ratio

WINDOW = "5m"
BY = "namespace, task"
# Latency objectives of the gateway's p99, in seconds: interactive tasks and audio clips.
INTERACTIVE_P99_SLO_SECONDS = 1.0
AUDIO_P99_SLO_SECONDS = 15.0
ERROR_RATIO_THRESHOLD = 0.05
# Seconds without a successful read of the job queue by any worker (they read every 5 s).
JOBS_QUEUE_UNREAD_SECONDS = 120.0

Severity = Literal["warning", "critical"]


@dataclass(frozen=True)
class Alert:
    """One alerting rule."""

    name: str
    signal: str
    expr: str
    for_: str
    severity: Severity
    summary: str
    description: str


# Tasks the gateway routes: its circuit gauge has a series per task and replica from its start,
# whether or not any model pod runs. Pods stuck in Init, ImagePullBackOff or CrashLoopBackOff
# export no `mtc_model_ready` at all, and `sum(...) == 0` over nothing is nothing.
ROUTED_TASKS = "group by (namespace, task) (mtc_gateway_upstream_circuit_open)"
# Tasks the gateway routes that no pod reports `mtc_model_ready` for, valued 0 (ready
# replicas), labelled by namespace and task.
UNREPORTED_TASKS = f"({ROUTED_TASKS} unless on (namespace, task) mtc_model_ready) * 0"


def all_alerts() -> tuple[Alert, ...]:
    """Every alert shipped."""
    errors = rate_sum("mtc_gateway_requests_total", BY, ('status_class="5xx"',), WINDOW)
    error_ratio = ratio(errors, rate_sum("mtc_gateway_requests_total", BY, (), WINDOW))

    def p99(matcher: str) -> str:
        return quantile(0.99, "mtc_gateway_request_duration_seconds", BY, (matcher,), WINDOW)

    not_audio, audio_only = 'task!="audio"', 'task="audio"'
    interactive = f"({p99(not_audio)} > {INTERACTIVE_P99_SLO_SECONDS})"
    audio = f"({p99(audio_only)} > {AUDIO_P99_SLO_SECONDS})"
    pods_ready = "sum by (namespace, task, pod) (mtc_model_ready)"
    tasks_ready = f"sum by ({BY}) (mtc_model_ready)"
    cache_errors = rate_sum("mtc_cache_errors_total", BY, (), WINDOW)
    # The workers read the queue's length every few seconds; the freshest read of any worker
    # being this old means none of them reaches the broker.
    queue_read_age = "min by (namespace) (mtc_jobs_queue_length_age_seconds)"
    return (
        Alert(
            name="MtcHighErrorRatio",
            signal=error_ratio,
            expr=f"{error_ratio}\n> {ERROR_RATIO_THRESHOLD}",
            for_="5m",
            severity="critical",
            summary="{{ $labels.task }}: over 5 % of requests fail with 5xx",
            description=(
                "{{ $value | humanizePercentage }} of the {{ $labels.task }} requests in "
                "{{ $labels.namespace }} answered 5xx at the gateway over 5 minutes: the model "
                "is not ready, its service is unreachable, or it times out."
            ),
        ),
        Alert(
            name="MtcLatencyP99AboveSLO",
            signal=p99(""),
            expr=f"{interactive}\nor\n{audio}",
            for_="10m",
            severity="warning",
            summary="{{ $labels.task }}: p99 latency above its objective",
            description=(
                "The 99th percentile of {{ $labels.task }} requests at the gateway in "
                "{{ $labels.namespace }} is {{ $value | humanizeDuration }} (objective: "
                f"{INTERACTIVE_P99_SLO_SECONDS:g} s, audio {AUDIO_P99_SLO_SECONDS:g} s). Check "
                "queue depth and replicas: the autoscaler may be at its maximum."
            ),
        ),
        Alert(
            name="MtcModelNotReady",
            signal=pods_ready,
            expr=f"{pods_ready} == 0\nor\n{UNREPORTED_TASKS}",
            # Longer than the startup probe allows (audio: 10 minutes) so a slow start is not paged.
            for_="15m",
            severity="warning",
            summary=(
                "{{ with $labels.pod }}{{ . }}: model for {{ $labels.task }} not loaded"
                "{{ else }}{{ $labels.task }}: no pod reports its model{{ end }}"
            ),
            description=(
                "{{ with $labels.pod }}Pod {{ . }} in {{ $labels.namespace }} has not loaded its "
                "{{ $labels.task }} model for 15 minutes; its /health/ready answer gives the "
                "reason (download, checksum or load failure).{{ else }}No pod of "
                "{{ $labels.task }} in {{ $labels.namespace }} has reported its model for 15 "
                "minutes although the gateway routes the task: the pods are stuck before the "
                "server starts (Init, ImagePullBackOff, CrashLoopBackOff); kubectl describe pod "
                "shows why.{{ end }}"
            ),
        ),
        Alert(
            name="MtcTaskUnavailable",
            signal=tasks_ready,
            expr=f"{tasks_ready} == 0\nor\n{UNREPORTED_TASKS}",
            for_="5m",
            severity="critical",
            summary="{{ $labels.task }}: no replica has its model loaded",
            description=(
                "No replica of {{ $labels.task }} in {{ $labels.namespace }} is ready: every "
                "request for the task answers 503."
            ),
        ),
        Alert(
            name="MtcRedisDown",
            signal=cache_errors,
            expr=f"{cache_errors} > 0",
            for_="2m",
            severity="warning",
            summary="{{ $labels.task }}: prediction cache (Redis) unreachable",
            description=(
                "The {{ $labels.task }} service in {{ $labels.namespace }} cannot use Redis: "
                "requests are served uncached (slower, more CPU) until it is back."
            ),
        ),
        Alert(
            name="MtcJobsQueueUnreadable",
            signal=queue_read_age,
            expr=f"{queue_read_age} > {JOBS_QUEUE_UNREAD_SECONDS:g}",
            for_="5m",
            severity="warning",
            summary="{{ $labels.namespace }}: batch workers cannot reach the job queue",
            description=(
                "No batch worker in {{ $labels.namespace }} has read the job queue for "
                "{{ $value | humanizeDuration }}: the jobs broker (Redis or RabbitMQ) is "
                "unreachable. Jobs wait, and the workers' autoscaler holds its replica count."
            ),
        ),
    )


def rule_groups() -> dict[str, Any]:
    """The rules in Prometheus's rule-file layout (`groups:`)."""
    return {
        "groups": [
            {
                "name": "mtc",
                "rules": [
                    {
                        "alert": alert.name,
                        "expr": alert.expr,
                        "for": alert.for_,
                        "labels": {"severity": alert.severity},
                        "annotations": {
                            "summary": alert.summary,
                            "description": alert.description,
                        },
                    }
                    for alert in all_alerts()
                ],
            }
        ]
    }
