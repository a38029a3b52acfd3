"""PromQL fragments shared by dashboards and alerts, so both read the same series."""

from __future__ import annotations

# Dashboards filter on these Grafana variables; alerts use fixed windows instead.
NAMESPACE = 'namespace=~"$namespace"'
TASK = 'task=~"$task"'
RATE = "$__rate_interval"


def selector(*matchers: str) -> str:
    """`{a, b}` from label matchers, skipping empty ones; nothing when none is left."""
    kept = [matcher for matcher in matchers if matcher]
    return "{" + ", ".join(kept) + "}" if kept else ""


def rate_sum(metric: str, by: str, matchers: tuple[str, ...], window: str) -> str:
    """`sum by (labels) (rate(metric{matchers}[window]))`."""
    return f"sum by ({by}) (rate({metric}{selector(*matchers)}[{window}]))"


def ratio(numerator: str, denominator: str) -> str:
    """`numerator / denominator`, both parenthesised."""
    return f"({numerator})\n/\n({denominator})"


def quantile(q: float, histogram: str, by: str, matchers: tuple[str, ...], window: str) -> str:
    """The q-quantile of a histogram's rate over the window, per `by` labels."""
    buckets = rate_sum(f"{histogram}_bucket", f"{by}, le", matchers, window)
    return f"histogram_quantile({q}, {buckets})"
