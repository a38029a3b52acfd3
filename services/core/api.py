"""`create_app`: the FastAPI application shared by every model service.

It owns what all services have in common (lifespan model loading, health, metrics,
`/v1/models`, error mapping, body-size limit, request metrics); each service adds its own
prediction route through `register_routes(app, dataplane)`, with the steps the routes share
(reading uploaded files, building the answer) from the end of this module.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

from services.artifacts.store import ModelStore
from services.core.api_docs import install_api_docs
from services.core.body_limit import BodySizeLimit
from services.core.cache import MemoryCache, NullCache, RedisCache, ResponseCache
from services.core.dataplane import DataPlane, ItemLimit, PredictionResult
from services.core.errors import InvalidInput, ModelNotReady
from services.core.http_errors import ErrorBody, install_error_handlers, without_locations
from services.core.json_body import BoundedJsonRoute
from services.core.metrics import ServiceMetrics
from services.core.metrics_server import MetricsServer
from services.core.model import ClassifierModel, LabelScore
from services.core.open_inference import (
    OpenInferenceErrors,
    TensorAdapter,
    register_open_inference,
)
from services.core.settings import ServiceSettings

logger = logging.getLogger(__name__)

LoadStatus = Literal["loading", "ready", "failed"]


@dataclass
class ServiceState:
    """Where model loading stands, for `/health/ready` and `/v1/models`."""

    status: LoadStatus = "loading"
    reason: str | None = None


class ModelInfo(BaseModel):
    """One served model as reported by `/v1/models`."""

    task: str
    name: str | None
    version: str | None
    labels: list[str] | None
    limits: dict[str, Any] | None
    runtime: str
    ready: bool
    status: str
    reason: str | None


class ModelList(BaseModel):
    """Body of `GET /v1/models`."""

    models: list[ModelInfo]


class HealthStatus(BaseModel):
    """Body of a passing health check."""

    status: str


def build_cache(settings: ServiceSettings, metrics: ServiceMetrics) -> ResponseCache:
    """The cache the settings ask for: none, Redis, or in-process."""
    if settings.cache_ttl_seconds == 0:
        return NullCache()
    if settings.redis_url:
        return RedisCache(
            settings.redis_url,
            ttl_seconds=settings.cache_ttl_seconds,
            timeout_seconds=settings.redis_timeout_seconds,
            retry_seconds=settings.redis_retry_seconds,
            on_error=metrics.count_cache_error,
        )
    if settings.cache_max_items == 0:
        return NullCache()
    return MemoryCache(settings.cache_max_items, settings.cache_ttl_seconds)


class PredictionMetrics:
    """ASGI middleware counting prediction requests by status class and timing them.

    Only `/v1/{task}/predict` and `/v2/models/{task}/infer` are counted: health checks,
    scrapes and docs are not traffic.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not is_prediction_path(path):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            task = self.metrics.task
            self.metrics.requests.labels(task, f"{status // 100}xx").inc()
            self.metrics.request_duration.labels(task).observe(time.perf_counter() - started)


MODEL_VERSION_HEADER = b"x-model-version"


class ModelVersionHeader:
    """ASGI middleware naming the model that answered each request of the model's API
    (`/v1/...`, `/v2/...`: predictions of every kind, their errors included):
    `x-model-version: <name>/<version>`, once the model is loaded.

    The gateway reads it to count answers per version (a canary's share and errors) and
    relays it, so every client sees which version answered without parsing the body.
    """

    def __init__(self, app: ASGIApp, model: ClassifierModel[Any, Any]) -> None:
        self.app = app
        self.model = model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not self.model.ready or not path.startswith(("/v1/", "/v2/")):
            await self.app(scope, receive, send)
            return
        meta = self.model.metadata
        # Header values are latin-1; a manifest's name or version need not be.
        version = f"{meta.name}/{meta.version}".encode("ascii", "replace")

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (MODEL_VERSION_HEADER, version)]
            await send(message)

        await self.app(scope, receive, send_with_version)


def api_app(title: str, description: str, lifespan: Lifespan[FastAPI]) -> FastAPI:
    """A FastAPI app as the services and the gateway build theirs, with the API docs of
    `install_api_docs`."""
    # Existing clients post JSON without a Content-Type header; accept it as JSON.
    app = FastAPI(
        title=title,
        description=description,
        lifespan=lifespan,
        strict_content_type=False,
        # FastAPI's built-in OpenTelemetry hooks, off: the Prometheus metrics are the apps'
        # own, and the hooks otherwise look up the global OpenTelemetry providers on every
        # request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,
        redoc_url=None,
    )
    install_api_docs(app)
    return app


