"""Hypothesis settings shared by the schemathesis suites."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def derandomised(max_examples: int) -> settings:
    """`max_examples` cases per operation, the same ones on every run (a CI failure
    reproduces locally), with no deadline, no example database and no health checks."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
