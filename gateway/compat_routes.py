"""Compatibility routes: the contracts of the APIs mtc replaces, so their clients keep
working unchanged.

- `POST /project/bulk-predict` and `GET /project/health` (a sentiment API), with their own
  `/project/docs` and `/project/openapi.json` (see `gateway.openapi_document`);
- `POST /api/v1/sentiment_analysis`, `/api/v1/disaster_classifier` and
  `/api/v1/pose_classifier` (top label per item; photos as base64, or as URLs the gateway
  fetches from allowed hosts, see `gateway.image_urls`);
- the emergency-call project's `POST /predict` (a WAV in the multipart field `audio_file`)
  and `POST /predict_s3` (an S3 URI, as JSON or as a form), answered by the audio task;
- the async tone project's `POST /api/predict/`, run as a batch job of one text whose
  prediction is awaited for a while (then 202 and the job's location).

Bodies are validated here, so a bad body gets FastAPI's standard 422 exactly as those
clients expect; valid ones are sent to the task's `/v1/{task}/predict` and the answer is
reshaped. Errors of the service (413, 429, 503, ...) are relayed as they come.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, File, Form, HTTPException, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.types import Message

from gateway.errors import (
    AsyncPredictionFailed,
    UpstreamInvalidAnswer,
    UrlFetchFailed,
    UrlFetchTimeout,
    UrlNotAllowed,
)
from gateway.image_urls import ImageUrlFetcher, ImageUrlHosts
from gateway.job_routes import JOBS_PATH, JobDeskDep, OwnerDep, S3ScopeDep
from gateway.routes import UpstreamsDep
from gateway.schemas import (
    BulkLabelScore,
    BulkPredictRequest,
    BulkPredictResponse,
    EmergencyCallPrediction,
    EmergencyCallS3Prediction,
    HealthyResponse,
    LegacyPoseRequest,
    LegacyPoseResponse,
    LegacyTextRequest,
    LegacyTextResponse,
    TonePrediction,
    ToneRequest,
)
from gateway.settings import GatewaySettings
from gateway.upstreams import TIMING_HEADERS, UpstreamAnswer, Upstreams
from gateway.work_meter import charge_items
from services.core.errors import (
    AccessDenied,
    BatchTooLarge,
    BodyTooLarge,
    InputNotFound,
    InvalidInput,
    ItemTooLarge,
    ModelNotReady,
    MtcError,
    Overloaded,
    RequestTimedOut,
    UnknownTask,
    UnsupportedMediaType,
    UnusableContent,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from services.core.http_errors import error_responses
from services.core.json_body import BoundedJsonRoute, with_body_schema
from services.jobs.contracts import JobRequest, JobView
from services.jobs.errors import (
    InvalidJob,
    JobLimitReached,
    JobQueueUnavailable,
    JobsNotConfigured,
)
from services.jobs.inputs import LONE_SURROGATE
from services.jobs.store import FINAL_STATES
from services.jobs.submission import JobDesk
from services.wire.contracts import (
    AudioPredictResponse,
    AudioS3Request,
    LabelScoreBody,
    PosePredictResponse,
    TextPredictResponse,
)

COMPAT_TAG = "compatibility"
PROJECT_PREFIX = "/project"
BULK_PREDICT_PATH = f"{PROJECT_PREFIX}/bulk-predict"
PROJECT_HEALTH_PATH = f"{PROJECT_PREFIX}/health"
SENTIMENT_ANALYSIS_PATH = "/api/v1/sentiment_analysis"
DISASTER_CLASSIFIER_PATH = "/api/v1/disaster_classifier"
POSE_CLASSIFIER_PATH = "/api/v1/pose_classifier"
CALL_PREDICT_PATH = "/predict"
CALL_PREDICT_S3_PATH = "/predict_s3"
TONE_PREDICT_PATH = "/api/predict/"

FORM_MEDIA_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
MAX_FORM_BYTES = 64 * 1024
"""Largest form `POST /predict_s3` reads (it carries a URI and perhaps a transcript)."""
JOB_POLL_SECONDS = (0.02, 0.25)
"""First and longest pause between two looks at an awaited job (doubling in between)."""

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
        BULK_PREDICT_PATH: (settings.compat_sentiment_task, None),
        SENTIMENT_ANALYSIS_PATH: (settings.compat_sentiment_task, None),
        DISASTER_CLASSIFIER_PATH: (settings.compat_disaster_task, None),
        POSE_CLASSIFIER_PATH: (settings.compat_pose_task, None),
        CALL_PREDICT_PATH: (settings.compat_audio_task, "audio"),
        CALL_PREDICT_S3_PATH: (settings.compat_audio_task, "audio"),
        TONE_PREDICT_PATH: (settings.compat_tone_task, "text"),
    }
    # The newer routes also need a task of their kind: their bodies are reshaped for it.
    return {
        path: task
        for path, (task, kind) in routes.items()
        if task in settings.upstreams and kind in (None, settings.kind_of(task))
    }


def compat_routers(
    settings: GatewaySettings,
    access_errors: Sequence[type[MtcError]],
    *,
    jobs_configured: bool = False,
) -> tuple[APIRouter, APIRouter]:
    """The compatibility routes whose task is configured, in two routers: `/project`'s,
    which have an OpenAPI document of their own, and the others (`/api/v1`, and the
    emergency-call and async tone projects' `/predict`, `/predict_s3`, `/api/predict/`).
    `access_errors` are added to the documented errors of the protected ones.
    `jobs_configured`: whether the route run as a batch job is listed in the OpenAPI
    document (without jobs it answers 503, like `/v1/jobs`, and is left out of it)."""
    # These bodies are parsed here: at most `max_json_body_bytes`, and lists capped by the
    # schemas at the configured limits (validation stops as soon as a list passes its cap).
    route_class = BoundedJsonRoute.with_max_body_bytes(settings.max_json_body_bytes)
    project = APIRouter(tags=[COMPAT_TAG], route_class=route_class)
    others = APIRouter(tags=[COMPAT_TAG], route_class=route_class)
    texts_schema = BulkPredictRequest.with_limit(settings.max_texts_per_request)
    legacy_texts_schema = LegacyTextRequest.with_limit(settings.max_texts_per_request)
    images_schema = LegacyPoseRequest.with_limit(settings.max_images_per_request)
    served = compat_paths(settings)
    text_errors = error_responses(*_FORWARDING_ERRORS, *access_errors)
    image_url_errors = error_responses(
        *_FORWARDING_ERRORS,
        UnsupportedMediaType,
        UrlNotAllowed,
        UrlFetchFailed,
        UrlFetchTimeout,
        *access_errors,
    )

    if BULK_PREDICT_PATH in served:
        sentiment = served[BULK_PREDICT_PATH]

        async def bulk_predict(body: BulkPredictRequest, upstreams: UpstreamsDep) -> Response:
            """Both labels per text (upper case), highest score first, texts in input order."""
            await charge_items(len(body.text))
            request = _service_body("text", body.text)
            answer, result = await _predict(upstreams, sentiment, request, TextPredictResponse)
            return _reply(answer, None if result is None else _both_labels(result))

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

    for path in (SENTIMENT_ANALYSIS_PATH, DISASTER_CLASSIFIER_PATH):
        if path in served:
            _add_top_label_text_route(others, path, served[path], text_errors, legacy_texts_schema)

    if POSE_CLASSIFIER_PATH in served:
        pose = served[POSE_CLASSIFIER_PATH]
        fetcher = ImageUrlFetcher(
            ImageUrlHosts(settings.image_url_hosts),
            timeout_seconds=settings.image_url_timeout_seconds,
            max_bytes=settings.image_url_max_bytes,
        )

        async def pose_classifier(body: LegacyPoseRequest, upstreams: UpstreamsDep) -> Response:
            """The label with the highest score, and that score, per photo (sent as base64
            `images`, or as `url`s the gateway fetches from the allowed hosts)."""
            if body.url is not None:
                await charge_items(len(body.url))
                fetched = await fetcher.fetch_all(body.url)
                await charge_items(0, sum(len(image) for image in fetched))
                images = [base64.b64encode(image).decode("ascii") for image in fetched]
            else:
                images = body.images or []
                await charge_items(len(images))
            request = _service_body("images", images)
            answer, result = await _predict(upstreams, pose, request, PosePredictResponse)
            reply = None if result is None else LegacyPoseResponse(**_top_labels(result, answer))
            return _reply(answer, reply)

        others.post(
            POSE_CLASSIFIER_PATH,
            response_model=LegacyPoseResponse,
            responses=image_url_errors,
            summary="Top pose label per photo (base64 JSON, or image URLs)",
        )(with_body_schema(pose_classifier, images_schema))

    if CALL_PREDICT_PATH in served:
        _add_emergency_call_routes(others, settings, served[CALL_PREDICT_PATH], access_errors)
    if TONE_PREDICT_PATH in served:
        _add_tone_route(
            others,
            settings,
            served[TONE_PREDICT_PATH],
            access_errors,
            documented=jobs_configured,
        )

    return project, others


def _add_emergency_call_routes(
    router: APIRouter,
    settings: GatewaySettings,
    task: str,
    access_errors: Sequence[type[MtcError]],
) -> None:
    """`POST /predict` (multipart `audio_file`) and `POST /predict_s3` (an S3 URI)."""
    # The upload is read within the audio task's own body limit, before it is parsed.
    upload_route = BoundedJsonRoute.with_max_body_bytes(settings.body_limit_for(task))
    audio_errors = (*_FORWARDING_ERRORS, UnsupportedMediaType, UnusableContent)

    async def predict_call(
        audio_file: Annotated[
            UploadFile, File(description="The recording (WAV; FLAC, OGG and MP3 work too).")
        ],
        upstreams: UpstreamsDep,
        transcript: Annotated[
            str | None,
            Form(description="What was said, if known; otherwise the service transcribes."),
        ] = None,
    ) -> Response:
        """The call's label and every label's probability, from its sound and its words."""
        data = await audio_file.read()
        await charge_items(1, len(data))
        body, content_type = _clip_upload(audio_file, data, transcript or None)
        answer, result = await _predict(
            upstreams, task, body, AudioPredictResponse, content_type=content_type
        )
        reply = result and EmergencyCallPrediction(
            filename=audio_file.filename, **_top_clip(result, task)
        )
        return _reply(answer, reply)

    router.add_api_route(
        CALL_PREDICT_PATH,
        predict_call,
        methods=["POST"],
        response_model=EmergencyCallPrediction,
        responses=error_responses(*audio_errors, *access_errors),
        summary="Classify an emergency call (multipart `audio_file`)",
        operation_id="compat_emergency_call_predict",
        route_class_override=upload_route,
    )

    async def predict_call_s3(body: AudioS3Request, upstreams: UpstreamsDep) -> Response:
        """The label and probabilities of a recording in S3, within the S3 locations open
        to the caller's API key (the rules of `POST /v1/{task}/predict-s3`)."""
        await charge_items(1)
        payload = body.model_dump_json(exclude_none=True).encode()
        answer, result = await _predict(
            upstreams, task, payload, AudioPredictResponse, route="predict-s3"
        )
        reply = result and EmergencyCallS3Prediction(s3_uri=body.s3_uri, **_top_clip(result, task))
        return _reply(answer, reply)

    form_schema = {"$ref": f"#/components/schemas/{AudioS3Request.__name__}"}
    router.add_api_route(
        CALL_PREDICT_S3_PATH,
        predict_call_s3,
        methods=["POST"],
        response_model=EmergencyCallS3Prediction,
        responses=error_responses(*audio_errors, AccessDenied, InputNotFound, *access_errors),
        summary="Classify an emergency call stored in S3 (JSON or form `s3_uri`)",
        operation_id="compat_emergency_call_predict_s3",
        route_class_override=FormOrJsonRoute.with_max_body_bytes(settings.max_json_body_bytes),
        openapi_extra={
            "requestBody": {
                "content": {"application/x-www-form-urlencoded": {"schema": form_schema}}
            }
        },
    )


def _add_tone_route(
    router: APIRouter,
    settings: GatewaySettings,
    task: str,
    access_errors: Sequence[type[MtcError]],
    *,
    documented: bool,
) -> None:
    """`POST /api/predict/`: one text, classified by a batch job that is awaited."""
    wait_seconds = settings.compat_async_wait_seconds

    @router.post(
        TONE_PREDICT_PATH,
        response_model=TonePrediction,
        responses={
            202: {
                "model": JobView,
                "description": "Not done in time: the job, to follow at its `Location`.",
                "headers": {"Location": {"schema": {"type": "string"}}},
            },
            **error_responses(
                InvalidInput,
                UnknownTask,
                InvalidJob,
                ItemTooLarge,
                BodyTooLarge,
                JobLimitReached,
                AsyncPredictionFailed,
                JobsNotConfigured,
                JobQueueUnavailable,
                *access_errors,
            ),
        },
        summary="Rate one text through the job queue (waits for the result)",
        operation_id="compat_tone_predict",
        include_in_schema=documented,
    )
    async def predict_tone(
        body: ToneRequest, desk: JobDeskDep, owner: OwnerDep, s3_scope: S3ScopeDep
    ) -> Response:
        """Queue the text as a job of one item and answer its prediction when the job ends
        within MTC_GATEWAY_COMPAT_ASYNC_WAIT_SECONDS; otherwise 202 with the job and its
        `Location` (`GET /v1/jobs/{id}` has the result once it is done)."""
        await charge_items(1)
        request = JobRequest(task=task, inputs=[body.text])
        job = await asyncio.to_thread(desk.submit, owner, request, s3_scope)
        job = await _await_job(desk, owner, job, wait_seconds)
        if job.state not in FINAL_STATES:
            return JSONResponse(
                job.model_dump(mode="json"),
                status_code=202,
                headers={"location": f"{JOBS_PATH}/{job.id}"},
            )
        if job.state != "succeeded" or not job.results:
            reason = job.error or f"the job was {job.state}"
            raise AsyncPredictionFailed(f"job {job.id} did not classify the text: {reason}")
        top = job.results[0]
        reply = TonePrediction(text=body.text, label=top.label, score=top.score, job_id=job.id)
        return JSONResponse(reply.model_dump())


async def _await_job(desk: JobDesk, owner: str, job: JobView, wait_seconds: float) -> JobView:
    """The job once it has ended, or as it is when `wait_seconds` have passed."""
    deadline = time.monotonic() + wait_seconds
    pause, longest = JOB_POLL_SECONDS
    while job.state not in FINAL_STATES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 2, longest)
        job = await asyncio.to_thread(desk.get, owner, job.id)
    return job