async def get_dataplane(request: Request) -> DataPlane[Any, Any]:
    """The app's dataplane (dependency; async, since FastAPI runs a plain function
    dependency in a worker thread: a thread hop on every request)."""
    dataplane: DataPlane[Any, Any] = request.app.state.dataplane
    return dataplane


DataPlaneDep = Annotated[DataPlane[Any, Any], Depends(get_dataplane)]


def is_prediction_path(path: str) -> bool:
    """Whether `path` is a prediction route (v1 or Open Inference Protocol)."""
    return (path.startswith("/v1/") and path.endswith("/predict")) or (
        path.startswith("/v2/models/") and path.endswith("/infer")
    )


def create_app(
    settings: ServiceSettings,
    model: ClassifierModel[Any, Any],
    *,
    register_routes: Callable[[FastAPI, DataPlane[Any, Any]], None],
    title: str,
    description: str = "",
    store: ModelStore | None = None,
    cache: ResponseCache | None = None,
    tensor_adapter: TensorAdapter | None = None,
) -> FastAPI:
    """Build a model service: the model is fetched and loaded in the background at start.

    Until loading succeeds `/health/ready` answers 503 (with the reason if it failed) and
    prediction routes answer 503 `model_not_ready`; liveness is 200 throughout. With a
    `tensor_adapter`, the Open Inference Protocol's `/v2` routes serve the same model.
    """
    metrics = ServiceMetrics(settings.task)
    model_store = store or ModelStore(
        settings.model_cache_dir, s3_endpoint_url=settings.s3_endpoint_url
    )
    dataplane: DataPlane[Any, Any] = DataPlane(
        model, cache or build_cache(settings, metrics), metrics, settings
    )
    state = ServiceState()

    async def load_model() -> None:
        try:
            logger.info("fetching model %s", settings.model_uri)
            model_dir = await asyncio.to_thread(model_store.fetch, settings.model_uri)
            await model.start(model_dir)
            # The model and its libraries leave a few hundred thousand long-lived objects
            # that every full garbage collection would walk again (170 ms measured on the
            # text service, once every few thousand requests: its p99). Frozen, they are
            # out of the collector's sight; only what requests create is collected.
            gc.collect()
            gc.freeze()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure keeps the service not-ready
            reason = f"{type(exc).__name__}: {exc}"
            logger.error("model %s failed to load: %s", settings.model_uri, reason)
            # Clients see why, but not where: paths and URLs stay in the log above.
            state.status, state.reason = "failed", without_locations(reason)
            return
        meta = model.metadata
        metrics.mark_loaded(meta.name, meta.version)
        state.status = "ready"
        logger.info("model %s version %s ready for task %s", meta.name, meta.version, settings.task)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics_server = None
        if settings.metrics_port is not None:
            metrics_server = MetricsServer(metrics.registry, settings.host, settings.metrics_port)
            metrics_server.start()
        await dataplane.start()
        loader = asyncio.create_task(load_model(), name="mtc-model-load")
        try:
            yield
        finally:
            loader.cancel()
            await asyncio.gather(loader, return_exceptions=True)
            await dataplane.stop()
            if metrics_server is not None:
                metrics_server.stop()

    app = api_app(title, description, lifespan)
    app.state.dataplane = dataplane
    app.state.metrics = metrics
    app.state.settings = settings
    # Every JSON body is checked against what its schema can need before it is parsed.
    app.router.route_class = BoundedJsonRoute
    install_error_handlers(app)

    @app.get("/health/live", tags=["health"])
    async def live() -> HealthStatus:
        """The process is up (does not mean the model is loaded)."""
        return HealthStatus(status="alive")

    @app.get(
        "/health/ready",
        tags=["health"],
        responses={503: {"model": ErrorBody, "description": "model loading or failed"}},
    )
    async def ready() -> HealthStatus:
        """The model is loaded and requests will be served."""
        if state.status == "ready":
            return HealthStatus(status="ready")
        if state.status == "failed":
            raise ModelNotReady(f"model failed to load: {state.reason}")
        raise ModelNotReady(without_locations(f"model {settings.model_uri} is still loading"))

    @app.get("/v1/models", tags=["models"])
    async def models() -> ModelList:
        """The model this service serves, its labels, limits and readiness."""
        meta = model.metadata if model.ready else None
        info = ModelInfo(
            task=settings.task,
            name=meta.name if meta else None,
            version=meta.version if meta else None,
            labels=meta.labels if meta else None,
            limits=meta.limits if meta else None,
            runtime=model.runtime,
            ready=model.ready,
            status=state.status,
            reason=state.reason,
        )
        return ModelList(models=[info])

    if settings.metrics_port is None:
        # Local runs: one port for everything. Deployments give /metrics a port of its own.

        @app.get("/metrics", tags=["health"], response_class=Response)
        async def scrape() -> Response:
            """Prometheus metrics."""
            return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    register_routes(app, dataplane)
    if tensor_adapter is not None:
        register_open_inference(app, dataplane, tensor_adapter)
    # Added last = outermost: the size check runs before anything reads the body.
    app.add_middleware(ModelVersionHeader, model=model)
    app.add_middleware(PredictionMetrics, metrics=metrics)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Outside the size check, so its 413 also gets the protocol's error shape under /v2.
    app.add_middleware(OpenInferenceErrors)
    return app


