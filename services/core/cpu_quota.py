"""How many CPUs this process may use: the container's CPU limit, not the host's cores.

A pod limited to 2 CPUs on a 64-core node sees 64 cores in `os.cpu_count()`; sizing
worker threads from that oversubscribes the quota and the kernel throttles the pod.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cgroup_cpu_limit(
    cpu_max: Path = CGROUP_V2_CPU_MAX,
    v1_quota: Path = CGROUP_V1_QUOTA,
    v1_period: Path = CGROUP_V1_PERIOD,
) -> float | None:
    """The cgroup CPU quota in CPUs (e.g. 1.5), or None when unlimited or unreadable."""
    try:
        quota, _, period = cpu_max.read_text().strip().partition(" ")
    except OSError:
        try:
            quota, period = v1_quota.read_text().strip(), v1_period.read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit():
        return None
    if int(quota) <= 0 or int(period) <= 0:
        return None
    return int(quota) / int(period)


def available_cpus() -> int:
    """Whole CPUs this process may keep busy: the cgroup limit rounded up, capped by the
    CPUs it may be scheduled on; at least 1."""
    try:
        schedulable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        schedulable = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        schedulable = min(schedulable, math.ceil(limit))
    return max(1, schedulable)
