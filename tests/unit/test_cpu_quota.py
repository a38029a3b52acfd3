"""Worker and thread defaults follow the container's CPU limit, not the host's cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core import cpu_quota
from services.core.cpu_quota import available_cpus, cgroup_cpu_limit
from services.core.settings import ServiceSettings
from services.text.settings import TextSettings


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("content", "expected"),
    [("150000 100000\n", 1.5), ("200000 100000", 2.0), ("max 100000\n", None), ("x y", None)],
)
def test_cgroup_v2_limit(tmp_path: Path, content: str, expected: float | None) -> None:
    cpu_max = write(tmp_path / "cpu.max", content)
    missing = tmp_path / "missing"
    assert cgroup_cpu_limit(cpu_max, missing, missing) == expected


def test_cgroup_v1_limit_when_there_is_no_v2_file(tmp_path: Path) -> None:
    quota = write(tmp_path / "quota", "50000\n")
    period = write(tmp_path / "period", "100000\n")
    assert cgroup_cpu_limit(tmp_path / "missing", quota, period) == 0.5
    assert cgroup_cpu_limit(tmp_path / "missing", write(tmp_path / "q", "-1"), period) is None
    missing = tmp_path / "missing"
    assert cgroup_cpu_limit(missing, missing, missing) is None


def test_available_cpus_rounds_the_limit_up_and_never_exceeds_the_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cpu_quota.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(cpu_quota, "cgroup_cpu_limit", lambda: 1.5)
    assert available_cpus() == 2
    monkeypatch.setattr(cpu_quota, "cgroup_cpu_limit", lambda: 0.2)
    assert available_cpus() == 1
    monkeypatch.setattr(cpu_quota, "cgroup_cpu_limit", lambda: 16.0)
    assert available_cpus() == 4
    monkeypatch.setattr(cpu_quota, "cgroup_cpu_limit", lambda: None)
    assert available_cpus() == 4


def test_text_settings_default_to_one_single_threaded_worker_per_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cpu_quota.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setattr(cpu_quota, "cgroup_cpu_limit", lambda: 2.0)
    text = TextSettings()
    assert text.inference_workers == 2
    assert text.threads_per_worker == 1
    # Image and audio services keep one worker, which then gets every CPU.
    assert ServiceSettings().inference_workers == 1
    assert ServiceSettings().threads_per_worker == 2
    assert ServiceSettings(torch_threads=3).threads_per_worker == 3
