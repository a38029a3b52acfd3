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
from fastapi.responses import JSONResponse

from services.audio.decoding import AudioLimits, decode_audio
from services.audio.kind import KIND
from services.audio.models.emergency_call import CallClip, EmergencyCallModel, FusedPrediction
from services.audio.s3_input import S3ClipReader
from services.audio.settings import AudioSettings
from services.core.api import (
    DataPlaneDep,
    create_app,
    form_files,
    multipart_form,
    prediction_response,
    ranking,
    read_file_part,
)
from services.core.dataplane import DataPlane, ItemLimit, PredictionResult
from services.core.decode_workers import DecodeWorkers
from services.core.errors import (
    AccessDenied,
    InputNotFound,
    InvalidInput,
    ItemTooLarge,
    UnsupportedMediaType,
    UnusableContent,
    UpstreamUnavailable,
)
from services.core.http_errors import error_responses
from services.core.kinds import SERVING_ERRORS, UPLOAD_ERRORS
from services.core.open_inference import BytesTensor, InputTensor, TensorAdapter
from services.wire.contracts import (
    AUDIO_FILE_FIELD,
    TRANSCRIPT_FIELD,
    AudioPredictResponse,
    AudioS3Request,
)
from services.wire.s3_locations import S3_SCOPE_HEADER, scope_from_header

_DECODE_ERRORS = (*UPLOAD_ERRORS, UnusableContent)


