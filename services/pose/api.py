"""HTTP API of the pose service: `POST /v1/{task}/predict` with images, on the core app.

One route takes either a multipart upload (one or more `image` file parts) or JSON
`{"images": ["<base64>", ...]}`, told apart by the request's Content-Type (JSON when
there is none). Every image is validated and decoded here, before anything is queued.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import asdict
from functools import partial
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.core.api import (
    DataPlaneDep,
    create_app,
    form_files,
    multipart_form,
    prediction_response,
    read_file_part,
)
from services.core.dataplane import DataPlane, ItemLimit, PredictionResult
from services.core.decode_workers import DecodeWorkers
from services.core.errors import BatchTooLarge, UnsupportedMediaType
from services.core.http_errors import error_responses
from services.core.json_body import check_json_values
from services.core.kinds import SERVING_ERRORS, UPLOAD_ERRORS
from services.core.open_inference import BytesTensor, InputTensor, TensorAdapter, base64_file
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


class ImageUploadReader:
    """Reads a predict request's images (multipart or base64 JSON, or Open Inference tensors)
    and decodes them."""

    def __init__(self, settings: PoseSettings) -> None:
        self.settings = settings
        self.item_limit = ItemLimit(
            settings.max_images_per_request, "images", "MTC_MAX_IMAGES_PER_REQUEST"
        )
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
        return await self.decoders.run_each(
            partial(decode_image, data, label=label, limits=self.limits) for label, data in raw
        )

    async def predict_tensors(
        self, tensors: Mapping[str, BytesTensor], plane: DataPlane[Any, Any]
    ) -> PredictionResult[PosePrediction]:
        """Ranked predictions of Open Inference input `image` (BYTES, one encoded file per
        element; base64 strings in JSON), with the checks and limits of the multipart and
        JSON bodies."""
        files = tensors[IMAGE_FILE_FIELD].files(self.limits.max_bytes, "MTC_MAX_IMAGE_BYTES")
        return await plane.predict(await self.decode(files))

    async def _multipart(self, request: Request) -> list[tuple[str, bytes]]:
        # The body size is already bounded by MTC_MAX_BODY_BYTES; these bound the parts.
        max_files = max(1000, self.item_limit.count + 1)
        async with multipart_form(request, max_files=max_files, max_fields=1000) as form:
            return [
                await read_file_part(FILE_FIELD, index, part, self.limits.max_bytes, "a file part")
                for index, part in enumerate(form_files(form, FILE_FIELD, self.item_limit))
            ]

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
        labels = [f"{JSON_FIELD}[{index}]" for index in range(len(parsed.images))]
        return [
            (label, base64_file(label, text, self.limits.max_bytes, "MTC_MAX_IMAGE_BYTES"))
            for label, text in zip(labels, parsed.images, strict=True)
        ]

    def _check_headers(self, raw: list[tuple[str, bytes]]) -> None:
        headers = [read_header(data, label=label, limits=self.limits) for label, data in raw]
        total = sum(header.pixels for header in headers)
        limit = self.settings.max_pixels_per_request
        if total > limit:
            raise BatchTooLarge(
                f"{len(headers)} images of {total} pixels in one request; the limit is "
                f"{limit} pixels together (MTC_MAX_PIXELS_PER_REQUEST)"
            )


def pose_routes(settings: PoseSettings, model: PoseModel, reader: ImageUploadReader) -> Any:
    """The route registrar for `create_app`."""
    guard_decompression_bombs(settings.max_image_pixels)

    def register(app: FastAPI, dataplane: DataPlane[Any, Any]) -> None:
        @app.post(
            f"/v1/{settings.task}/predict",
            tags=[settings.task],
            response_model=PosePredictResponse,
            responses=error_responses(*UPLOAD_ERRORS, *SERVING_ERRORS, validation=True),
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
            return prediction_response(
                model,
                result,
                keypoints=[
                    None
                    if prediction.keypoints is None
                    else [asdict(keypoint) for keypoint in prediction.keypoints]
                    for prediction in result.predictions
                ],
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
        tensor_adapter=TensorAdapter(
            (InputTensor(IMAGE_FILE_FIELD),), reader.item_limit, reader.predict_tensors
        ),
        title=f"mtc pose service: {settings.task}",
        description="Human pose classification from photos: MediaPipe Pose landmarks with a "
        "geometric classifier, or any Hugging Face image-classification model.",
    )
