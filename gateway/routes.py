"""The gateway's HTTP routes: predict, model listing, health probes and metrics.

Handlers get the upstream client and the metrics from the lifespan state (see `gateway.app`),
through the `UpstreamsDep` and `MetricsDep` dependencies.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from gateway.metrics import GatewayMetrics
from gateway.schemas import (
    LiveResponse,
    ModelsResponse,
    NotReadyBody,
    ReadyResponse,
    TextPredictRequest,
    TextPredictResponse,
)
from gateway.upstreams import Upstreams
from services.core.contracts import MULTIPART_IMAGES_SCHEMA, PoseJsonRequest, PosePredictResponse
from services.core.errors import (
    BatchTooLarge,
    BodyTooLarge,
    InvalidInput,
    ItemTooLarge,
    ModelNotReady,
    Overloaded,
    PayloadTooLarge,
    RequestTimedOut,
    UnknownTask,
    UnsupportedMediaType,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from services.core.http_errors import error_responses

# Headers of a service's predict answer that clients read (timings for load tests, back-off).
RELAYED_HEADERS = ("content-type", "x-inference-time", "x-queue-time", "retry-after")


def get_upstreams(request: Request) -> Upstreams:
    """The upstream client created by the app's lifespan."""
    upstreams = getattr(request.state, "upstreams", None)
    if not isinstance(upstreams, Upstreams):
        raise RuntimeError("the gateway's lifespan has not run, so it has no upstream client")
    return upstreams


def get_metrics(request: Request) -> GatewayMetrics:
    """The app's metrics, handed to the lifespan state by `create_app`."""
    metrics = getattr(request.state, "metrics", None)
    if not isinstance(metrics, GatewayMetrics):
        raise RuntimeError("the gateway's lifespan has not run, so it has no metrics")
    return metrics


UpstreamsDep = Annotated[Upstreams, Depends(get_upstreams)]
MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]


def known_task(
    task: Annotated[str, Path(description="Task name, as listed by `GET /v1/models`.")],
    upstreams: UpstreamsDep,
) -> str:
    """The `task` path parameter, refused with 404 `unknown_task` before the body is read."""
    upstreams.base_url(task)  # raises UnknownTask
    return task


KnownTask = Annotated[str, Depends(known_task)]


def _predict_error_responses() -> dict[int | str, dict[str, object]]:
    return error_responses(
        InvalidInput,
        UnknownTask,
        PayloadTooLarge,
        BatchTooLarge,
        ItemTooLarge,
        Overloaded,
        ModelNotReady,
        UpstreamUnavailable,
        RequestTimedOut,
        UpstreamTimeout,
        BodyTooLarge,
        UnsupportedMediaType,
    )


predict_router = APIRouter(prefix="/v1", tags=["predict"])


@predict_router.post(
    "/{task}/predict",
    summary="Classify texts or images with the task's model",
    response_model=TextPredictResponse | PosePredictResponse,
    responses=_predict_error_responses(),
    # The body is forwarded as raw bytes, so its schema is declared here rather than parsed:
    # text tasks take {"text": [...]}, image tasks {"images": [base64...]} or multipart.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            TextPredictRequest.model_json_schema(),
                            PoseJsonRequest.model_json_schema(),
                        ]
                    }
                },
                "multipart/form-data": {"schema": MULTIPART_IMAGES_SCHEMA},
            },
        }
    },
)
async def predict(task: KnownTask, request: Request, upstreams: UpstreamsDep) -> Response:
    """Classify with the task's model; the service's answer is relayed unchanged."""
    answer = await upstreams.predict(
        task, await request.body(), request.headers.get("content-type")
    )
    headers = {name: answer.headers[name] for name in RELAYED_HEADERS if name in answer.headers}
    return Response(content=answer.content, status_code=answer.status_code, headers=headers)


models_router = APIRouter(prefix="/v1", tags=["models"])


@models_router.get("/models", response_model=ModelsResponse)
async def list_models(upstreams: UpstreamsDep) -> ModelsResponse:
    """List every task with its model's name, version, labels, limits and readiness."""
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
    """Answer 200 when the service of every task reports its model ready, else 503."""
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
