"""The jobs Redis is sized from the per-key limits: every `maxmemory` the project deploys
it with (kustomize, the chart, the single-host overlay, compose) covers the documented
worst case, `SIZED_FOR_OWNERS` API keys each holding everything its limits allow at once
(docs/jobs.md, "Sizing the job store")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from services.jobs.settings import STORE_BASE_BYTES, JobsSettings

REPO = Path(__file__).resolve().parents[2]
SIZED_FOR_OWNERS = 4
"""API keys at their limits at once that the deployed `maxmemory` must hold."""
PER_OWNER_SETTINGS = (
    "MTC_JOBS_MAX_ACTIVE_JOBS_PER_OWNER",
    "MTC_JOBS_MAX_ACTIVE_ROWS_PER_OWNER",
    "MTC_JOBS_MAX_HELD_BYTES_PER_OWNER",
)
UNITS = {"k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
"""Redis's memory units (redis.conf, "Units"): "256mb" is 256 MiB."""
JOBS_REDIS_MAXMEMORY = re.compile(
    r"maxmemory[\s\",]+(\d+)([kmg]b?)[\s\",-]+maxmemory-policy[\s\",]+noeviction", re.IGNORECASE
)


def redis_bytes(number: str, unit: str) -> int:
    return int(number) * UNITS[unit.lower()]


def deployed_maxmemories() -> dict[str, int]:
    """Every `maxmemory` given to a Redis that never evicts (the jobs Redis), by file."""
    found: dict[str, int] = {}
    candidates = [
        *REPO.glob("base/**/*"),
        *REPO.glob("overlays/**/*"),
        *REPO.glob("components/**/*"),
        REPO / "compose.yaml",
    ]
    for path in candidates:
        if not path.is_file():
            continue
        for match in JOBS_REDIS_MAXMEMORY.finditer(path.read_text(encoding="utf-8")):
            found[str(path.relative_to(REPO))] = redis_bytes(*match.groups())
    values = yaml.safe_load((REPO / "charts/mtc/values.yaml").read_text(encoding="utf-8"))
    chart = re.fullmatch(r"(\d+)([kmg]b?)", str(values["jobsRedis"]["maxmemory"]))
    assert chart is not None
    found["charts/mtc/values.yaml"] = redis_bytes(*chart.groups())
    return found


def deployed_limits() -> dict[str, dict[str, str]]:
    """The per-key limits the deployments set, by where they are set."""
    env_file = REPO / "base/settings/jobs.env"
    kustomize = dict(
        line.split("=", 1)
        for line in env_file.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    values = yaml.safe_load((REPO / "charts/mtc/values.yaml").read_text(encoding="utf-8"))
    return {"base/settings/jobs.env": kustomize, "chart": values["worker"]["config"]}


def test_the_jobs_redis_is_deployed_with_a_maxmemory_everywhere() -> None:
    found = deployed_maxmemories()

    assert any(where.startswith("base/") for where in found), found
    assert {"charts/mtc/values.yaml", "compose.yaml"} <= set(found)
    assert len(set(found.values())) == 1, found


@pytest.mark.parametrize("source", ["base/settings/jobs.env", "chart"])
def test_every_deployed_maxmemory_covers_the_documented_worst_case(source: str) -> None:
    limits = deployed_limits()[source]
    settings = JobsSettings.model_validate(
        {
            "broker_url": "redis://jobs-redis:6379/0",
            "upstreams": {"sentiment": "http://sentiment"},
            **{name.removeprefix("MTC_JOBS_").lower(): limits[name] for name in PER_OWNER_SETTINGS},
        }
    )
    needed = settings.store_bytes_for_owners(SIZED_FOR_OWNERS)

    for where, maxmemory in deployed_maxmemories().items():
        assert maxmemory >= needed, (where, maxmemory, needed)


def test_the_chart_and_kustomize_set_the_same_limits() -> None:
    limits = deployed_limits()
    kustomize, chart = limits["base/settings/jobs.env"], limits["chart"]

    for name in (*PER_OWNER_SETTINGS, "MTC_JOBS_RESULT_RETENTION_SECONDS"):
        assert kustomize[name] == chart[name], name


def test_the_worst_case_grows_with_each_limit() -> None:
    base = {"broker_url": "redis://r:6379/0", "upstreams": {"sentiment": "http://s"}}
    settings = JobsSettings.model_validate(base)
    one_key = settings.store_bytes_for_owners(1) - STORE_BASE_BYTES

    for name in (
        "max_active_jobs_per_owner",
        "max_active_rows_per_owner",
        "max_held_bytes_per_owner",
    ):
        doubled = JobsSettings.model_validate({**base, name: 2 * getattr(settings, name)})
        assert doubled.store_bytes_for_owners(1) - STORE_BASE_BYTES > one_key, name
    assert settings.store_bytes_for_owners(2) - STORE_BASE_BYTES == 2 * one_key


def test_the_sizing_is_documented_with_the_same_number_of_keys() -> None:
    page = (REPO / "docs/jobs.md").read_text(encoding="utf-8")

    assert "## Sizing the job store" in page
    assert f"{SIZED_FOR_OWNERS} API keys" in page
