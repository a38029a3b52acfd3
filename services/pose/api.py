"""HTTP API of the pose service: `POST /v1/{task}/predict` with images, on the core app.

One route takes either a multipart upload (one or more `image` file parts) or JSON
`{"images": ["<base64>", ...]}`, told apart by the request's Content-Type (JSON when
there is none). Every image is validated and decoded here, before anything is queued.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.core.api import DataPlaneDep, create_app, timing_headers
from services.core.dataplane import DataPlane, PredictionResult
from services.core.decode_workers import DecodeWorkers
from services.core.errors import (
    BatchTooLarge,
    BodyTooLarge,
    InvalidInput,
    ItemTooLarge,
    ModelNotReady,
    Overloaded,
    RequestTimedOut,
    UnsupportedMediaType,
)
from services.core.http_errors import error_responses
from services.core.json_body import check_json_values
from services.core.open_inference import BytesTensor, InputTensor, ItemLimit, TensorAdapter
from services.pose.images import (
    DecodedImage,
    ImageLimits,
    decode_image,
    guard_decompression_bombs,
    read_header,
)
from services.pose.models.auto import AutoPoseModel
from services.pose.models.base import PoseModel, PosePrediction
from services.pose.settings import PoseSettings
from services.wire.contracts import (
    IMAGE_FILE_FIELD,
    MULTIPART_IMAGES_SCHEMA,
    PoseJsonRequest,
    PosePredictResponse,
)

FILE_FIELD: Final = IMAGE_FILE_FIELD
JSON_FIELD: Final = "images"
_DATA_URL_MARK: Final = ";base64,"


def _validation_error(location: Sequence[str | int], kind: str, message: str) -> Exception:
    # FastAPI's own 422 body, as if the request had been parsed by a declared body model.
    return RequestValidationError(
        [{"type": kind, "loc": ("body", *location), "msg": message, "input": None}]
    )


class ImageUploadReader:
    """Reads a predict request's images (multipart or base64 JSON) and decodes them."""

    def __init__(self, settings: PoseSettings) -> None:
        self.settings = settings
        self.limits = ImageLimits(
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            min_side=settings.min_image_side,
            max_side=settings.decode_max_side,
        )
        self.json_schema = PoseJsonRequest.with_limit(settings.max_images_per_request)
        self.decoders = DecodeWorkers(
            settings.max_concurrent_decodes,
            wait_seconds=settings.request_timeout_seconds,
            setting="MTC_MAX_CONCURRENT_DECODES",
        )

    async def read(self, request: Request) -> list[DecodedImage]:
        """Validated, decoded images of the request, in order; raises naming the bad item."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            raw = await self._multipart(request)
        elif content_type in ("", "application/json") or content_type.endswith("+json"):
            raw = await self._json(request)
        else:
            raise UnsupportedMediaType(
                f"Content-Type {content_type!r} is not accepted; send multipart/form-data "
                f"with one `{FILE_FIELD}` part per image, or application/json "
                f'{{"{JSON_FIELD}": ["<base64>", ...]}}'
            )
        return await self.decode(raw)

    async def decode(self, raw: list[tuple[str, bytes]]) -> list[DecodedImage]:
        """(label, file bytes) per image, validated and decoded, in order."""
        # Every header is checked before any image is decoded, all of them off the event loop.
        await asyncio.to_thread(self._check_headers, raw)
        # One image at a time per request: the decode threads are shared by all requests.
        deadline = self.decoders.deadline()
        return [
            await self.decoders.run(
                partial(decode_image, data, label=label, limits=self.limits), deadline=deadline
            )
            for label, data in raw
        ]

    def _check_count(self, count: int, location: str) -> None:
        if count == 0:
            raise _validation_error([location], "missing", "Field required")
        if count > self.settings.max_images_per_request:
            raise BatchTooLarge(
                f"{count} images in one request; the limit is "
                f"{self.settings.max_images_per_request} (MTC_MAX_IMAGES_PER_REQUEST)"
            )

    async def _multipart(self, request: Request) -> list[tuple[str, bytes]]:
        try:
            # The body size is already bounded by MTC_MAX_BODY_BYTES; these bound the parts.
            form = await request.form(
                max_files=max(1000, self.settings.max_images_per_request + 1), max_fields=1000
            )
        except StarletteHTTPException as exc:
            raise InvalidInput(f"malformed multipart body: {exc.detail}") from None
        try:
            parts = form.getlist(FILE_FIELD)
            self._check_count(len(parts), FILE_FIELD)
            raw: list[tuple[str, bytes]] = []
            for index, part in enumerate(parts):
                if not isinstance(part, UploadFile):
                    raise InvalidInput(
                        f"{FILE_FIELD}[{index}] is a plain form field; send it as a file part"
                    )
                label = f"{FILE_FIELD}[{index}]" + (f" ({part.filename})" if part.filename else "")
                # Read at most one byte past the limit: enough to know it is too large.
                data = await part.read(self.limits.max_bytes + 1)
                raw.append((label, data))
            return raw
        finally:
            await form.close()

    async def _json(self, request: Request) -> list[tuple[str, bytes]]:
        body = await request.body()
        check_json_values(body, self.json_schema)
        try:
            document: Any = json.loads(body)
        except (ValueError, RecursionError) as exc:
            # Malformed JSON, bytes that are not UTF-8, an integer of more than 4,300
            # digits, or nesting deeper than the parser's recursion limit.
            raise RequestValidationError(
                [
                    {
                        "type": "json_invalid",
                        "loc": ("body", getattr(exc, "pos", 0)),
                        "msg": "JSON decode error",
                        "input": {},
                        "ctx": {"error": getattr(exc, "msg", str(exc))},
                    }
                ]
            ) from None
        try:
            # The schema's cap refuses too many images (413) as soon as the list passes it.
            parsed = self.json_schema.model_validate(document)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
            ) from None
        return [
            (f"{JSON_FIELD}[{index}]", self._base64(f"{JSON_FIELD}[{index}]", text))
            for index, text in enumerate(parsed.images)
        ]

    def _base64(self, label: str, text: str) -> bytes:
        if text.startswith("data:") and _DATA_URL_MARK in text[:100]:
            text = text.split(_DATA_URL_MARK, 1)[1]
        # Size check before decoding: base64 is 4 characters per 3 bytes.
        if len(text) * 3 // 4 > self.limits.max_bytes + 3:
            raise ItemTooLarge(
                f"{label}: about {len(text) * 3 // 4} bytes; the limit is "
                f"{self.limits.max_bytes} (MTC_MAX_IMAGE_BYTES)"
            )
        try:
            return base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{label}: not valid base64") from None

    def _check_headers(self, raw: list[tuple[str, bytes]]) -> None:
        headers = [read_header(data, label=label, limits=self.limits) for label, data in raw]
        total = sum(header.pixels for header in headers)
        limit = self.settings.max_pixels_per_request
        if total > limit:
            raise BatchTooLarge(
                f"{len(headers)} images of {total} pixels in one request; the limit is "
                f"{limit} pixels together (MTC_MAX_PIXELS_PER_REQUEST)"
            )


class ImageTensorAdapter(TensorAdapter):
    """Open Inference input `image` (BYTES, one encoded file per element; base64 strings in
    JSON): the images of `/v1/{task}/predict`, with its checks and limits."""

    def __init__(self, settings: PoseSettings, reader: ImageUploadReader):
        super().__init__(
            [InputTensor(IMAGE_FILE_FIELD, "One JPEG, PNG or WebP file per element.")],
            ItemLimit(settings.max_images_per_request, "images", "MTC_MAX_IMAGES_PER_REQUEST"),
        )
        self.reader = reader

    async def predict(
        self, tensors: Mapping[str, BytesTensor], plane: DataPlane[Any, Any]
    ) -> PredictionResult[PosePrediction]:
        """Ranked predictions of the images."""
        files = tensors[IMAGE_FILE_FIELD].files(self.reader.limits.max_bytes, "MTC_MAX_IMAGE_BYTES")
        return await plane.predict(await self.reader.decode(files))


def pose_routes(settings: PoseSettings, model: PoseModel, reader: ImageUploadReader) -> Any:
    """The route registrar for `create_app`."""
    guard_decompression_bombs(settings.max_image_pixels)

    def register(app: FastAPI, dataplane: DataPlane[Any, Any]) -> None:
        @app.post(
            f"/v1/{settings.task}/predict",
            tags=[settings.task],
            response_model=PosePredictResponse,
            responses=error_responses(
                InvalidInput,
                BatchTooLarge,
                BodyTooLarge,
                ItemTooLarge,
                UnsupportedMediaType,
                Overloaded,
                ModelNotReady,
                RequestTimedOut,
                validation=True,
            ),
            summary=f"Classify the pose in photos ({settings.task})",
            # The body is read by hand (two content types), so its schema is declared here.
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {"schema": MULTIPART_IMAGES_SCHEMA},
                        "application/json": {"schema": reader.json_schema.model_json_schema()},
                    },
                }
            },
        )
        async def predict(request: Request, plane: DataPlaneDep) -> JSONResponse:
            """Classify each image; every label is returned with its score, highest first."""
            plane.require_ready()
            images = await reader.read(request)
            result: PredictionResult[PosePrediction] = await plane.predict(images)
            meta = model.metadata
            response = {
                "model": {"name": meta.name, "version": meta.version},
                "predictions": [
                    [{"label": s.label, "score": s.score} for s in prediction.scores]
                    for prediction in result.predictions
                ],
                "keypoints": [
                    None
                    if prediction.keypoints is None
                    else [
                        {"name": k.name, "x": k.x, "y": k.y, "visibility": k.visibility}
                        for k in prediction.keypoints
                    ]
                    for prediction in result.predictions
                ],
            }
            return JSONResponse(
                response, headers=timing_headers(result.queue_seconds, result.inference_seconds)
            )

    return register


def build_app(settings: PoseSettings, model: PoseModel | None = None) -> FastAPI:
    """The pose service application; the model class follows the model directory's config."""
    limits = {
        "max_images_per_request": settings.max_images_per_request,
        "max_image_bytes": settings.max_image_bytes,
        "max_image_pixels": settings.max_image_pixels,
        "max_pixels_per_request": settings.max_pixels_per_request,
        "min_image_side": settings.min_image_side,
        "max_body_bytes": settings.max_body_bytes,
    }
    classifier = model or AutoPoseModel(torch_threads=settings.threads_per_worker, limits=limits)
    # One reader for both APIs: they share its decode threads and limits.
    reader = ImageUploadReader(settings)
    return create_app(
        settings,
        classifier,
        register_routes=pose_routes(settings, classifier, reader),
        tensor_adapter=ImageTensorAdapter(settings, reader),
        title=f"mtc pose service: {settings.task}",
        description="Human pose classification from photos: MediaPipe Pose landmarks with a "
        "geometric classifier, or any Hugging Face image-classification model.",
    )