def _top_clip(result: AudioPredictResponse, task: str) -> dict[str, Any]:
    """The top `label` and the `probabilities` (label -> score) of the first clip."""
    if not result.predictions or not result.predictions[0]:
        raise UpstreamInvalidAnswer(f"the service for task '{task}' answered no prediction")
    scores = _highest_first(result.predictions[0])
    return {
        "label": scores[0].label,
        "probabilities": {entry.label: entry.score for entry in scores},
    }


def _clip_upload(upload: UploadFile, data: bytes, transcript: str | None) -> tuple[bytes, str]:
    """The audio service's multipart body (`audio`, and `transcript` when given) and its
    Content-Type."""
    boundary = f"mtc-{secrets.token_hex(16)}"
    filename = _header_safe(upload.filename or "recording.wav")
    media_type = _header_safe(upload.content_type or "application/octet-stream")
    parts = [
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="audio"; filename="{filename}"\r\n'
        f"Content-Type: {media_type}\r\n\r\n".encode(),
        data,
        b"\r\n",
    ]
    if transcript is not None:
        parts += [
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="transcript"\r\n'
            "Content-Type: text/plain; charset=utf-8\r\n\r\n".encode(),
            transcript.encode("utf-8", errors="replace"),
            b"\r\n",
        ]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _header_safe(value: str) -> str:
    """`value` fit for a quoted multipart header (sent as UTF-8, as browsers send names):
    quotes and line breaks escaped as HTML's form encoding does, other control characters
    and lone surrogates dropped."""
    escaped = LONE_SURROGATE.sub("", value)
    escaped = escaped.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    return "".join(character for character in escaped if ord(character) >= 32)


