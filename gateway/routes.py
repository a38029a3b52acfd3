"""The gateway's own HTTP routes: each task's routes, model listing, health and metrics.

Handlers get the upstream client and the metrics from the lifespan state (see `gateway.app`),
through the `UpstreamsDep` and `MetricsDep` dependencies.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from gateway.metrics import GatewayMetrics
from gateway.schemas import (
    LiveResponse,
    ModelsResponse,
    NotReadyBody,
    ReadyResponse,
)
from gateway.settings import GatewaySettings
from gateway.upstreams import Upstreams
from gateway.work_meter import charge_body
from services.core.errors import (
    MtcError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from services.core.http_errors import error_responses
from services.core.kinds import KindRoute, kind_named, model_kinds

# Sub-paths of `/v1/{task}/` forwarded to the task's service: plain segments only, so a
# `..` or an encoded slash can never reach another path of the service.
FORWARDED_ROUTE = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")


async def get_upstreams(request: Request) -> Upstreams:
    """The upstream client created by the app's lifespan (async: FastAPI runs a plain
    function dependency in a worker thread, a thread hop on every forwarded request)."""
    upstreams = getattr(request.state, "upstreams", None)
    if not isinstance(upstreams, Upstreams):
        raise RuntimeError("the gateway's lifespan has not run, so it has no upstream client")
    return upstreams


async def get_metrics(request: Request) -> GatewayMetrics:
    """The app's metrics, handed to the lifespan state by `create_app`."""
    metrics = getattr(request.state, "metrics", None)
    if not isinstance(metrics, GatewayMetrics):
        raise RuntimeError("the gateway's lifespan has not run, so it has no metrics")
    return metrics


UpstreamsDep = Annotated[Upstreams, Depends(get_upstreams)]
MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]


# Errors a forwarded request can get from the gateway itself, on top of the service's.
GATEWAY_ERRORS: tuple[type[MtcError], ...] = (UpstreamUnavailable, UpstreamTimeout)


def request_body_models() -> tuple[type[BaseModel], ...]:
    """Models referenced by the kinds' JSON request bodies; `gateway.openapi_document` adds
    them to the document's components."""
    return tuple(model for kind in model_kinds().values() for model in kind.request_models)


@dataclass(frozen=True)
class ForwardedRoute:
    """A documented `POST /v1/{task}/...` route of one configured task: what the OpenAPI
    document shows and what `gateway.direct_forwarding` answers."""

    task: str
    path: str
    """The same on the gateway and on the task's service (e.g. `/v1/sentiment/predict`)."""
    route: KindRoute
    body_limit: int
    """The largest body forwarded to the task's service (a larger one gets 413, unread)."""


def route_table(settings: GatewaySettings) -> tuple[ForwardedRoute, ...]:
    """Every documented task route of the configured tasks; `gateway.app` builds it once
    and hands it to the router (OpenAPI) and the forwarding middleware (serving)."""
    return tuple(
        ForwardedRoute(task, f"/v1/{task}/{route.suffix}", route, settings.body_limit_for(task))
        for task in settings.tasks
        for route in kind_named(settings.kind_of(task)).routes
    )


async def _relay(request: Request, upstreams: Upstreams, task: str, path: str) -> Response:
    body = await request.body()
    await charge_body(body, request.headers.get("content-type"))
    answer = await upstreams.forward(
        task,
        path,
        method=request.method,
        body=body,
        content_type=request.headers.get("content-type"),
        query=request.url.query,
    )
    return Response(answer.content, status_code=answer.status_code, headers=answer.headers)


def _forwarding_endpoint(task: str, path: str) -> Callable[..., Awaitable[Response]]:
    async def forward(request: Request, upstreams: UpstreamsDep) -> Response:
        return await _relay(request, upstreams, task, path)

    return forward


def task_router(
    table: Sequence[ForwardedRoute], access_errors: Sequence[type[MtcError]]
) -> APIRouter:
    """The routes of `table`, documented with the schemas of their kind, and every other
    `/v1/{task}/...` route forwarded to the task's service.

    `access_errors` are the errors the API key check adds to every route (none when
    authentication is off).
    """
    router = APIRouter(prefix="/v1")
    for entry in table:
        task, route = entry.task, entry.route
        endpoint = _forwarding_endpoint(task, entry.path)
        endpoint.__doc__ = (
            f"{route.summary} with the `{task}` model. The body is forwarded to the "
            "task's service as sent and its answer relayed, with the gateway's "
            "`x-total-time` header and, while API keys are off, the service's "
            "`x-inference-time` and `x-queue-time`."
        )
        router.add_api_route(
            entry.path.removeprefix("/v1"),
            endpoint,
            methods=["POST"],
            tags=[task],
            summary=f"{route.summary} ({task})",
            operation_id=f"{route.suffix.replace('-', '_')}_{task}",
            response_model=route.response_model,
            responses=error_responses(
                *route.errors, *GATEWAY_ERRORS, *access_errors, validation=True
            ),
            openapi_extra={"requestBody": route.request_body},
        )
    router.add_api_route(
        "/{task}/{route:path}",
        forward_task_route,
        methods=["GET", "POST"],
        include_in_schema=False,
    )
    return router


async def forward_task_route(
    task: Annotated[str, Path(description="Task name, as listed by `GET /v1/models`.")],
    route: str,
    request: Request,
    upstreams: UpstreamsDep,
) -> Response:
    """Any other route of a task's service, forwarded as is (404 `unknown_task` for a task
    the gateway does not know, before the body is read)."""
    upstreams.check_task(task)
    if not FORWARDED_ROUTE.fullmatch(route):
        raise HTTPException(status_code=404)
    return await _relay(request, upstreams, task, f"/v1/{task}/{route}")


models_router = APIRouter(prefix="/v1", tags=["models"])


@models_router.get("/models", response_model=ModelsResponse)
async def list_models(upstreams: UpstreamsDep) -> ModelsResponse:
    """List every task with its kind, its model's name, version, labels and limits, and
    its readiness (ready when at least one replica is)."""
    return ModelsResponse(models=await upstreams.model_statuses())


health_router = APIRouter(prefix="/health", tags=["health"])


@health_router.get("/live", response_model=LiveResponse)
async def live() -> LiveResponse:
    """Answer 200 while the gateway process runs; the services are not consulted."""
    return LiveResponse()


@health_router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": NotReadyBody, "description": "A task's service is not ready."}},
)
async def ready(upstreams: UpstreamsDep) -> ReadyResponse | JSONResponse:
    """Answer 200 when every task has a replica whose model is ready, else 503."""
    statuses = await upstreams.model_statuses()
    tasks = {status.task: status.status for status in statuses}
    waiting = [status for status in statuses if not status.ready]
    if not waiting:
        return ReadyResponse(tasks=tasks)
    listed = ", ".join(f"{status.task} ({status.status})" for status in waiting)
    body = NotReadyBody(detail=f"not ready: {listed}", tasks=tasks)
    return JSONResponse(body.model_dump(), status_code=503)


metrics_router = APIRouter(tags=["metrics"])


@metrics_router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format."}},
)
async def metrics(gateway_metrics: MetricsDep) -> Response:
    """Prometheus metrics of the gateway's own traffic (each service exposes its own)."""
    content, content_type = gateway_metrics.exposition()
    return Response(content=content, media_type=content_type)