def timing_headers(queue_seconds: float, inference_seconds: float) -> dict[str, str]:
    """`x-queue-time` / `x-inference-time` headers in milliseconds."""
    return {
        "x-queue-time": f"{queue_seconds * 1000:.3f}",
        "x-inference-time": f"{inference_seconds * 1000:.3f}",
    }


class PredictionResponse(JSONResponse):
    """A JSON response serialised by orjson: prediction bodies are lists of floats, which
    the standard library's encoder writes several times slower."""

    def render(self, content: Any) -> bytes:
        """`content` (JSON types only) as compact UTF-8 JSON."""
        return orjson.dumps(content)


def ranking(scores: Sequence[LabelScore]) -> list[dict[str, Any]]:
    """Labels with their scores, highest first, as the `/v1` answers list them."""
    return [{"label": s.label, "score": s.score} for s in scores]


def prediction_response(
    model: ClassifierModel[Any, Any],
    result: PredictionResult[Any],
    response_class: type[JSONResponse] = JSONResponse,
    **fields: list[Any],
) -> JSONResponse:
    """A `/v1/{task}/predict` answer: the model, each item's ranking, then `fields` (one
    entry per item), with the timing headers."""
    meta = model.metadata
    body = {
        "model": {"name": meta.name, "version": meta.version},
        "predictions": [ranking(prediction.scores) for prediction in result.predictions],
        **fields,
    }
    return response_class(
        body, headers=timing_headers(result.queue_seconds, result.inference_seconds)
    )


@asynccontextmanager
async def multipart_form(
    request: Request, *, max_files: int, max_fields: int
) -> AsyncIterator[FormData]:
    """The request's multipart form (400 when malformed), closed on the way out."""
    try:
        form = await request.form(max_files=max_files, max_fields=max_fields)
    except StarletteHTTPException as exc:
        raise InvalidInput(f"malformed multipart body: {exc.detail}") from None
    try:
        yield form
    finally:
        await form.close()


def form_files(form: FormData, field: str, limit: ItemLimit) -> list[UploadFile | str]:
    """The form's `field` parts: FastAPI's own 422 when there are none (as if a declared
    body model had read the form), 413 past `limit`."""
    parts = form.getlist(field)
    if not parts:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body", field), "msg": "Field required", "input": None}]
        )
    limit.check(len(parts))
    return parts


async def read_file_part(
    field: str, index: int, part: UploadFile | str, max_bytes: int, send_as: str
) -> tuple[str, bytes]:
    """(label, bytes) of part `index` of `field`, 400 for a plain field (`send_as`: what to
    send instead). At most one byte past `max_bytes` is read: enough to know it is too large.
    """
    if not isinstance(part, UploadFile):
        raise InvalidInput(f"{field}[{index}] is a plain form field; send it as {send_as}")
    label = f"{field}[{index}]" + (f" ({part.filename})" if part.filename else "")
    return label, await part.read(max_bytes + 1)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run a service app with uvicorn until interrupted (the `python -m` entry points)."""
    import uvicorn

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Per-request access lines would cost more than a cached prediction; metrics count them.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
