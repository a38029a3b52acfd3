"""HTTP API of the audio service, on the core app.

- `POST /v1/{task}/predict`: multipart, one or more `audio` file parts and optionally one
  `transcript` field per clip;
- `POST /v1/{task}/predict-s3`: JSON `{"s3_uri": ..., "transcript": ...}` for a clip in an
  allow-listed bucket.

Files are validated and decoded here, before anything is queued; the model (ASR, both
classifiers, fusion) runs in the serving kit's batching queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.audio.decoding import AudioLimits, DecodedAudio, decode_audio
from services.audio.models.emergency_call import CallClip, EmergencyCallModel, FusedPrediction
from services.audio.s3_input import S3ClipReader
from services.audio.settings import AudioSettings
from services.core.api import DataPlaneDep, create_app, timing_headers
from services.core.dataplane import DataPlane, PredictionResult
from services.core.decode_workers import DecodeWorkers
from services.core.errors import (
    AccessDenied,
    BatchTooLarge,
    BodyTooLarge,
    InputNotFound,
    InvalidInput,
    ItemTooLarge,
    ModelNotReady,
    Overloaded,
    RequestTimedOut,
    UnsupportedMediaType,
    UnusableContent,
    UpstreamUnavailable,
)
from services.core.http_errors import error_responses
from services.core.model import LabelScore
from services.core.open_inference import BytesTensor, InputTensor, ItemLimit, TensorAdapter
from services.wire.contracts import (
    AUDIO_FILE_FIELD,
    MULTIPART_AUDIO_SCHEMA,
    TRANSCRIPT_FIELD,
    AudioPredictResponse,
    AudioS3Request,
)
from services.wire.s3_locations import S3_SCOPE_HEADER, scope_from_header

_DECODE_ERRORS = (
    InvalidInput,
    BatchTooLarge,
    BodyTooLarge,
    ItemTooLarge,
    UnsupportedMediaType,
    UnusableContent,
)
_SERVING_ERRORS = (Overloaded, ModelNotReady, RequestTimedOut)


def _missing(field: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "missing", "loc": ("body", field), "msg": "Field required", "input": None}]
    )


class ClipUploadReader:
    """Reads a predict request's clips and transcripts and decodes the clips."""

    def __init__(self, settings: AudioSettings, sample_rate: int) -> None:
        self.settings = settings
        self.sample_rate = sample_rate
        self.limits = AudioLimits(
            max_bytes=settings.max_audio_bytes,
            max_seconds=settings.max_audio_seconds,
            min_seconds=settings.min_audio_seconds,
            silence_threshold_dbfs=settings.silence_threshold_dbfs,
            max_decoded_bytes=settings.decoded_bytes_limit,
        )

    def transcript(self, label: str, value: str | None) -> str | None:
        """A usable transcript, or None (blank means: not given)."""
        if value is None or not value.strip():
            return None
        if len(value) > self.settings.max_transcript_chars:
            raise ItemTooLarge(
                f"{label}: {len(value)} characters; the limit is "
                f"{self.settings.max_transcript_chars} (MTC_MAX_TRANSCRIPT_CHARS)"
            )
        if "\x00" in value:
            raise InvalidInput(f"{label}: contains a NUL character")
        return value.strip()

    async def read_multipart(self, request: Request) -> list[tuple[str, bytes, str | None]]:
        """(label, file bytes, transcript) per clip, in order."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "multipart/form-data":
            raise UnsupportedMediaType(
                f"Content-Type {content_type or 'none'!r} is not accepted; send "
                f"multipart/form-data with an `{AUDIO_FILE_FIELD}` file part (and optionally "
                f"a `{TRANSCRIPT_FIELD}` field), or use POST .../predict-s3 with JSON"
            )
        limit = self.settings.max_clips_per_request
        try:
            form = await request.form(max_files=limit + 1, max_fields=limit + 8)
        except StarletteHTTPException as exc:
            raise InvalidInput(f"malformed multipart body: {exc.detail}") from None
        try:
            parts = form.getlist(AUDIO_FILE_FIELD)
            if not parts:
                raise _missing(AUDIO_FILE_FIELD)
            if len(parts) > limit:
                raise BatchTooLarge(
                    f"{len(parts)} clips in one request; the limit is {limit} "
                    "(MTC_MAX_CLIPS_PER_REQUEST)"
                )
            transcripts = form.getlist(TRANSCRIPT_FIELD)
            if transcripts and len(transcripts) != len(parts):
                raise InvalidInput(
                    f"{len(transcripts)} `{TRANSCRIPT_FIELD}` fields for {len(parts)} clips; "
                    "send none, or one per clip in the same order"
                )
            clips: list[tuple[str, bytes, str | None]] = []
            for index, part in enumerate(parts):
                if not isinstance(part, UploadFile):
                    raise InvalidInput(
                        f"{AUDIO_FILE_FIELD}[{index}] is a plain form field; send it as a file"
                    )
                label = f"{AUDIO_FILE_FIELD}[{index}]" + (
                    f" ({part.filename})" if part.filename else ""
                )
                given: str | None = None
                if transcripts:
                    value = transcripts[index]
                    if not isinstance(value, str):
                        raise InvalidInput(f"{TRANSCRIPT_FIELD}[{index}] must be a text field")
                    given = self.transcript(f"{TRANSCRIPT_FIELD}[{index}]", value)
                # At most one byte past the limit: enough to know it is too large.
                clips.append((label, await part.read(self.limits.max_bytes + 1), given))
            return clips
        finally:
            await form.close()

    def decode(self, label: str, data: bytes) -> DecodedAudio:
        """One validated clip at the model's sample rate."""
        return decode_audio(data, label=label, limits=self.limits, sample_rate=self.sample_rate)

    async def decode_clips(
        self, decoders: DecodeWorkers, uploads: Sequence[tuple[str, bytes, str | None]]
    ) -> list[CallClip]:
        """(label, file bytes, transcript) per clip, decoded into the model's clips."""
        # One clip at a time per request: the decode threads are shared by all requests.
        deadline = decoders.deadline()
        clips: list[CallClip] = []
        for label, data, transcript in uploads:
            audio = await decoders.run(partial(self.decode, label, data), deadline=deadline)
            clips.append(CallClip(audio.samples, audio.sample_rate, transcript))
        return clips


