"""Compatibility routes: the contracts of the APIs mtc replaces, so their clients keep
working unchanged.

- `POST /project/bulk-predict` and `GET /project/health` (a sentiment API), with their own
  `/project/docs` and `/project/openapi.json` (see `gateway.openapi_document`);
- `POST /api/v1/sentiment_analysis`, `/api/v1/disaster_classifier` and
  `/api/v1/pose_classifier` (top label per item).

Bodies are validated here, so a bad body gets FastAPI's standard 422 exactly as those
clients expect; valid ones are sent to the task's `/v1/{task}/predict` and the answer is
reshaped. Errors of the service (413, 429, 503, ...) are relayed as they come.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from gateway.errors import UpstreamInvalidAnswer
from gateway.routes import UpstreamsDep
from gateway.schemas import (
    BulkPredictRequest,
    BulkPredictResponse,
    HealthyResponse,
    LabelScoreBody,
    LegacyPoseRequest,
    LegacyPoseResponse,
    LegacyTextRequest,
    LegacyTextResponse,
    PosePredictResponse,
    TextPredictResponse,
)
from gateway.settings import GatewaySettings
from gateway.upstreams import UpstreamAnswer, Upstreams
from services.core.errors import (
    BatchTooLarge,
    BodyTooLarge,
    InvalidInput,
    ItemTooLarge,
    ModelNotReady,
    MtcError,
    Overloaded,
    RequestTimedOut,
    UnsupportedMediaType,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from services.core.http_errors import error_responses
from services.core.json_body import BoundedJsonRoute, with_body_schema

COMPAT_TAG = "compatibility"
PROJECT_PREFIX = "/project"
BULK_PREDICT_PATH = f"{PROJECT_PREFIX}/bulk-predict"
PROJECT_HEALTH_PATH = f"{PROJECT_PREFIX}/health"
SENTIMENT_ANALYSIS_PATH = "/api/v1/sentiment_analysis"
DISASTER_CLASSIFIER_PATH = "/api/v1/disaster_classifier"
POSE_CLASSIFIER_PATH = "/api/v1/pose_classifier"

# The service's timing headers; the body is rebuilt, so its content-type is not relayed.
TIMING_HEADERS = ("x-inference-time", "x-queue-time")

_FORWARDING_ERRORS: tuple[type[MtcError], ...] = (
    InvalidInput,
    BatchTooLarge,
    ItemTooLarge,
    BodyTooLarge,
    Overloaded,
    ModelNotReady,
    UpstreamUnavailable,
    RequestTimedOut,
    UpstreamTimeout,
    UpstreamInvalidAnswer,
)

Prediction = TypeVar("Prediction", bound=BaseModel)


def compat_paths(settings: GatewaySettings) -> dict[str, str]:
    """Compatibility predict path -> the task answering it, for the routes that are served
    (those whose task is configured)."""
    routes = {
        BULK_PREDICT_PATH: settings.compat_sentiment_task,
        SENTIMENT_ANALYSIS_PATH: settings.compat_sentiment_task,
        DISASTER_CLASSIFIER_PATH: settings.compat_disaster_task,
        POSE_CLASSIFIER_PATH: settings.compat_pose_task,
    }
    return {path: task for path, task in routes.items() if task in settings.upstreams}


@dataclass(frozen=True)
class CompatRouters:
    """The compatibility routes, in two groups: `/project` has an OpenAPI document of its
    own; `/api/v1` does not."""

    project: APIRouter
    api_v1: APIRouter


def compat_routers(
    settings: GatewaySettings, access_errors: Sequence[type[MtcError]]
) -> CompatRouters:
    """The compatibility routes whose task is configured; `access_errors` are added to the
    documented errors of the protected ones."""
    # These bodies are parsed here: at most `max_json_body_bytes`, and lists capped by the
    # schemas at the configured limits (validation stops as soon as a list passes its cap).
    route_class = BoundedJsonRoute.with_max_body_bytes(settings.max_json_body_bytes)
    project = APIRouter(tags=[COMPAT_TAG], route_class=route_class)
    api_v1 = APIRouter(tags=[COMPAT_TAG], route_class=route_class)
    texts_schema = BulkPredictRequest.with_limit(settings.max_texts_per_request)
    legacy_texts_schema = LegacyTextRequest.with_limit(settings.max_texts_per_request)
    images_schema = LegacyPoseRequest.with_limit(settings.max_images_per_request)
    served = compat_paths(settings)
    text_errors = error_responses(*_FORWARDING_ERRORS, *access_errors)
    image_errors = error_responses(*_FORWARDING_ERRORS, UnsupportedMediaType, *access_errors)

    if BULK_PREDICT_PATH in served:
        sentiment = served[BULK_PREDICT_PATH]

        async def bulk_predict(body: BulkPredictRequest, upstreams: UpstreamsDep) -> Response:
            """Both labels per text (upper case), highest score first, texts in input order."""
            request = _service_body("text", body.text)
            answer, result = await _predict(upstreams, sentiment, request, TextPredictResponse)
            if result is None:
                return _relay(answer)
            predictions = [
                [
                    {"label": entry.label.upper(), "score": entry.score}
                    for entry in _highest_first(scores)
                ]
                for scores in result.predictions
            ]
            return _json({"predictions": predictions}, answer)

        project.post(
            BULK_PREDICT_PATH,
            response_model=BulkPredictResponse,
            responses=text_errors,
            summary="Rate texts POSITIVE or NEGATIVE",
        )(with_body_schema(bulk_predict, texts_schema))

        @project.get(
            PROJECT_HEALTH_PATH,
            response_model=HealthyResponse,
            responses=error_responses(ModelNotReady),
            summary="Whether the sentiment model can answer",
        )
        async def project_health(upstreams: UpstreamsDep) -> HealthyResponse:
            """`{"status": "healthy"}` while a replica of the sentiment model is ready, else 503."""
            (status,) = await upstreams.model_statuses([sentiment])
            if not status.ready:
                reason = f": {status.reason}" if status.reason else ""
                raise ModelNotReady(f"the {sentiment} model is {status.status}{reason}")
            return HealthyResponse()

    if SENTIMENT_ANALYSIS_PATH in served:
        _add_top_label_text_route(
            api_v1,
            SENTIMENT_ANALYSIS_PATH,
            served[SENTIMENT_ANALYSIS_PATH],
            text_errors,
            legacy_texts_schema,
        )
    if DISASTER_CLASSIFIER_PATH in served:
        _add_top_label_text_route(
            api_v1,
            DISASTER_CLASSIFIER_PATH,
            served[DISASTER_CLASSIFIER_PATH],
            text_errors,
            legacy_texts_schema,
        )

    if POSE_CLASSIFIER_PATH in served:
        pose = served[POSE_CLASSIFIER_PATH]

        async def pose_classifier(body: LegacyPoseRequest, upstreams: UpstreamsDep) -> Response:
            """The label with the highest score, and that score, per photo."""
            request = _service_body("images", body.images)
            answer, result = await _predict(upstreams, pose, request, PosePredictResponse)
            if result is None:
                return _relay(answer)
            tops = [max(scores, key=lambda entry: entry.score) for scores in result.predictions]
            reply = LegacyPoseResponse(
                model_name=result.model.name,
                labels=[top.label for top in tops],
                scores=[top.score for top in tops],
                prediction_time=_milliseconds(answer),
            )
            return _json(reply.model_dump(), answer)

        api_v1.post(
            POSE_CLASSIFIER_PATH,
            response_model=LegacyPoseResponse,
            responses=image_errors,
            summary="Top pose label per photo (base64 JSON)",
        )(with_body_schema(pose_classifier, images_schema))

    return CompatRouters(project=project, api_v1=api_v1)


def _add_top_label_text_route(
    router: APIRouter,
    path: str,
    task: str,
    responses: dict[int | str, dict[str, Any]],
    schema: type[LegacyTextRequest],
) -> None:
    async def classify(body: LegacyTextRequest, upstreams: UpstreamsDep) -> Response:
        answer, result = await _predict(
            upstreams, task, _service_body("text", body.text), TextPredictResponse
        )
        if result is None:
            return _relay(answer)
        tops = [max(scores, key=lambda entry: entry.score) for scores in result.predictions]
        reply = LegacyTextResponse(
            model_name=result.model.name,
            text=body.text,
            labels=[top.label for top in tops],
            scores=[top.score for top in tops],
            prediction_time=_milliseconds(answer),
        )
        return _json(reply.model_dump(), answer)

    classify.__doc__ = f"The label with the highest score, and that score, per text ({task})."
    router.add_api_route(
        path,
        with_body_schema(classify, schema),
        methods=["POST"],
        response_model=LegacyTextResponse,
        responses=responses,
        summary=f"Top {task} label per text",
        operation_id=f"compat_{task}_{path.rsplit('/', 1)[-1]}",
    )


def _service_body(field: str, items: list[str]) -> bytes:
    """The service's JSON body `{field: items}`; 400 `invalid_input` for an item that is
    not valid Unicode (JSON can carry a lone surrogate escape, which no service reads and
    UTF-8 cannot encode)."""
    try:
        return json.dumps({field: items}, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        index = next(i for i, item in enumerate(items) if not _is_unicode(item))
        raise InvalidInput(
            f"{field}[{index}] is not valid Unicode (it contains a lone surrogate escape)"
        ) from None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def _predict(
    upstreams: Upstreams, task: str, body: bytes, expected: type[Prediction]
) -> tuple[UpstreamAnswer, Prediction | None]:
    """The task's answer to `body`, parsed when it is a success (None otherwise)."""
    answer = await upstreams.forward(
        task, f"/v1/{task}/predict", body=body, content_type="application/json"
    )
    if answer.status_code != 200:
        return answer, None
    try:
        return answer, expected.model_validate_json(answer.content)
    except ValidationError:
        raise UpstreamInvalidAnswer(
            f"the service for task '{task}' answered with a body that is not a prediction"
        ) from None


def _highest_first(scores: list[LabelScoreBody]) -> list[LabelScoreBody]:
    return sorted(scores, key=lambda entry: entry.score, reverse=True)


def _milliseconds(answer: UpstreamAnswer) -> int:
    return round(answer.elapsed_seconds * 1000)


def _json(body: dict[str, Any], answer: UpstreamAnswer) -> JSONResponse:
    timings = {name: answer.headers[name] for name in TIMING_HEADERS if name in answer.headers}
    return JSONResponse(body, headers=timings)


def _relay(answer: UpstreamAnswer) -> Response:
    """A service error, passed on as it came (its status, body and headers)."""
    return Response(answer.content, status_code=answer.status_code, headers=answer.headers)
