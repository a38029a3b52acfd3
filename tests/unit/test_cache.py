"""Prediction cache: keys, in-memory LRU/TTL, and Redis degrading to misses."""

from __future__ import annotations

import json
import logging

import pytest

from services.core.cache import (
    MemoryCache,
    RedisCache,
    prediction_key,
)
from services.core.model import LabelScore, Prediction
from tests.support.processes import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_key_depends_on_task_version_and_item() -> None:
    base = prediction_key("sentiment", "1", b"hello")
    assert base == prediction_key("sentiment", "1", b"hello")
    assert base != prediction_key("disaster", "1", b"hello")
    assert base != prediction_key("sentiment", "2", b"hello")
    assert base != prediction_key("sentiment", "1", b"hello!")
    # Field boundaries are length-prefixed, so shifting bytes between fields changes the key.
    assert prediction_key("ab", "c", b"x") != prediction_key("a", "bc", b"x")


def test_prediction_round_trips() -> None:
    prediction = Prediction([LabelScore("POSITIVE", 0.75), LabelScore("NEGATIVE", 0.25)])
    assert Prediction.from_document(json.loads(json.dumps(prediction.to_document()))) == (
        prediction
    )


async def test_memory_cache_evicts_least_recently_used() -> None:
    cache = MemoryCache(max_items=2, ttl_seconds=60)
    await cache.set_many({"a": b"1", "b": b"2"})
    assert await cache.get_many(["a"]) == [b"1"]  # "a" is now the most recent
    await cache.set_many({"c": b"3"})
    assert await cache.get_many(["a", "b", "c"]) == [b"1", None, b"3"]
    assert len(cache) == 2


async def test_memory_cache_expires_entries() -> None:
    clock = FakeClock()
    cache = MemoryCache(max_items=10, ttl_seconds=5, clock=clock)
    await cache.set_many({"a": b"1"})
    clock.now += 4.9
    assert await cache.get_many(["a"]) == [b"1"]
    clock.now += 0.2
    assert await cache.get_many(["a"]) == [None]
    assert len(cache) == 0


async def test_unreachable_redis_gives_misses_counts_errors_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors: list[int] = []
    clock = FakeClock()
    cache = RedisCache(
        f"redis://127.0.0.1:{free_port()}/0",
        ttl_seconds=60,
        timeout_seconds=0.5,
        retry_seconds=10,
        on_error=lambda: errors.append(1),
        clock=clock,
    )
    with caplog.at_level(logging.WARNING, logger="services.core.degrading_redis"):
        assert await cache.get_many(["a", "b"]) == [None, None]
        await cache.set_many({"a": b"1"})
        assert await cache.get_many(["a"]) == [None]
    assert not cache.available
    assert len(errors) == 3
    outage_logs = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outage_logs) == 1
    await cache.close()
