"""API key authentication and per-key quotas, in front of everything that is not public.

Deny by default: every path needs a key except the public ones below (probes, metrics,
documentation, the model list and the web page), so a route added later is protected
unless it is listed here on purpose.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api_keys import ApiKeyStore
from gateway.errors import API_KEY_CHALLENGE, InvalidApiKey, MissingApiKey, RateLimited
from gateway.metrics import GatewayMetrics
from gateway.quotas import TokenBuckets
from gateway.request_context import current_request
from gateway.settings import GatewaySettings
from gateway.work_meter import WorkMeter
from services.core.api_docs import is_docs_asset
from services.core.http_errors import send_error

PUBLIC_PATHS = frozenset(
    {
        "/health/live",
        "/health/ready",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/v1/models",
        # Open Inference Protocol server metadata and health, as public as `/health/*`.
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/project/health",
        "/project/docs",
        "/project/openapi.json",
        "/ui",
        "/upload",
    }
)
PUBLIC_PREFIXES = ("/ui/",)


def is_public(path: str) -> bool:
    """Whether `path` is answered without an API key."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or is_docs_asset(path)


def presented_api_key(scope: Scope) -> str | None:
    """The key sent as `Authorization: Bearer <key>`, else as `X-API-Key`, else None."""
    bearer: str | None = None
    header_key: str | None = None
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                bearer = credentials.strip()
        elif name == b"x-api-key" and value.strip():
            header_key = value.decode("latin-1").strip()
    return bearer or header_key


@dataclass(frozen=True)
class AccessGuard:
    """Refuse non-public requests without a valid key (401), or over the key's quota
    (429 with `Retry-After`), before anything reads their body. A request let through takes
    one token, and the routes charge the rest of its cost once they have read its body
    (`gateway.work_meter`); the request's key and S3 locations go in its `RequestContext`.

    Keys are compared as hashes in constant time (`ApiKeyStore.identify`) and never logged;
    logs and counters name the key by its name in the keys file.
    """

    app: ASGIApp
    _: KW_ONLY
    keys: ApiKeyStore
    buckets: TokenBuckets
    settings: GatewaySettings
    metrics: GatewayMetrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = presented_api_key(scope)
        if presented is None:
            self.metrics.observe_rejection("missing_api_key")
            await send_error(
                send,
                MissingApiKey(
                    "this route needs an API key: send it as `Authorization: Bearer <key>` "
                    "or `X-API-Key: <key>`",
                    headers=API_KEY_CHALLENGE,
                ),
            )
            return
        key = self.keys.identify(presented)
        if key is None:
            self.metrics.observe_rejection("invalid_api_key")
            await send_error(
                send, InvalidApiKey("the API key is not valid", headers=API_KEY_CHALLENGE)
            )
            return
        context = current_request()
        if context is not None:
            context.api_key_name = key.name
            context.s3_scope = key.s3_scope
        settings = self.settings
        rate = (
            settings.rate_limit_per_second if key.rate_per_second is None else key.rate_per_second
        )
        burst = settings.rate_limit_burst if key.burst is None else key.burst
        if rate > 0:
            decision = await self.buckets.take(key.name, rate, burst)
            if not decision.allowed:
                self.metrics.observe_rejection("rate_limited")
                wait = max(1, math.ceil(decision.retry_after_seconds))
                await send_error(
                    send,
                    RateLimited(
                        f"API key '{key.name}' is over its quota of {rate:g} tokens per "
                        f"second (bursts of {burst}; a request costs a token per "
                        f"{settings.quota_items_per_token} items or "
                        f"{settings.quota_bytes_per_token:,} bytes it sends, at least one); "
                        f"retry in {wait} s",
                        headers={"retry-after": str(wait)},
                    ),
                )
                return
            if context is not None:
                context.work_meter = WorkMeter(
                    self.buckets,
                    key.name,
                    rate,
                    burst,
                    items_per_token=settings.quota_items_per_token,
                    bytes_per_token=settings.quota_bytes_per_token,
                )
        await self.app(scope, receive, send)
