"""Per-item prediction cache: an in-process LRU and a Redis implementation.

Keys are `sha256(task, model version, canonical item bytes)`, so a batch can be partly
answered from the cache and a new model version never reuses old predictions. A cache
failure is never a request failure: Redis errors turn into misses.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger(__name__)

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


class RedisCache:
    """Cache shared by replicas through Redis.

    When Redis fails, calls return misses for `retry_seconds` without touching the network
    (so a dead Redis adds no latency), `on_error` is called for each failed or skipped call
    (a metric), and one warning is logged per outage plus one line when it recovers.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_seconds: int,
        timeout_seconds: float,
        retry_seconds: float,
        on_error: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis.asyncio as redis_async
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        self._client = redis_async.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=30,
            # One immediate retry replaces a pooled connection that a Redis restart closed.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._redacted_url = without_credentials(url)
        self.ttl_seconds = ttl_seconds
        self.retry_seconds = retry_seconds
        self._on_error = on_error
        self._clock = clock
        self._down_until: float | None = None

    @property
    def available(self) -> bool:
        """False while serving uncached after a failure."""
        return self._down_until is None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values for `keys`; all misses while Redis is unavailable."""
        if not keys or self._skipping():
            return [None] * len(keys)
        try:
            values = await self._client.mget(list(keys))
        except Exception as exc:  # noqa: BLE001 - any Redis failure must degrade, not fail
            self._failed(exc)
            return [None] * len(keys)
        self._succeeded()
        return [value if isinstance(value, bytes) else None for value in values]

    async def set_many(self, entries: dict[str, bytes]) -> None:
        """Store entries with the TTL in one round trip; failures are counted and dropped."""
        if not entries or self._skipping():
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in entries.items():
                    pipe.set(key, value, ex=self.ttl_seconds)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - any Redis failure must degrade, not fail
            self._failed(exc)
            return
        self._succeeded()

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _skipping(self) -> bool:
        if self._down_until is None:
            return False
        if self._clock() < self._down_until:
            self._on_error()
            return True
        return False

    def _failed(self, exc: Exception) -> None:
        self._on_error()
        if self._down_until is None:
            logger.warning(
                "redis cache at %s unavailable (%s: %s); serving uncached until it is back",
                self._redacted_url,
                type(exc).__name__,
                exc,
            )
        self._down_until = self._clock() + self.retry_seconds

    def _succeeded(self) -> None:
        if self._down_until is not None:
            logger.warning("redis cache at %s is back", self._redacted_url)
            self._down_until = None


def without_credentials(url: str) -> str:
    """The URL with any user, password and query left out: safe to log."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
