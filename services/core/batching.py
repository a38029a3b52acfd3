"""A bounded work queue that feeds the model batches of items of similar size.

Padding every item of a batch to its longest member wastes most of the compute when item
sizes vary (text lengths do), so a batch is built around the oldest waiting item (for
fairness) from the waiting items closest to it in cost, and an item joins only while the
batch stays mostly real work rather than padding.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic

from services.core.errors import Overloaded
from services.core.metrics import ServiceMetrics
from services.core.model import ClassifierModel, ItemT, LabelScore

logger = logging.getLogger(__name__)

# Smallest share of real (unpadded) work an item may bring a batch down to when it joins.
MIN_BATCH_FILL = 0.8


@dataclass(eq=False)
class PendingItem(Generic[ItemT]):
    """One item waiting for (or going through) the model."""

    item: ItemT
    cost: int
    future: asyncio.Future[list[LabelScore]]
    enqueued_at: float = field(default_factory=time.perf_counter)
    started_at: float | None = None


class BatchQueue(Generic[ItemT]):
    """Runs `model.predict` on batches of queued items in a small pool of worker threads."""

    def __init__(
        self,
        model: ClassifierModel[ItemT],
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
        self._pending: list[PendingItem[ItemT]] = []
        # Futures of items accepted and not yet answered, queued or running: what stop() drains.
        self._outstanding: set[asyncio.Future[list[LabelScore]]] = set()
        self._wakeup: asyncio.Condition | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None

    @property
    def depth(self) -> int:
        """Items waiting for a worker."""
        return len(self._pending)

    async def start(self) -> None:
        """Start the worker loops; call from the running event loop."""
        self._wakeup = asyncio.Condition()
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="mtc-inference"
        )
        self._tasks = [
            asyncio.create_task(self._work(), name=f"mtc-batch-worker-{index}")
            for index in range(self.workers)
        ]

    async def stop(self, drain_seconds: float = 0.0) -> None:
        """Stop the workers once accepted work is answered (waiting at most
        `drain_seconds`), then cancel whatever is still waiting."""
        if drain_seconds > 0 and self._outstanding:
            await asyncio.wait(set(self._outstanding), timeout=drain_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for pending in self._pending:
            if not pending.future.done():
                pending.future.cancel()
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def submit(
        self, items: Sequence[ItemT], costs: Sequence[int]
    ) -> list[PendingItem[ItemT]]:
        """Queue items, or raise Overloaded (429) when the queue bound would be passed."""
        if self._wakeup is None:
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
        async with self._wakeup:
            self._pending.extend(queued)
            self.metrics.queue_depth.labels(self.metrics.task).set(len(self._pending))
            self._wakeup.notify(len(queued))
        return queued

    def discard(self, items: Sequence[PendingItem[ItemT]]) -> None:
        """Drop items whose request gave up, so abandoned work never reaches the model."""
        dropped = {id(item) for item in items}
        self._pending = [p for p in self._pending if id(p) not in dropped]
        self.metrics.queue_depth.labels(self.metrics.task).set(len(self._pending))

    def take_batch(self) -> list[PendingItem[ItemT]]:
        """Remove and return the next batch: the oldest item plus its closest-cost peers."""
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
        self.metrics.queue_depth.labels(self.metrics.task).set(len(self._pending))
        self.metrics.batch_size.labels(self.metrics.task).observe(len(batch))
        self.metrics.batch_fill.labels(self.metrics.task).observe(real / (longest * len(batch)))
        return batch

    async def _work(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            async with self._wakeup:
                await self._wakeup.wait_for(lambda: bool(self._pending))
                batch = self.take_batch()
            started = time.perf_counter()
            for pending in batch:
                pending.started_at = started
            try:
                results = await loop.run_in_executor(
                    self._executor, self.model.predict, [p.item for p in batch]
                )
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"model returned {len(results)} predictions for {len(batch)} items"
                    )
            except asyncio.CancelledError:
                for pending in batch:
                    pending.future.cancel()
                raise
            except Exception as exc:
                logger.exception("inference failed for a batch of %d items", len(batch))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            self.metrics.items_inferred.labels(self.metrics.task).inc(len(batch))
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)
