"""`create_app`: the gateway's FastAPI application, built from its settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from gateway.access_control import AccessGuard
from gateway.api_keys import ApiKeyStore
from gateway.body_budget import BufferedBodyBudget
from gateway.compat_routes import CALL_PREDICT_PATH, compat_paths, compat_routers
from gateway.direct_forwarding import DirectForwarding
from gateway.errors import InvalidApiKey, MissingApiKey, RateLimited
from gateway.job_routes import jobs_router
from gateway.metrics import GatewayMetrics
from gateway.open_inference_routes import open_inference_router
from gateway.openapi_document import install_openapi
from gateway.quotas import MemoryTokenBuckets, RedisTokenBuckets, TokenBuckets
from gateway.request_context import REQUEST_ID_HEADER, RequestIdMiddleware
from gateway.routes import (
    health_router,
    metrics_router,
    models_router,
    route_table,
    task_router,
)
from gateway.settings import GatewaySettings
from gateway.traffic import TaskTraffic
from gateway.upstreams import TIMING_HEADERS, Upstreams, build_replica_sets, create_http_client
from gateway.web_page import web_page_router
from services.core.api import api_app
from services.core.body_limit import BodySizeLimit
from services.core.errors import MtcError
from services.core.http_errors import install_error_handlers
from services.core.metrics_server import MetricsServer
from services.core.open_inference import OpenInferenceErrors
from services.jobs.metrics import GATEWAY_STATES, jobs_counter
from services.jobs.settings import JobsSettings
from services.jobs.submission import JobDesk, create_job_desk

DESCRIPTION = """\
One API in front of the mtc model services. `POST /v1/{task}/predict` is forwarded to a
replica of the task's service and its answer relayed unchanged, with the gateway's own
`x-total-time` and, unless API keys are on, the service's `x-inference-time` and
`x-queue-time` headers (all in milliseconds). Every answer carries an `x-request-id` (the
client's, or a new one).
Errors other than 422 are `{"detail": ..., "error_type": ...}`.
The routes under `/v2` speak the Open Inference Protocol (KServe V2, Triton's binary tensor
data extension included), the model's name being the task; their errors are
`{"error": ...}`.
The compatibility routes keep clients of earlier APIs working; the page at `/ui` tries
every task in a browser.
"""


# Response headers a page on another origin may read (timings, request id, back-off).
EXPOSED_HEADERS = (REQUEST_ID_HEADER, "x-total-time", *TIMING_HEADERS, "retry-after")


logger = logging.getLogger(__name__)


class GatewayState(TypedDict):
    """What the lifespan hands to every request (read by the route dependencies)."""

    upstreams: Upstreams
    metrics: GatewayMetrics
    jobs: JobDesk | None


def create_app(settings: GatewaySettings, jobs_settings: JobsSettings | None = None) -> FastAPI:
    """Build the gateway; its HTTP client opens on startup, and it and the quota store
    close on shutdown. A keys file that cannot be read stops it here, before serving.
    With `jobs_settings`, `/v1/jobs` queues batch jobs; without, it answers 503."""
    metrics = GatewayMetrics(settings.upstreams)
    jobs = (
        create_job_desk(jobs_settings, jobs_counter(metrics.registry, GATEWAY_STATES))
        if jobs_settings is not None
        else None
    )
    # Built here, not per lifespan, so the circuit states are registered as metrics once.
    replica_sets = build_replica_sets(settings)
    metrics.watch_replicas(replica_sets)
    keys = (
        ApiKeyStore(settings.api_keys_file, reload_seconds=settings.api_keys_reload_seconds)
        if settings.api_keys_file is not None
        else None
    )
    if keys is None and settings.authentication is None:
        logger.warning(
            "authentication is off: every caller may use every route%s without a key or "
            "a quota; set MTC_GATEWAY_API_KEYS_FILE to require keys, or "
            "MTC_GATEWAY_AUTHENTICATION=anonymous to serve without keys on purpose",
            ", batch jobs included," if jobs is not None else "",
        )
    buckets = _token_buckets(settings, metrics) if keys is not None else None
    access_errors: tuple[type[MtcError], ...] = (
        (MissingApiKey, InvalidApiKey, RateLimited) if keys is not None else ()
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[GatewayState]:
        metrics_server = None
        if settings.metrics_port is not None:
            metrics_server = MetricsServer(metrics.registry, settings.host, settings.metrics_port)
            metrics_server.start()
        async with create_http_client(settings) as client:
            upstreams = Upstreams(settings, client, metrics, replica_sets)
            try:
                yield {"upstreams": upstreams, "metrics": metrics, "jobs": jobs}
            finally:
                if buckets is not None:
                    await buckets.close()
                if jobs is not None:
                    jobs.close()
                if metrics_server is not None:
                    metrics_server.stop()

    app = api_app("mtc gateway", DESCRIPTION, lifespan)
    # Before the task routes: their catch-all `/v1/{task}/{route}` would take `/v1/jobs/{id}`.
    app.include_router(
        jobs_router(
            access_errors,
            documented=jobs is not None,
            max_inline_items=jobs_settings.max_inline_items if jobs_settings else None,
            max_body_bytes=settings.max_json_body_bytes,
        )
    )
    routes = route_table(settings)
    app.include_router(task_router(routes, access_errors))
    app.include_router(models_router)
    app.include_router(open_inference_router(settings, access_errors))
    served_compat_paths = compat_paths(settings)
    project, compat = compat_routers(settings, access_errors, jobs_configured=jobs is not None)
    app.include_router(project)
    app.include_router(compat)
    app.include_router(health_router)
    if settings.metrics_port is None:
        # Local runs: one port for everything. Deployments give /metrics a port of its own,
        # out of the clients' reach.
        app.include_router(metrics_router)
    if settings.web_page:
        # The emergency-call project's upload page, where its routes are served.
        app.include_router(web_page_router(upload_page=CALL_PREDICT_PATH in served_compat_paths))
    install_openapi(app, project_routes=project.routes, api_keys_required=keys is not None)
    install_error_handlers(app)
    # Middleware added later wraps what was added before. Innermost: the documented task
    # routes, answered without FastAPI's routing layers (the gateway's hot path).
    app.add_middleware(DirectForwarding, routes=routes)
    # Next, the cap on bodies held at once, then the size limit (both inside the
    # server-error layer, so a body that overflows while streaming gets its 429 or 413,
    # not 500; the size limit outside, so a body too large for any request gets 413).
    app.add_middleware(BufferedBodyBudget, max_bytes=settings.max_buffered_bytes)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if keys is not None and buckets is not None:
        # Outside the size limit: an unauthenticated body is refused before it is read.
        app.add_middleware(
            AccessGuard, keys=keys, buckets=buckets, settings=settings, metrics=metrics
        )
    # Records the 401s, 429s and 413s above as task traffic.
    app.add_middleware(TaskTraffic, metrics=metrics, compat_paths=served_compat_paths)
    # Every refusal above, under /v2, in the Open Inference Protocol's error shape.
    app.add_middleware(OpenInferenceErrors)
    if settings.cors_origins:
        # Outside the key check: a browser's preflight never carries the key.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "x-api-key", "content-type", "x-request-id"],
            expose_headers=list(EXPOSED_HEADERS),
        )
    # Outermost: every log line of a request, the access line included, has its id.
    app.add_middleware(RequestIdMiddleware)
    return app


def _token_buckets(settings: GatewaySettings, metrics: GatewayMetrics) -> TokenBuckets:
    if settings.redis_url is None:
        return MemoryTokenBuckets()
    return RedisTokenBuckets(
        settings.redis_url,
        timeout_seconds=settings.redis_timeout_seconds,
        retry_seconds=settings.redis_retry_seconds,
        on_error=metrics.count_quota_store_error,
    )
