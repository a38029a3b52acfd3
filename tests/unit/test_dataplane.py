"""Dataplane: per-item cache, de-duplication, timeouts, readiness."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.core.cache import MemoryCache
from services.core.dataplane import DataPlane
from services.core.errors import BatchTooLarge, ModelNotReady, RequestTimedOut
from services.core.metrics import ServiceMetrics
from services.core.model import Prediction
from services.core.settings import ServiceSettings
from tests.support.models import CountingModel


async def make_plane(model: CountingModel, **overrides: object) -> DataPlane[str, Prediction]:
    settings = ServiceSettings(task="test", **overrides)  # type: ignore[arg-type]
    plane = DataPlane(model, MemoryCache(100, 60), ServiceMetrics("test"), settings)
    await plane.start()
    return plane


@pytest.fixture
async def counting() -> AsyncIterator[tuple[CountingModel, DataPlane[str, Prediction]]]:
    model = CountingModel()
    await model.start(Path("."))
    plane = await make_plane(model)
    yield model, plane
    await plane.stop()


async def test_partly_cached_batch_runs_only_new_items(
    counting: tuple[CountingModel, DataPlane[str, Prediction]],
) -> None:
    model, plane = counting
    first = await plane.predict(["a", "bb"])
    assert first.cache_hits == 0
    model.seen.clear()
    second = await plane.predict(["a", "bb", "ccc", "dddd"])
    assert sorted(model.seen) == ["ccc", "dddd"]
    assert second.cache_hits == 2
    assert [p.scores[0].label for p in second.predictions] == ["odd", "even", "odd", "even"]


async def test_duplicates_in_one_request_run_once_and_keep_order(
    counting: tuple[CountingModel, DataPlane[str, Prediction]],
) -> None:
    model, plane = counting
    result = await plane.predict(["x", "yy", "x", "yy", "x"])
    assert sorted(model.seen) == ["x", "yy"]
    assert [p.scores[0].label for p in result.predictions] == ["odd", "even", "odd", "even", "odd"]


async def test_not_ready_model_is_refused() -> None:
    model = CountingModel()
    plane = await make_plane(model)
    with pytest.raises(ModelNotReady):
        await plane.predict(["a"])
    await plane.stop()


async def test_too_many_items_is_refused(
    counting: tuple[CountingModel, DataPlane[str, Prediction]],
) -> None:
    _, plane = counting
    with pytest.raises(BatchTooLarge):
        await plane.predict(["a"] * 1025)


async def test_timeout_withdraws_queued_work() -> None:
    model = CountingModel(delay=0.5)
    await model.start(Path("."))
    plane = await make_plane(model, request_timeout_seconds=0.2, max_batch_size=1)
    with pytest.raises(RequestTimedOut) as caught:
        await plane.predict(["first", "second", "third"])
    assert caught.value.status_code == 504
    assert plane.queue.depth == 0
    await plane.stop()
    # Only the item already running when the timeout hit went through the model.
    assert model.seen == ["first"]
