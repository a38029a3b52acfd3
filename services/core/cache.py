"""Per-item prediction cache: an in-process LRU and a Redis implementation.

Keys are `sha256(task, model version, canonical item bytes)`, so a batch can be partly
answered from the cache and a new model version never reuses old predictions. A cache
failure is never a request failure: Redis errors turn into misses.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol, Unpack

from services.core.degrading_redis import DegradingRedis, RedisOptions

KEY_PREFIX = "mtc:pred:v1:"


def prediction_key(task: str, model_version: str, item_bytes: bytes) -> str:
    """Cache key of one item's prediction."""
    digest = hashlib.sha256()
    for part in (task.encode("utf-8"), model_version.encode("utf-8")):
        # Length-prefixed so ("ab", "c") and ("a", "bc") never collide.
        digest.update(len(part).to_bytes(4, "big") + part)
    digest.update(item_bytes)
    return KEY_PREFIX + digest.hexdigest()


class ResponseCache(Protocol):
    """Stores encoded predictions by key. Implementations never raise on backend failure."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values for `keys` in order; None for a miss (or when the backend is down)."""
        ...

    async def set_many(self, entries: dict[str, bytes]) -> None:
        """Store entries with the cache's TTL."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class NullCache:
    """A cache that stores nothing (used when caching is disabled)."""

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Every key misses."""
        return [None] * len(keys)

    async def set_many(self, entries: dict[str, bytes]) -> None:
        """Discard the entries."""

    async def close(self) -> None:
        """Nothing to release."""


class MemoryCache:
    """In-process LRU cache with a time-to-live per entry."""

    def __init__(
        self,
        max_items: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_items = max_items
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values for `keys`; expired entries count as misses and are dropped."""
        now = self._clock()
        values: list[bytes | None] = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is None:
                values.append(None)
            elif entry[0] <= now:
                del self._entries[key]
                values.append(None)
            else:
                self._entries.move_to_end(key)
                values.append(entry[1])
        return values

    async def set_many(self, entries: dict[str, bytes]) -> None:
        """Store entries, evicting the least recently used beyond `max_items`."""
        expires_at = self._clock() + self.ttl_seconds
        for key, value in entries.items():
            self._entries[key] = (expires_at, value)
            self._entries.move_to_end(key)
        while len(self._entries) > self.max_items:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        """Drop every entry."""
        self._entries.clear()


class RedisCache(DegradingRedis):
    """Cache shared by replicas through Redis; while Redis fails, every call is a miss
    (`services.core.degrading_redis`) and `on_error` counts it."""

    purpose = "redis cache"
    meanwhile = "serving uncached"
    _fallback = NullCache()

    def __init__(self, url: str, *, ttl_seconds: int, **options: Unpack[RedisOptions]) -> None:
        super().__init__(url, **options)
        self.ttl_seconds = ttl_seconds

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values for `keys`; all misses while Redis is unavailable."""
        if not keys:
            return []

        async def read(client: Any) -> list[bytes | None]:
            values = await client.mget(list(keys))
            return [value if isinstance(value, bytes) else None for value in values]

        return await self.call(read, lambda: self._fallback.get_many(keys))

    async def set_many(self, entries: dict[str, bytes]) -> None:
        """Store entries with the TTL in one round trip; failures are counted and dropped."""
        if not entries:
            return

        async def write(client: Any) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for key, value in entries.items():
                    pipe.set(key, value, ex=self.ttl_seconds)
                await pipe.execute()

        await self.call(write, lambda: self._fallback.set_many(entries))
