"""A Redis client for shared state that is worth having but not worth failing a request for.

The prediction cache and the gateway's quotas both keep state in Redis so that replicas
share it, and both must keep answering when Redis does not: each call then takes its
fallback (a miss, an in-memory bucket), and Redis is left alone for `retry_seconds` so a
dead Redis adds no latency. One warning is logged per outage and one line when it is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Required, TypedDict, TypeVar
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RedisOptions(TypedDict, total=False):
    """The keyword arguments of `DegradingRedis`, passed on by the stores built on it."""

    timeout_seconds: Required[float]
    retry_seconds: Required[float]
    on_error: Callable[[], None]
    clock: Callable[[], float]


class DegradingRedis:
    """An asyncio Redis client whose calls fall back instead of raising: the base of each
    store kept in Redis, which names itself with `purpose` and `meanwhile`."""

    purpose: ClassVar[str]
    """Names the store in logs ("redis cache")."""
    meanwhile: ClassVar[str]
    """What happens during an outage ("serving uncached")."""

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float,
        retry_seconds: float,
        on_error: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`on_error` is called for every call that failed or was not tried (a metric)."""
        import redis.asyncio as redis_async
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        self.client: Any = redis_async.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=30,
            # One immediate retry replaces a pooled connection that a Redis restart closed;
            # more would make every request wait while Redis is down.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self.retry_seconds = retry_seconds
        self._redacted_url = without_credentials(url)
        self._on_error = on_error
        self._clock = clock
        self._down_until: float | None = None

    @property
    def available(self) -> bool:
        """False while falling back after a failure."""
        return self._down_until is None

    async def call(
        self,
        operation: Callable[[Any], Awaitable[T]],
        fallback: Callable[[], Awaitable[T]],
    ) -> T:
        """`operation(client)`, or `fallback()` when Redis failed or is being left alone."""
        if self._down_until is not None and self._clock() < self._down_until:
            self._on_error()
            return await fallback()
        try:
            result = await operation(self.client)
        except Exception as exc:  # noqa: BLE001 - any Redis failure must degrade, not fail
            self._failed(exc)
            return await fallback()
        if self._down_until is not None:
            logger.warning("%s at %s is back", self.purpose, self._redacted_url)
            self._down_until = None
        return result

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    def _failed(self, exc: Exception) -> None:
        self._on_error()
        if self._down_until is None:
            logger.warning(
                "%s at %s unavailable (%s: %s); %s until it is back",
                self.purpose,
                self._redacted_url,
                type(exc).__name__,
                exc,
                self.meanwhile,
            )
        self._down_until = self._clock() + self.retry_seconds


def without_credentials(url: str) -> str:
    """The URL with any user, password and query left out: safe to log."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
