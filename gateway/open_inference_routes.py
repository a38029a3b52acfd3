"""The Open Inference Protocol (KServe V2 REST) in front of every task.

The gateway answers the server-wide routes itself (`GET /v2`, `/v2/health/live`, and
`/v2/health/ready`: ready when every task is) and forwards `/v2/models/{name}/...` to the
service of the task of that name, which serves the protocol (`services.core.open_inference`).
Forwarded requests pass the same API key check and quota as `/v1` (an inference costs what
its declared batch size and bytes cost, see `gateway.work_meter`); the binary tensor data
extension's `Inference-Header-Content-Length` goes to the service and comes back with its
answer. Every error under `/v2` is `{"error": message}` (`OpenInferenceErrors`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Request, Response

from gateway.routes import GATEWAY_ERRORS, UpstreamsDep
from gateway.settings import GatewaySettings
from gateway.work_meter import charge_inference_body
from services.core.binary_tensors import INFERENCE_HEADER_LENGTH
from services.core.errors import (
    ModelNotReady,
    MtcError,
    UnknownTask,
    UnsupportedMediaType,
)
from services.core.open_inference import (
    EXTENSIONS,
    INFER_DESCRIPTION,
    INFER_ERRORS,
    INFER_OK_RESPONSE,
    INFER_REQUEST_BODY,
    SERVER_NAME,
    V2_PREFIX,
    InferenceResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
    inference_error_responses,
    server_version,
)

MODEL_VERSION = re.compile(r"(?!\.+$)[A-Za-z0-9_.-]{1,128}")
"""A version path segment forwarded as is: no `/`, `..` or encoded characters reach the
service's paths."""


def open_inference_router(
    settings: GatewaySettings, access_errors: Sequence[type[MtcError]]
) -> APIRouter:
    """The `/v2` routes; `access_errors` are what the API key check adds to the forwarded
    ones (none when authentication is off)."""
    router = APIRouter(prefix=V2_PREFIX, tags=["open inference"])
    example_task = next(
        (task for task in settings.tasks if settings.kind_of(task) == "text"), settings.tasks[0]
    )
    # A default, not an `Annotated` alias: its example is this gateway's first text task, and
    # FastAPI reads string annotations from the module's globals only.
    model_name_path: Any = Path(
        description="The model's name: a task, as listed by `GET /v1/models`.",
        examples=[example_task],
    )
    forwarded_errors: tuple[type[MtcError], ...] = (UnknownTask, *GATEWAY_ERRORS, *access_errors)

    @router.get("", summary="Server metadata", response_model=ServerMetadataResponse)
    async def server_metadata() -> ServerMetadataResponse:
        """The server's name, version and protocol extensions."""
        return ServerMetadataResponse(
            name=SERVER_NAME, version=server_version(), extensions=list(EXTENSIONS)
        )

    @router.get("/health/live", summary="Server live", response_model=ServerLiveResponse)
    async def server_live() -> ServerLiveResponse:
        """Answer 200 while the gateway process runs; the services are not consulted."""
        return ServerLiveResponse(live=True)

    @router.get(
        "/health/ready",
        summary="Server ready",
        response_model=ServerReadyResponse,
        responses=inference_error_responses(ModelNotReady),
    )
    async def server_ready(upstreams: UpstreamsDep) -> ServerReadyResponse:
        """Answer 200 when every task has a replica whose model is ready, else 503."""
        statuses = await upstreams.model_statuses()
        waiting = [status for status in statuses if not status.ready]
        if waiting:
            listed = ", ".join(f"{status.task} ({status.status})" for status in waiting)
            raise ModelNotReady(f"not ready: {listed}")
        return ServerReadyResponse(ready=True)

    async def forward(
        task: str, suffix: str, request: Request, upstreams: UpstreamsDep
    ) -> Response:
        if task not in upstreams.tasks:
            known = ", ".join(sorted(upstreams.tasks))
            raise UnknownTask(f"unknown model '{task[:100]}'; the models are the tasks: {known}")
        path = f"{V2_PREFIX}/models/{quote(task, safe='')}"
        version: str | None = request.path_params.get("model_version")
        if version is not None:
            if not MODEL_VERSION.fullmatch(version):
                raise UnknownTask(f"model '{task}' has no version '{version[:100]}'")
            path += f"/versions/{version}"
        path += suffix
        body = b""
        headers: dict[str, str] = {}
        if request.method == "POST":
            encoding = request.headers.get("content-encoding", "identity").strip().lower()
            if encoding != "identity":
                raise UnsupportedMediaType(
                    f"Content-Encoding {encoding[:40]!r} is not accepted; send the body "
                    "uncompressed"
                )
            body = await request.body()
            header_length = request.headers.get(INFERENCE_HEADER_LENGTH)
            await charge_inference_body(body, header_length)
            if header_length is not None:
                headers[INFERENCE_HEADER_LENGTH] = header_length
        answer = await upstreams.forward(
            task,
            path,
            method=request.method,
            body=body,
            content_type=request.headers.get("content-type"),
            query=request.url.query,
            headers=headers,
        )
        return Response(answer.content, status_code=answer.status_code, headers=answer.headers)

    documented_routes: dict[str, dict[str, Any]] = {
        "": {
            "name": "model_metadata",
            "methods": ["GET"],
            "summary": "Model metadata",
            "description": "The model's inputs and outputs with their datatypes and shapes.",
            "response_model": ModelMetadataResponse,
            "responses": inference_error_responses(*forwarded_errors),
        },
        "/ready": {
            "name": "model_ready",
            "methods": ["GET"],
            "summary": "Model ready",
            "description": "Answer 200 when the model is loaded, else 503.",
            "response_model": ModelReadyResponse,
            "responses": inference_error_responses(ModelNotReady, *forwarded_errors),
        },
        "/infer": {
            "name": "infer",
            "methods": ["POST"],
            "summary": "Inference",
            "response_model": InferenceResponse,
            "responses": {
                **INFER_OK_RESPONSE,
                **inference_error_responses(*INFER_ERRORS, *forwarded_errors),
            },
            "openapi_extra": {"requestBody": INFER_REQUEST_BODY},
            "description": INFER_DESCRIPTION
            + " Forwarded to the task's service; the quota counts the batch size its inputs "
            "declare.",
        },
    }

    def model_route(suffix: str) -> Callable[..., Awaitable[Response]]:
        async def endpoint(
            *, model_name: str = model_name_path, request: Request, upstreams: UpstreamsDep
        ) -> Response:
            return await forward(model_name, suffix, request, upstreams)

        return endpoint

    for suffix, options in documented_routes.items():
        endpoint = model_route(suffix)
        router.add_api_route(f"/models/{{model_name}}{suffix}", endpoint, **options)
        # The same for one version of the model (the loaded one), undocumented; `forward`
        # reads the version from the path.
        router.add_api_route(
            f"/models/{{model_name}}/versions/{{model_version}}{suffix}",
            endpoint,
            methods=options["methods"],
            include_in_schema=False,
        )

    return router
