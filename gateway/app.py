"""`create_app`: the gateway's FastAPI application, built from its settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI

from gateway.metrics import GatewayMetrics
from gateway.routes import health_router, metrics_router, models_router, predict_router
from gateway.settings import GatewaySettings
from gateway.traffic import PredictTraffic
from gateway.upstreams import Upstreams, create_http_client
from services.core.body_limit import BodySizeLimit
from services.core.http_errors import install_error_handlers

DESCRIPTION = """\
One API in front of the mtc model services. `POST /v1/{task}/predict` is forwarded to the
service of the task and its answer relayed unchanged, with the service's `x-inference-time`
and `x-queue-time` headers and the gateway's own `x-total-time` (all in milliseconds).
Errors other than 422 are `{"detail": ..., "error_type": ...}`.
"""


class GatewayState(TypedDict):
    """What the lifespan hands to every request (read by the route dependencies)."""

    upstreams: Upstreams
    metrics: GatewayMetrics


def create_app(settings: GatewaySettings) -> FastAPI:
    """Build the gateway; its HTTP client opens on startup and closes on shutdown."""
    metrics = GatewayMetrics(settings.upstreams)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[GatewayState]:
        async with create_http_client(settings) as client:
            yield {"upstreams": Upstreams(settings, client, metrics), "metrics": metrics}

    app = FastAPI(title="mtc gateway", description=DESCRIPTION, lifespan=lifespan)
    app.include_router(predict_router)
    app.include_router(models_router)
    app.include_router(health_router)
    app.include_router(metrics_router)
    install_error_handlers(app)
    # Added as middleware rather than wrapped around the app: inside the server-error layer,
    # a body that overflows while streaming gets its 413 instead of a 500.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Added last, so it is outermost and also records the 413s of the size limit.
    app.add_middleware(PredictTraffic, metrics=metrics, upstreams=settings.upstreams)
    return app