def _ranking(scores: Sequence[LabelScore]) -> list[dict[str, Any]]:
    return [{"label": s.label, "score": s.score} for s in scores]


def _response(model: EmergencyCallModel, result: PredictionResult[FusedPrediction]) -> JSONResponse:
    meta = model.metadata
    clips = [
        {
            "audio": _ranking(prediction.audio),
            "text": None if prediction.text is None else _ranking(prediction.text),
            "transcript": prediction.transcript,
            "transcript_source": prediction.transcript_source,
            "transcript_language": prediction.transcript_language,
            "duration_seconds": prediction.duration_seconds,
        }
        for prediction in result.predictions
    ]
    body = {
        "model": {"name": meta.name, "version": meta.version},
        "predictions": [_ranking(prediction.scores) for prediction in result.predictions],
        "clips": clips,
    }
    return JSONResponse(
        body, headers=timing_headers(result.queue_seconds, result.inference_seconds)
    )


class ClipTensorAdapter(TensorAdapter):
    """Open Inference inputs `audio` (BYTES, one encoded file per element; base64 strings in
    JSON) and optionally `transcript` (BYTES, UTF-8, one per clip; empty: transcribe): the
    clips of `/v1/{task}/predict`, with its checks and limits."""

    def __init__(
        self, settings: AudioSettings, model: EmergencyCallModel, decoders: DecodeWorkers
    ) -> None:
        super().__init__(
            [
                InputTensor(AUDIO_FILE_FIELD, "One WAV, FLAC, OGG/Vorbis or MP3 file per element."),
                InputTensor(
                    TRANSCRIPT_FIELD,
                    "What was said in each clip (UTF-8); empty: the service transcribes it.",
                    required=False,
                ),
            ],
            ItemLimit(settings.max_clips_per_request, "clips", "MTC_MAX_CLIPS_PER_REQUEST"),
        )
        self.settings = settings
        self.model = model
        self.decoders = decoders

    async def predict(
        self, tensors: Mapping[str, BytesTensor], plane: DataPlane[Any, Any]
    ) -> PredictionResult[FusedPrediction]:
        """Fused predictions of the clips."""
        reader = ClipUploadReader(self.settings, self.model.features.sample_rate)
        files = tensors[AUDIO_FILE_FIELD].files(reader.limits.max_bytes, "MTC_MAX_AUDIO_BYTES")
        given = tensors.get(TRANSCRIPT_FIELD)
        transcripts = (
            [reader.transcript(given.label(i), text) for i, text in enumerate(given.texts())]
            if given is not None
            else [None] * len(files)
        )
        uploads = [
            (label, data, transcript)
            for (label, data), transcript in zip(files, transcripts, strict=True)
        ]
        return await plane.predict(await reader.decode_clips(self.decoders, uploads))