class ClipUploadReader:
    """Reads a request's clips and transcripts and decodes the clips."""

    def __init__(self, settings: AudioSettings, model: EmergencyCallModel) -> None:
        self.settings = settings
        self.model = model
        self.item_limit = ItemLimit(
            settings.max_clips_per_request, "clips", "MTC_MAX_CLIPS_PER_REQUEST"
        )
        self.limits = AudioLimits(
            max_bytes=settings.max_audio_bytes,
            max_seconds=settings.max_audio_seconds,
            min_seconds=settings.min_audio_seconds,
            silence_threshold_dbfs=settings.silence_threshold_dbfs,
            max_decoded_bytes=settings.decoded_bytes_limit,
        )
        self.decoders = DecodeWorkers(
            settings.max_concurrent_decodes,
            wait_seconds=settings.request_timeout_seconds,
            setting="MTC_MAX_CONCURRENT_DECODES",
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
        limit = self.item_limit.count
        async with multipart_form(request, max_files=limit + 1, max_fields=limit + 8) as form:
            parts = form_files(form, AUDIO_FILE_FIELD, self.item_limit)
            transcripts = form.getlist(TRANSCRIPT_FIELD)
            if transcripts and len(transcripts) != len(parts):
                raise InvalidInput(
                    f"{len(transcripts)} `{TRANSCRIPT_FIELD}` fields for {len(parts)} clips; "
                    "send none, or one per clip in the same order"
                )
            clips: list[tuple[str, bytes, str | None]] = []
            for index, part in enumerate(parts):
                label, data = await read_file_part(
                    AUDIO_FILE_FIELD, index, part, self.limits.max_bytes, "a file"
                )
                given: str | None = None
                if transcripts:
                    value = transcripts[index]
                    if not isinstance(value, str):
                        raise InvalidInput(f"{TRANSCRIPT_FIELD}[{index}] must be a text field")
                    given = self.transcript(f"{TRANSCRIPT_FIELD}[{index}]", value)
                clips.append((label, data, given))
            return clips

    async def decode_clips(
        self, uploads: Sequence[tuple[str, bytes, str | None]]
    ) -> list[CallClip]:
        """(label, file bytes, transcript) per clip, decoded at the model's sample rate into
        its clips."""
        rate = self.model.features.sample_rate
        decoded = await self.decoders.run_each(
            partial(decode_audio, data, label=label, limits=self.limits, sample_rate=rate)
            for label, data, _ in uploads
        )
        return [
            CallClip(audio.samples, audio.sample_rate, transcript)
            for audio, (_, _, transcript) in zip(decoded, uploads, strict=True)
        ]

    async def predict_tensors(
        self, tensors: Mapping[str, BytesTensor], plane: DataPlane[Any, Any]
    ) -> PredictionResult[FusedPrediction]:
        """Fused predictions of Open Inference inputs `audio` (BYTES, one encoded file per
        element; base64 strings in JSON) and optionally `transcript` (BYTES, UTF-8, one per
        clip; empty: transcribe), with the checks and limits of `/v1/{task}/predict`."""
        files = tensors[AUDIO_FILE_FIELD].files(self.limits.max_bytes, "MTC_MAX_AUDIO_BYTES")
        given = tensors.get(TRANSCRIPT_FIELD)
        transcripts = (
            [self.transcript(given.label(i), text) for i, text in enumerate(given.texts())]
            if given is not None
            else [None] * len(files)
        )
        uploads = [
            (label, data, transcript)
            for (label, data), transcript in zip(files, transcripts, strict=True)
        ]
        return await plane.predict(await self.decode_clips(uploads))


def _response(model: EmergencyCallModel, result: PredictionResult[FusedPrediction]) -> JSONResponse:
    clips = [
        {
            "audio": ranking(prediction.audio),
            "text": None if prediction.text is None else ranking(prediction.text),
            "transcript": prediction.transcript,
            "transcript_source": prediction.transcript_source,
            "transcript_language": prediction.transcript_language,
            "duration_seconds": prediction.duration_seconds,
        }
        for prediction in result.predictions
    ]
    return prediction_response(model, result, clips=clips)


def audio_routes(
    settings: AudioSettings, model: EmergencyCallModel, reader: ClipUploadReader
) -> Any:
    """The route registrar for `create_app`; `reader` is shared with the `/v2` routes."""
    s3 = S3ClipReader(
        settings.s3_input_allowlist,
        max_bytes=settings.max_audio_bytes,
        endpoint_url=settings.s3_endpoint_url,
        timeout_seconds=settings.s3_timeout_seconds,
    )

    def register(app: FastAPI, dataplane: DataPlane[Any, Any]) -> None:
        @app.post(
            f"/v1/{settings.task}/predict",
            tags=[settings.task],
            response_model=AudioPredictResponse,
            responses=error_responses(*_DECODE_ERRORS, *SERVING_ERRORS),
            summary=f"Classify emergency calls from recordings ({settings.task})",
            openapi_extra={"requestBody": KIND.routes[0].request_body},
        )
        async def predict(request: Request, plane: DataPlaneDep) -> JSONResponse:
            """Classify each clip from its sound and its words (sent, or transcribed here);
            fused call-label scores first, then each branch's scores (the audio branch's
            are `calm` / `urgent`) and the transcript."""
            plane.require_ready()
            clips = await reader.decode_clips(await reader.read_multipart(request))
            return _response(model, await plane.predict(clips))

        @app.post(
            f"/v1/{settings.task}/predict-s3",
            tags=[settings.task],
            response_model=AudioPredictResponse,
            responses=error_responses(
                *_DECODE_ERRORS, AccessDenied, InputNotFound, UpstreamUnavailable, *SERVING_ERRORS
            ),
            summary=f"Classify an emergency call stored in S3 ({settings.task})",
        )
        async def predict_s3(
            body: AudioS3Request, plane: DataPlaneDep, request: Request
        ) -> JSONResponse:
            """Fetch the clip from an allow-listed bucket/prefix open to the caller's API
            key, then as `predict`. Outside them or missing: the same 404."""
            plane.require_ready()
            transcript = reader.transcript(TRANSCRIPT_FIELD, body.transcript)
            # Set by the gateway from the caller's API key (see S3_SCOPE_HEADER).
            scope = scope_from_header(request.headers.get(S3_SCOPE_HEADER))

            # The download waits on the network, so it does not hold a decode thread.
            data = await asyncio.to_thread(s3.read, body.s3_uri, scope)
            clips = await reader.decode_clips([(body.s3_uri, data, transcript)])
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
    reader = ClipUploadReader(settings, classifier)
    return create_app(
        settings,
        classifier,
        register_routes=audio_routes(settings, classifier, reader),
        tensor_adapter=TensorAdapter(
            (InputTensor(AUDIO_FILE_FIELD), InputTensor(TRANSCRIPT_FIELD, required=False)),
            reader.item_limit,
            reader.predict_tensors,
        ),
        title=f"mtc audio service: {settings.task}",
        description="Emergency-call classification from recordings: a calm/urgent classifier "
        "over how the call sounds and a transcript classifier over what was said (Whisper ASR "
        "when no transcript is sent), fused into one decision over the call labels.",
    )
