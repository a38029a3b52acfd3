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
from collections.abc import Sequence
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
    INFER_DESCRIPTION,
    INFER_ERRORS,
    V2_PREFIX,
    ModelRoute,
    add_protocol_routes,
)

MODEL_VERSION = re.compile(r"(?!\.+$)[A-Za-z0-9_.-]{1,128}")
"""A version path segment forwarded as is: no `/`, `..` or encoded characters reach the
service's paths."""


def open_inference_router(
    settings: GatewaySettings, access_errors: Sequence[type[MtcError]]
) -> APIRouter:
    """The `/v2` routes; `access_errors` are what the API key check adds to the forwarded
    ones (none when authentication is off)."""
    router = APIRouter()
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

    async def every_task_ready(upstreams: UpstreamsDep) -> None:
        waiting = [status for status in await upstreams.model_statuses() if not status.ready]
        if waiting:
            listed = ", ".join(f"{status.task} ({status.status})" for status in waiting)
            raise ModelNotReady(f"not ready: {listed}")

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

    def model_route(
        suffix: str, name: str, description: str, *errors: type[MtcError]
    ) -> ModelRoute:
        async def endpoint(
            *, model_name: str = model_name_path, request: Request, upstreams: UpstreamsDep
        ) -> Response:
            return await forward(model_name, suffix, request, upstreams)

        return ModelRoute(endpoint, (*errors, *forwarded_errors), description, name)

    add_protocol_routes(
        router,
        live="Answer 200 while the gateway process runs; the services are not consulted.",
        ready="Answer 200 when every task has a replica whose model is ready, else 503.",
        check_ready=every_task_ready,
        model_routes={
            "": model_route(
                "",
                "model_metadata",
                "The model's inputs and outputs with their datatypes and shapes.",
            ),
            "/ready": model_route(
                "/ready",
                "model_ready",
                "Answer 200 when the model is loaded, else 503.",
                ModelNotReady,
            ),
            "/infer": model_route(
                "/infer",
                "infer",
                INFER_DESCRIPTION
                + " Forwarded to the task's service; the quota counts the batch size its inputs "
                "declare.",
                *INFER_ERRORS,
            ),
        },
    )
    return router
