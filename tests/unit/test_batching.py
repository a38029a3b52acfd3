"""Batch formation: similar sizes together, bounded queue, withdrawn work."""

from __future__ import annotations

import asyncio

import pytest

from services.core.batching import BatchQueue
from services.core.errors import Overloaded
from services.core.metrics import ServiceMetrics
from services.core.model import Prediction
from tests.support.models import CountingModel


def make_queue(
    *, max_batch_size: int = 8, max_batch_tokens: int = 10_000, max_queued_items: int = 100
) -> BatchQueue[str, Prediction]:
    return BatchQueue(
        CountingModel(),
        ServiceMetrics("test"),
        max_batch_size=max_batch_size,
        max_batch_tokens=max_batch_tokens,
        max_queued_items=max_queued_items,
        workers=1,
    )


async def started(queue: BatchQueue[str, Prediction]) -> BatchQueue[str, Prediction]:
    # Accept items without starting the workers: they would consume items before
    # take_batch() is observed.
    queue._loop = asyncio.get_running_loop()
    return queue


async def test_batch_groups_items_of_similar_cost() -> None:
    queue = await started(make_queue())
    costs = [10, 100, 11, 98, 12, 101]
    await queue.submit([f"item{c}" for c in costs], costs)
    first = queue.take_batch()
    assert sorted(p.cost for p in first) == [10, 11, 12]
    second = queue.take_batch()
    assert sorted(p.cost for p in second) == [98, 100, 101]
    assert queue.depth == 0


async def test_oldest_item_anchors_the_batch() -> None:
    queue = await started(make_queue())
    costs = [50, 10, 11, 52]
    await queue.submit([str(c) for c in costs], costs)
    assert sorted(p.cost for p in queue.take_batch()) == [50, 52]


async def test_batch_respects_size_and_token_budget() -> None:
    queue = await started(make_queue(max_batch_size=3, max_batch_tokens=40))
    await queue.submit([str(i) for i in range(10)], [10] * 10)
    assert len(queue.take_batch()) == 3
    tight = await started(make_queue(max_batch_size=8, max_batch_tokens=25))
    await tight.submit([str(i) for i in range(4)], [10] * 4)
    assert len(tight.take_batch()) == 2


async def test_full_queue_refuses_with_overloaded() -> None:
    queue = await started(make_queue(max_queued_items=5))
    await queue.submit(["a", "b", "c"], [1, 1, 1])
    with pytest.raises(Overloaded) as caught:
        await queue.submit(["d", "e", "f"], [1, 1, 1])
    assert caught.value.status_code == 429
    assert caught.value.headers["Retry-After"] == "1"
    assert queue.depth == 3


async def test_discarded_items_never_reach_the_model() -> None:
    model = CountingModel()
    queue = BatchQueue(
        model,
        ServiceMetrics("test"),
        max_batch_size=8,
        max_batch_tokens=10_000,
        max_queued_items=100,
        workers=1,
    )
    queue._loop = asyncio.get_running_loop()
    abandoned = await queue.submit(["abandoned"], [9])
    queue.discard(abandoned)
    await queue.start()
    kept = await queue.submit(["kept"], [4])
    assert await asyncio.wait_for(kept[0].future, 10) is not None
    await queue.stop()
    assert model.seen == ["kept"]
