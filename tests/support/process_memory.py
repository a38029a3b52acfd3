"""What a running process costs: its resident memory and its peak, read from `/proc`.

Linux only. `peak_since_reset` resets the kernel's high-water mark (`VmHWM`) through
`/proc/<pid>/clear_refs`, which a process may do for processes of its own user; where
that is refused, a thread samples `VmRSS` every few milliseconds instead (a peak shorter
than the interval may then be missed, so the figure is a lower bound).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_INTERVAL_SECONDS = 0.002


def status_kib(pid: int, field_name: str) -> int:
    """A `kB` field of `/proc/<pid>/status` (e.g. `VmRSS`, `VmHWM`), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field_name:
            return int(value.split()[0])
    raise LookupError(f"/proc/{pid}/status has no {field_name}")


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` now, in MiB."""
    return status_kib(pid, "VmRSS") / 1024


def can_reset_peak(pid: int) -> bool:
    """Whether this process may reset `pid`'s high-water mark."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class PeakGrowth:
    """Peak resident memory of each watched process above its level at the start, MiB."""

    baselines: dict[int, float]
    growth: dict[int, float] = field(default_factory=dict)


@contextmanager
def peak_growth(pids: list[int]) -> Iterator[PeakGrowth]:
    """Measure, for each pid, how far its resident memory rose above its starting level
    while the block ran; filled in `PeakGrowth.growth` when the block exits."""
    resettable = {pid: can_reset_peak(pid) for pid in pids}
    result = PeakGrowth({pid: rss_mib(pid) for pid in pids})
    sampled = {pid: result.baselines[pid] for pid in pids if not resettable[pid]}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid in sampled:
                sampled[pid] = max(sampled[pid], rss_mib(pid))
            time.sleep(SAMPLE_INTERVAL_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True) if sampled else None
    if sampler is not None:
        sampler.start()
    try:
        yield result
    finally:
        stop.set()
        if sampler is not None:
            sampler.join(timeout=5)
        for pid in pids:
            peak = status_kib(pid, "VmHWM") / 1024 if resettable[pid] else sampled[pid]
            result.growth[pid] = max(0.0, peak - result.baselines[pid])
