"""Per-key quotas as token buckets, in Redis (shared by every gateway replica) or in
memory (one replica's own count: the fallback while Redis is unset or down).

A bucket holds up to `burst` tokens and gains `rate` tokens per second. A request takes one
token on arrival, and is refused with the time until one is there when the bucket holds
less; once its body is read, the rest of its cost (by the work it asks for, see
`gateway.work_meter`) is charged, which may leave the bucket below zero: the key's next
requests then wait while it refills. So a key's work per second stays within its rate
whatever the size of its requests, and a request larger than the burst can still be made.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, Unpack

from services.core.degrading_redis import DegradingRedis, RedisOptions

REDIS_KEY_PREFIX = "mtc:gateway:quota:v1:"

# Runs atomically in Redis, so replicas taking from one bucket at once never both get the
# last token. Redis's own clock is used: gateway replicas' clocks may disagree.
# The bucket's state refilled to now (Redis's clock), and how it is written back: shared by
# both scripts below.
_READ_BUCKET = """
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
"""
_WRITE_BUCKET = """
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
"""

TAKE_TOKEN_SCRIPT = (
    _READ_BUCKET
    + """
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
"""
    + _WRITE_BUCKET
    + """return {allowed, tostring(wait), tostring(tokens)}
"""
)

# Takes ARGV[3] tokens whatever the bucket holds (the work was done): it may go below zero.
# Kept until refilled, so a debt outlives the bucket's usual expiry.
CHARGE_SCRIPT = (
    _READ_BUCKET
    + """
tokens = tokens - tonumber(ARGV[3])
"""
    + _WRITE_BUCKET
    + """return tostring(tokens)
"""
)


@dataclass(frozen=True)
class QuotaDecision:
    """Whether a request may go ahead, and if not, when the next one could."""

    allowed: bool
    retry_after_seconds: float
    remaining: float
    """Tokens left in the bucket after this request."""


class TokenBuckets(Protocol):
    """Takes one token from a named bucket, or charges it the cost of work done."""

    async def take(self, bucket: str, rate: float, burst: int) -> QuotaDecision:
        """Take a token from `bucket` (created full) refilled at `rate` per second."""
        ...

    async def charge(self, bucket: str, rate: float, burst: int, tokens: float) -> float:
        """Take `tokens` from `bucket` even below zero; the tokens left."""
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
        self._store(bucket, decision.remaining, now)
        return decision

    async def charge(self, bucket: str, rate: float, burst: int, tokens: float) -> float:
        """Take `tokens` even below zero; never waits."""
        now = self._clock()
        held, updated = self._buckets.get(bucket, (float(burst), now))
        remaining = min(float(burst), held + max(0.0, now - updated) * rate) - tokens
        self._store(bucket, remaining, now)
        return remaining

    def _store(self, bucket: str, tokens: float, now: float) -> None:
        self._buckets[bucket] = (tokens, now)
        self._buckets.move_to_end(bucket)
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)

    async def close(self) -> None:
        """Forget every bucket."""
        self._buckets.clear()


class RedisTokenBuckets(DegradingRedis):
    """Token buckets in Redis, shared by every gateway replica using the same Redis.

    A Redis failure never fails a request: the bucket is taken from in memory instead
    (so each replica enforces the quota on its own; `services.core.degrading_redis`), and
    `on_error` counts each such check.
    """

    purpose = "redis quota store"
    meanwhile = "each gateway replica counts quotas on its own"

    def __init__(self, url: str, **options: Unpack[RedisOptions]) -> None:
        super().__init__(url, **options)
        self._script = self.client.register_script(TAKE_TOKEN_SCRIPT)
        self._charge_script = self.client.register_script(CHARGE_SCRIPT)
        self._fallback = MemoryTokenBuckets(clock=self._clock)

    async def take(self, bucket: str, rate: float, burst: int) -> QuotaDecision:
        """Take a token in Redis, or in memory while Redis is unavailable."""

        async def in_redis(client: Any) -> QuotaDecision:
            allowed, wait, remaining = await self._script(
                keys=[REDIS_KEY_PREFIX + bucket], args=[rate, burst]
            )
            return QuotaDecision(bool(int(allowed)), float(wait), float(remaining))

        return await self.call(in_redis, lambda: self._fallback.take(bucket, rate, burst))

    async def charge(self, bucket: str, rate: float, burst: int, tokens: float) -> float:
        """Charge in Redis, or in memory while Redis is unavailable."""

        async def in_redis(client: Any) -> float:
            remaining = await self._charge_script(
                keys=[REDIS_KEY_PREFIX + bucket], args=[rate, burst, tokens]
            )
            return float(remaining)

        return await self.call(in_redis, lambda: self._fallback.charge(bucket, rate, burst, tokens))