def audio_routes(
    settings: AudioSettings, model: EmergencyCallModel, decoders: DecodeWorkers
) -> Any:
    """The route registrar for `create_app`; `decoders` are shared with the `/v2` routes."""
    s3 = S3ClipReader(
        settings.s3_input_allowlist,
        max_bytes=settings.max_audio_bytes,
        endpoint_url=settings.s3_endpoint_url,
        timeout_seconds=settings.s3_timeout_seconds,
    )

    def register(app: FastAPI, dataplane: DataPlane[Any, Any]) -> None:
        def ready_reader() -> ClipUploadReader:
            dataplane.require_ready()
            return ClipUploadReader(settings, model.features.sample_rate)

        @app.post(
            f"/v1/{settings.task}/predict",
            tags=[settings.task],
            response_model=AudioPredictResponse,
            responses=error_responses(*_DECODE_ERRORS, *_SERVING_ERRORS),
            summary=f"Classify emergency calls from recordings ({settings.task})",
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": MULTIPART_AUDIO_SCHEMA}},
                }
            },
        )
        async def predict(request: Request, plane: DataPlaneDep) -> JSONResponse:
            """Classify each clip from its sound and its words (sent, or transcribed here);
            fused call-label scores first, then each branch's scores (the audio branch's
            are `calm` / `urgent`) and the transcript."""
            reader = ready_reader()
            uploads = await reader.read_multipart(request)
            clips = await reader.decode_clips(decoders, uploads)
            return _response(model, await plane.predict(clips))

        @app.post(
            f"/v1/{settings.task}/predict-s3",
            tags=[settings.task],
            response_model=AudioPredictResponse,
            responses=error_responses(
                *_DECODE_ERRORS, AccessDenied, InputNotFound, UpstreamUnavailable, *_SERVING_ERRORS
            ),
            summary=f"Classify an emergency call stored in S3 ({settings.task})",
        )
        async def predict_s3(
            body: AudioS3Request, plane: DataPlaneDep, request: Request
        ) -> JSONResponse:
            """Fetch the clip from an allow-listed bucket/prefix open to the caller's API
            key, then as `predict`. Outside them or missing: the same 404."""
            reader = ready_reader()
            transcript = reader.transcript(TRANSCRIPT_FIELD, body.transcript)
            # Set by the gateway from the caller's API key (see S3_SCOPE_HEADER).
            scope = scope_from_header(request.headers.get(S3_SCOPE_HEADER))

            # The download waits on the network, so it does not hold a decode thread.
            data = await asyncio.to_thread(s3.read, body.s3_uri, scope)
            clips = await reader.decode_clips(decoders, [(body.s3_uri, data, transcript)])
            return _response(model, await plane.predict(clips))

    return register


def build_app(settings: AudioSettings, model: EmergencyCallModel | None = None) -> FastAPI:
    """The audio service application."""
    limits = {
        "max_audio_bytes": settings.max_audio_bytes,
        "max_audio_seconds": settings.max_audio_seconds,
        "max_audio_decoded_bytes": settings.decoded_bytes_limit,
        "min_audio_seconds": settings.min_audio_seconds,
        "max_clips_per_request": settings.max_clips_per_request,
        "max_transcript_chars": settings.max_transcript_chars,
        "max_body_bytes": settings.max_body_bytes,
    }
    classifier = model or EmergencyCallModel(
        asr_enabled=settings.asr_enabled,
        asr_model_dir=settings.asr_model_dir,
        asr_language=settings.asr_language,
        asr_threads=settings.asr_threads,
        torch_threads=settings.threads_per_worker,
        korean_transcripts_enabled=settings.korean_transcripts_enabled,
        limits=limits,
    )
    # Shared by both APIs: one bound on the decode threads, whichever route a clip came by.
    decoders = DecodeWorkers(
        settings.max_concurrent_decodes,
        wait_seconds=settings.request_timeout_seconds,
        setting="MTC_MAX_CONCURRENT_DECODES",
    )
    return create_app(
        settings,
        classifier,
        register_routes=audio_routes(settings, classifier, decoders),
        tensor_adapter=ClipTensorAdapter(settings, classifier, decoders),
        title=f"mtc audio service: {settings.task}",
        description="Emergency-call classification from recordings: a calm/urgent classifier "
        "over how the call sounds and a transcript classifier over what was said (Whisper ASR "
        "when no transcript is sent), fused into one decision over the call labels.",
    )