class FormOrJsonRoute(BoundedJsonRoute):
    """A JSON route that also takes its body's string fields as a form (URL-encoded or
    multipart), as an HTML form posts them: the form's fields become the JSON body FastAPI
    validates, so both get the same checks and the same 422s. Empty form fields other than
    the required ones are left out, as a blank optional input means "not given"."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The JSON handler, behind a translation of form bodies."""
        handler = super().get_route_handler()
        schema = self.body_field.field_info.annotation if self.body_field else None
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            return handler
        fields = schema.model_fields

        async def form_or_json(request: Request) -> Response:
            media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media_type not in FORM_MEDIA_TYPES:
                return await handler(request)
            form = await _read_form(request, MAX_FORM_BYTES)
            values = {
                name: value
                for name, value in form.items()
                if name in fields
                and isinstance(value, str)
                and (value or fields[name].is_required())
            }
            return await handler(_json_request(request, json.dumps(values).encode()))

        return form_or_json


async def _read_form(request: Request, max_bytes: int) -> dict[str, Any]:
    """The fields of a form body of at most `max_bytes` (413 past them, 400 if unreadable)."""
    received = 0

    async def bounded_receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > max_bytes:
            raise BodyTooLarge(f"a form body is at most {max_bytes} bytes here")
        return message

    try:
        form = await Request(request.scope, bounded_receive).form(max_files=1, max_fields=16)
    except HTTPException as error:
        raise InvalidInput(f"the form could not be read: {error.detail}") from None
    return dict(form.items())


