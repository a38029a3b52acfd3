"""A bounded work queue that feeds the model batches of items of similar size.

Padding every item of a batch to its longest member wastes most of the compute when item
sizes vary (text lengths do), so a batch is built around the oldest waiting item (for
fairness) from the waiting items closest to it in cost, and an item joins only while the
batch stays mostly real work rather than padding.

Each worker is a thread that takes its next batch itself as soon as the last one is done,
without a turn of the event loop in between: under load the event loop is busy with HTTP,
and a hand-off through it left the model idle between batches. Only the answers go back
through the loop (futures belong to it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic

from services.core.errors import Overloaded
from services.core.metrics import ServiceMetrics
from services.core.model import ClassifierModel, ItemT, OutputT

logger = logging.getLogger(__name__)

# Smallest share of real (unpadded) work an item may bring a batch down to when it joins.
MIN_BATCH_FILL = 0.8


@dataclass(eq=False)
class PendingItem(Generic[ItemT, OutputT]):
    """One item waiting for (or going through) the model."""

    item: ItemT
    cost: int
    future: asyncio.Future[OutputT]
    enqueued_at: float = field(default_factory=time.perf_counter)
    started_at: float | None = None


class BatchQueue(Generic[ItemT, OutputT]):
    """Runs `model.predict` on batches of queued items in a small pool of worker threads."""

    def __init__(
        self,
        model: ClassifierModel[ItemT, OutputT],
        metrics: ServiceMetrics,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        max_queued_items: int,
        workers: int,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_queued_items = max_queued_items
        self.workers = workers
        self._pending: list[PendingItem[ItemT, OutputT]] = []
        # Futures of items accepted and not yet answered, queued or running: what stop() drains.
        self._outstanding: set[asyncio.Future[OutputT]] = set()
        # Guards `_pending` and `_stopping`; the workers wait on it for work. Re-entrant, so
        # take_batch() may be called with it held or not.
        self._work_ready = threading.Condition(threading.RLock())
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []

    @property
    def depth(self) -> int:
        """Items waiting for a worker."""
        return len(self._pending)

    async def start(self) -> None:
        """Start the worker threads; call from the running event loop (which will receive
        the answers)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"mtc-inference-{index}", daemon=True)
            for index in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    async def stop(self, drain_seconds: float = 0.0) -> None:
        """Stop the workers once accepted work is answered (waiting at most
        `drain_seconds`), then cancel whatever is still waiting."""
        if drain_seconds > 0 and self._outstanding:
            await asyncio.wait(set(self._outstanding), timeout=drain_seconds)
        with self._work_ready:
            self._stopping = True
            for pending in self._pending:
                pending.future.cancel()  # a no-op on a future already done
            self._pending.clear()
            self._set_depth()
            self._work_ready.notify_all()
        # A batch already in the model finishes first; its answers may still be delivered.
        threads, self._threads = self._threads, []
        await asyncio.to_thread(_join_all, threads)

    async def submit(
        self, items: Sequence[ItemT], costs: Sequence[int]
    ) -> list[PendingItem[ItemT, OutputT]]:
        """Queue items, or raise Overloaded (429) when the queue bound would be passed."""
        if self._loop is None:
            raise RuntimeError("BatchQueue.start() was not called")
        if len(self._pending) + len(items) > self.max_queued_items:
            self.metrics.rejected.labels(self.metrics.task, "overloaded").inc()
            raise Overloaded(
                f"{len(self._pending)} items are already waiting for the model and this "
                f"request adds {len(items)} (limit {self.max_queued_items}); retry later",
                headers={"Retry-After": "1"},
            )
        loop = asyncio.get_running_loop()
        queued = [
            PendingItem(item=item, cost=max(1, cost), future=loop.create_future())
            for item, cost in zip(items, costs, strict=True)
        ]
        for pending in queued:
            self._outstanding.add(pending.future)
            pending.future.add_done_callback(self._outstanding.discard)
        with self._work_ready:
            self._pending.extend(queued)
            self._set_depth()
            self._work_ready.notify(len(queued))
        return queued

    def discard(self, items: Sequence[PendingItem[ItemT, OutputT]]) -> None:
        """Drop items whose request gave up, so abandoned work never reaches the model."""
        dropped = {id(item) for item in items}
        with self._work_ready:
            self._pending = [p for p in self._pending if id(p) not in dropped]
            self._set_depth()

    def take_batch(self) -> list[PendingItem[ItemT, OutputT]]:
        """Remove and return the next batch: the oldest item plus its closest-cost peers."""
        with self._work_ready:
            if not self._pending:
                return []
            anchor_cost = self._pending[0].cost
            by_closeness = sorted(
                range(len(self._pending)),
                key=lambda index: (abs(self._pending[index].cost - anchor_cost), index),
            )
            chosen: list[int] = []
            longest = 0
            real = 0
            for index in by_closeness:
                if len(chosen) == self.max_batch_size:
                    break
                cost = self._pending[index].cost
                size = len(chosen) + 1
                padded_longest = max(longest, cost)
                if chosen and padded_longest * size > self.max_batch_tokens:
                    continue
                if chosen and (real + cost) / (padded_longest * size) < MIN_BATCH_FILL:
                    continue
                chosen.append(index)
                longest = padded_longest
                real += cost
            taken = set(chosen)
            batch = [self._pending[index] for index in sorted(chosen)]
            self._pending = [p for i, p in enumerate(self._pending) if i not in taken]
            self._set_depth()
        self.metrics.batch_size.labels(self.metrics.task).observe(len(batch))
        self.metrics.batch_fill.labels(self.metrics.task).observe(real / (longest * len(batch)))
        return batch

    def _set_depth(self) -> None:
        self.metrics.queue_depth.labels(self.metrics.task).set(len(self._pending))

    def _work(self) -> None:
        """One worker thread: take a batch, run the model, hand the answers to the loop."""
        loop = self._loop
        assert loop is not None
        while True:
            with self._work_ready:
                while not self._pending and not self._stopping:
                    self._work_ready.wait()
                if self._stopping:
                    return
                batch = self.take_batch()
            started = time.perf_counter()
            for pending in batch:
                pending.started_at = started
            try:
                results = self.model.predict([p.item for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"model returned {len(results)} predictions for {len(batch)} items"
                    )
            except Exception as exc:
                logger.exception("inference failed for a batch of %d items", len(batch))
                loop.call_soon_threadsafe(_fail, batch, exc)
                continue
            self.metrics.items_inferred.labels(self.metrics.task).inc(len(batch))
            loop.call_soon_threadsafe(_answer, batch, results)


def _answer(batch: Sequence[PendingItem[ItemT, OutputT]], results: Sequence[OutputT]) -> None:
    # On the event loop: a request that timed out or was cancelled has no use for its answer.
    for pending, result in zip(batch, results, strict=True):
        if not pending.future.done():
            pending.future.set_result(result)


def _fail(batch: Sequence[PendingItem[ItemT, OutputT]], error: Exception) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)


def _join_all(threads: Sequence[threading.Thread]) -> None:
    for thread in threads:
        thread.join()
