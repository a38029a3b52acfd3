"""The decode threads: a fixed number of decodes at once, a deadline, withdrawn work."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from services.core.decode_workers import DecodeWorkers
from services.core.errors import RequestTimedOut


class Tracker:
    """A decode that takes `seconds` and records how many ran at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.most_at_once = 0
        self.finished = 0
        self._lock = threading.Lock()

    def decode(self) -> str:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
            self.finished += 1
        return "decoded"


async def test_no_more_than_count_decodes_run_at_once() -> None:
    workers = DecodeWorkers(2, wait_seconds=10, setting="MTC_MAX_CONCURRENT_DECODES")
    tracker = Tracker(0.05)
    results = await asyncio.gather(
        *(workers.run(tracker.decode, deadline=workers.deadline()) for _ in range(8))
    )
    assert results == ["decoded"] * 8
    assert tracker.most_at_once == 2


async def test_the_event_loop_keeps_running_while_decodes_do() -> None:
    workers = DecodeWorkers(1, wait_seconds=10, setting="MTC_MAX_CONCURRENT_DECODES")
    decoding = asyncio.ensure_future(workers.run(Tracker(0.3).decode, deadline=workers.deadline()))
    started = time.perf_counter()
    await asyncio.sleep(0.01)
    assert time.perf_counter() - started < 0.2
    assert await decoding == "decoded"


async def test_a_decode_waiting_past_the_deadline_is_a_504_and_never_runs() -> None:
    workers = DecodeWorkers(1, wait_seconds=0.1, setting="MTC_MAX_CONCURRENT_DECODES")
    slow, queued = Tracker(0.5), Tracker(0.0)
    running = asyncio.ensure_future(workers.run(slow.decode, deadline=workers.deadline() + 5))
    await asyncio.sleep(0.02)
    with pytest.raises(RequestTimedOut, match=r"within 0.1 s .*MTC_MAX_CONCURRENT_DECODES"):
        await workers.run(queued.decode, deadline=workers.deadline())
    assert await running == "decoded"
    await asyncio.sleep(0.05)
    assert queued.finished == 0


async def test_a_cancelled_request_withdraws_its_queued_decode() -> None:
    workers = DecodeWorkers(1, wait_seconds=10, setting="MTC_MAX_CONCURRENT_DECODES")
    slow, queued = Tracker(0.3), Tracker(0.0)
    running = asyncio.ensure_future(workers.run(slow.decode, deadline=workers.deadline()))
    await asyncio.sleep(0.02)
    waiting = asyncio.ensure_future(workers.run(queued.decode, deadline=workers.deadline()))
    await asyncio.sleep(0.02)
    waiting.cancel()
    assert await running == "decoded"
    await asyncio.sleep(0.05)
    assert queued.finished == 0