def _json_request(request: Request, body: bytes) -> Request:
    headers = [
        (name, value)
        for name, value in request.scope["headers"]
        if name not in (b"content-type", b"content-length")
    ]
    headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await request.receive()  # waits for the client's disconnect
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({**request.scope, "headers": headers}, receive)


def _add_top_label_text_route(
    router: APIRouter,
    path: str,
    task: str,
    responses: dict[int | str, dict[str, Any]],
    schema: type[LegacyTextRequest],
) -> None:
    async def classify(body: LegacyTextRequest, upstreams: UpstreamsDep) -> Response:
        await charge_items(len(body.text))
        answer, result = await _predict(
            upstreams, task, _service_body("text", body.text), TextPredictResponse
        )
        reply = result and LegacyTextResponse(text=body.text, **_top_labels(result, answer))
        return _reply(answer, reply)

    classify.__doc__ = f"The label with the highest score, and that score, per text ({task})."
    router.post(
        path,
        response_model=LegacyTextResponse,
        responses=responses,
        summary=f"Top {task} label per text",
        operation_id=f"compat_{task}_{path.rsplit('/', 1)[-1]}",
    )(with_body_schema(classify, schema))


def _service_body(field: str, items: list[str]) -> bytes:
    """The service's JSON body `{field: items}`; 400 `invalid_input` for an item that is
    not valid Unicode (JSON can carry a lone surrogate escape, which no service reads and
    UTF-8 cannot encode)."""
    try:
        return json.dumps({field: items}, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        index = next(i for i, item in enumerate(items) if LONE_SURROGATE.search(item))
        raise InvalidInput(
            f"{field}[{index}] is not valid Unicode (it contains a lone surrogate escape)"
        ) from None


async def _predict(
    upstreams: Upstreams,
    task: str,
    body: bytes,
    expected: type[Prediction],
    *,
    route: str = "predict",
    content_type: str = "application/json",
) -> tuple[UpstreamAnswer, Prediction | None]:
    """The answer of the task's `/v1/{task}/{route}` to `body`, parsed when it is a
    success (None otherwise, see `_reply`)."""
    answer = await upstreams.forward(
        task, f"/v1/{task}/{route}", body=body, content_type=content_type
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


def _both_labels(result: TextPredictResponse) -> BulkPredictResponse:
    """Per text, both labels (upper case), highest score first."""
    predictions = [
        [
            BulkLabelScore(label=entry.label.upper(), score=entry.score)
            for entry in _highest_first(scores)
        ]
        for scores in result.predictions
    ]
    return BulkPredictResponse(predictions=predictions)


def _top_labels(
    result: TextPredictResponse | PosePredictResponse, answer: UpstreamAnswer
) -> dict[str, Any]:
    """The fields of the earlier APIs' answers: the model's name, per item the label with the
    highest score and that score, and the milliseconds the service took."""
    tops = [max(scores, key=lambda entry: entry.score) for scores in result.predictions]
    return {
        "model_name": result.model.name,
        "labels": [top.label for top in tops],
        "scores": [top.score for top in tops],
        "prediction_time": round(answer.elapsed_seconds * 1000),
    }


def _reply(answer: UpstreamAnswer, reply: BaseModel | None) -> Response:
    """`reply` (a success reshaped) with the service's timing headers (the body is rebuilt,
    so its content-type is not relayed); without one, the service's error passed on as it
    came (its status, body and headers)."""
    if reply is None:
        return Response(answer.content, status_code=answer.status_code, headers=answer.headers)
    timings = {name: answer.headers[name] for name in TIMING_HEADERS if name in answer.headers}
    return JSONResponse(reply.model_dump(), headers=timings)
