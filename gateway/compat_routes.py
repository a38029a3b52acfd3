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
    PoseJsonRequest,
    PosePredictResponse,
    TextPredictRequest,
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
    project = APIRouter(tags=[COMPAT_TAG])
    api_v1 = APIRouter(tags=[COMPAT_TAG])
    served = compat_paths(settings)
    text_errors = error_responses(*_FORWARDING_ERRORS, *access_errors)
    image_errors = error_responses(*_FORWARDING_ERRORS, UnsupportedMediaType, *access_errors)

    if BULK_PREDICT_PATH in served:
        sentiment = served[BULK_PREDICT_PATH]

        @project.post(
            BULK_PREDICT_PATH,
            response_model=BulkPredictResponse,
            responses=text_errors,
            summary="Rate texts POSITIVE or NEGATIVE",
        )
        async def bulk_predict(body: BulkPredictRequest, upstreams: UpstreamsDep) -> Response:
            """Both labels per text (upper case), highest score first, texts in input order."""
            request = TextPredictRequest(text=body.text)
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
            api_v1, SENTIMENT_ANALYSIS_PATH, served[SENTIMENT_ANALYSIS_PATH], text_errors
        )
    if DISASTER_CLASSIFIER_PATH in served:
        _add_top_label_text_route(
            api_v1, DISASTER_CLASSIFIER_PATH, served[DISASTER_CLASSIFIER_PATH], text_errors
        )

    if POSE_CLASSIFIER_PATH in served:
        pose = served[POSE_CLASSIFIER_PATH]

        @api_v1.post(
            POSE_CLASSIFIER_PATH,
            response_model=LegacyPoseResponse,
            responses=image_errors,
            summary="Top pose label per photo (base64 JSON)",
        )
        async def pose_classifier(body: LegacyPoseRequest, upstreams: UpstreamsDep) -> Response:
            """The label with the highest score, and that score, per photo."""
            request = PoseJsonRequest(images=body.images)
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

    return CompatRouters(project=project, api_v1=api_v1)


def _add_top_label_text_route(
    router: APIRouter, path: str, task: str, responses: dict[int | str, dict[str, Any]]
) -> None:
    async def classify(body: LegacyTextRequest, upstreams: UpstreamsDep) -> Response:
        answer, result = await _predict(
            upstreams, task, TextPredictRequest(text=body.text), TextPredictResponse
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
        classify,
        methods=["POST"],
        response_model=LegacyTextResponse,
        responses=responses,
        summary=f"Top {task} label per text",
        operation_id=f"compat_{task}_{path.rsplit('/', 1)[-1]}",
    )


async def _predict(
    upstreams: Upstreams, task: str, request: BaseModel, expected: type[Prediction]
) -> tuple[UpstreamAnswer, Prediction | None]:
    """The task's answer to `request`, parsed when it is a success (None otherwise)."""
    answer = await upstreams.forward(
        task,
        f"/v1/{task}/predict",
        body=request.model_dump_json().encode(),
        content_type="application/json",
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
