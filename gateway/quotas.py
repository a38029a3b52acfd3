"""Per-key request quotas as token buckets, in Redis (shared by every gateway replica) or
in memory (one replica's own count: the fallback while Redis is unset or down).

A bucket holds up to `burst` tokens and gains `rate` tokens per second; each request takes
one, and a request finding less than one is refused with the time until one is there.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from services.core.cache import without_credentials

logger = logging.getLogger(__name__)

REDIS_KEY_PREFIX = "mtc:gateway:quota:v1:"

# Runs atomically in Redis, so replicas taking from one bucket at once never both get the
# last token. Redis's own clock is used: gateway replicas' clocks may disagree.
TAKE_TOKEN_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = burst
  updated = now
end
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait), tostring(tokens)}
"""


@dataclass(frozen=True)
class QuotaDecision:
    """Whether a request may go ahead, and if not, when the next one could."""

    allowed: bool
    retry_after_seconds: float
    remaining: float
    """Tokens left in the bucket after this request."""


class TokenBuckets(Protocol):
    """Takes one token from a named bucket."""

    async def take(self, bucket: str, rate: float, burst: int) -> QuotaDecision:
        """Take a token from `bucket` (created full) refilled at `rate` per second."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryTokenBuckets:
    """Token buckets in this process. The least recently used buckets beyond `max_buckets`
    are dropped (a dropped bucket starts full again)."""

    def __init__(
        self, *, max_buckets: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_buckets = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def take(self, bucket: str, rate: float, burst: int) -> QuotaDecision:
        """Take a token; never waits."""
        now = self._clock()
        tokens, updated = self._buckets.get(bucket, (float(burst), now))
        tokens = min(float(burst), tokens + max(0.0, now - updated) * rate)
        if tokens >= 1:
            decision = QuotaDecision(True, 0.0, tokens - 1)
        else:
            decision = QuotaDecision(False, (1 - tokens) / rate, tokens)
        self._buckets[bucket] = (decision.remaining, now)
        self._buckets.move_to_end(bucket)
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
        return decision

    async def close(self) -> None:
        """Forget every bucket."""
        self._buckets.clear()


class RedisTokenBuckets:
    """Token buckets in Redis, shared by every gateway replica using the same Redis.

    A Redis failure never fails a request: the bucket is taken from in memory instead
    (so each replica enforces the quota on its own) and Redis is left alone for
    `retry_seconds`; `on_error` counts each such check, and one warning is logged per outage
    plus one line when Redis is back.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float,
        retry_seconds: float,
        on_error: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis.asyncio as redis_async
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        self._client: Any = redis_async.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            # One immediate retry replaces a pooled connection that a Redis restart closed;
            # more would make every request wait while Redis is down.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._script = self._client.register_script(TAKE_TOKEN_SCRIPT)
        self._fallback = MemoryTokenBuckets(clock=clock)
        self._redacted_url = without_credentials(url)
        self.retry_seconds = retry_seconds
        self._on_error = on_error
        self._clock = clock
        self._down_until: float | None = None

    @property
    def available(self) -> bool:
        """False while counting in memory after a Redis failure."""
        return self._down_until is None

    async def take(self, bucket: str, rate: float, burst: int) -> QuotaDecision:
        """Take a token in Redis, or in memory while Redis is unavailable."""
        if self._down_until is not None and self._clock() < self._down_until:
            self._on_error()
            return await self._fallback.take(bucket, rate, burst)
        try:
            allowed, wait, remaining = await self._script(
                keys=[REDIS_KEY_PREFIX + bucket], args=[rate, burst]
            )
        except Exception as error:  # noqa: BLE001 - any Redis failure must degrade, not fail
            self._failed(error)
            return await self._fallback.take(bucket, rate, burst)
        if self._down_until is not None:
            logger.warning("redis quota store at %s is back", self._redacted_url)
            self._down_until = None
        return QuotaDecision(bool(int(allowed)), float(wait), float(remaining))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _failed(self, error: Exception) -> None:
        self._on_error()
        if self._down_until is None:
            logger.warning(
                "redis quota store at %s unavailable (%s: %s); each gateway replica counts "
                "quotas on its own until it is back",
                self._redacted_url,
                type(error).__name__,
                error,
            )
        self._down_until = self._clock() + self.retry_seconds
