"""Model services that honour the service contract with canned answers, for gateway tests
(serve them with `tests.support.in_thread_servers.serving`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field


class PredictBody(BaseModel):
    """The text services' request schema."""

    text: list[str] = Field(min_length=1)


class ImagesBody(BaseModel):
    """The pose service's JSON request schema."""

    images: list[str] = Field(min_length=1)


@dataclass
class ReceivedRequest:
    """What a fake service saw of one request, on arrival (before validation)."""

    path: str
    content_type: str | None
    body: bytes
    headers: dict[str, str]


@dataclass
class FakeTextService:
    """A text service with canned answers.

    It records every request under `/v1/` as it arrived, so tests can check what the
    gateway forwarded. The text "overload me" gets the service's 429; `GET
    /v1/{task}/about` answers with the query string it received. With `timeout_answer`,
    every prediction is answered, after the delay, with the 504 `timeout` of a service
    whose deadline (the delay) passed.
    """

    task: str
    predict_delay_seconds: float = 0.0
    timeout_answer: bool = False
    labels: tuple[str, str] = ("positive", "negative")
    scores: tuple[float, float] = (0.75, 0.25)
    received: list[ReceivedRequest] = field(default_factory=list)

    @property
    def predicted(self) -> list[ReceivedRequest]:
        """The requests that reached the predict route."""
        return [request for request in self.received if request.path.endswith("/predict")]

    def model_entry(self) -> dict[str, Any]:
        """This service's entry in `/v1/models`."""
        return {
            "task": self.task,
            "name": f"{self.task}-tiny",
            "version": "3",
            "labels": list(self.labels),
            "limits": {"max_items": 32, "max_chars": 2000},
            "ready": True,
            "status": "ready",
            "reason": None,
        }

    def prediction_body(self, texts: list[str]) -> dict[str, Any]:
        """The answer to a successful predict request for `texts` (highest score first)."""
        ranked = sorted(zip(self.labels, self.scores, strict=True), key=lambda pair: -pair[1])
        scores = [{"label": label, "score": score} for label, score in ranked]
        return {
            "model": {"name": f"{self.task}-tiny", "version": "3"},
            "predictions": [scores for _ in texts],
            "truncated": [],
        }

    def create_app(self) -> FastAPI:
        """The service's FastAPI app."""
        app = FastAPI()

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Any:
            if request.url.path.startswith("/v1/") and request.url.path != "/v1/models":
                self.received.append(
                    ReceivedRequest(
                        request.url.path,
                        request.headers.get("content-type"),
                        await request.body(),
                        dict(request.headers),
                    )
                )
            return await call_next(request)

        @app.post(f"/v1/{self.task}/predict", response_model=None)
        async def predict(
            payload: PredictBody, request: Request, response: Response
        ) -> dict[str, Any] | JSONResponse:
            await asyncio.sleep(self.predict_delay_seconds)
            if self.timeout_answer:
                return JSONResponse(
                    {"detail": "the model did not finish in time", "error_type": "timeout"},
                    status_code=504,
                )
            if "overload me" in payload.text:
                return JSONResponse(
                    {"detail": "queue full", "error_type": "overloaded"},
                    status_code=429,
                    headers={"retry-after": "1"},
                )
            response.headers["x-inference-time"] = "12.5"
            response.headers["x-queue-time"] = "0.5"
            return self.prediction_body(payload.text)

        @app.get(f"/v1/{self.task}/about")
        async def about(request: Request) -> dict[str, str]:
            return {"task": self.task, "query": request.url.query}

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"models": [self.model_entry()]}

        @app.get("/health/ready")
        async def ready() -> dict[str, str]:
            return {"status": "ready"}

        return app


@dataclass
class FakePoseService:
    """An image service answering base64 JSON with fixed labels and keypoints."""

    task: str = "pose"
    received: list[ImagesBody] = field(default_factory=list)

    def prediction_body(self, count: int) -> dict[str, Any]:
        """The answer for `count` images."""
        scores = [
            {"label": "standing", "score": 0.9},
            {"label": "sitting", "score": 0.07},
            {"label": "lying", "score": 0.03},
        ]
        keypoint = {"name": "nose", "x": 0.5, "y": 0.1, "visibility": 0.99}
        return {
            "model": {"name": "pose-fake", "version": "7"},
            "predictions": [scores] * count,
            "keypoints": [[keypoint]] * count,
        }

    def create_app(self) -> FastAPI:
        """The service's FastAPI app."""
        app = FastAPI()

        @app.post(f"/v1/{self.task}/predict")
        async def predict(payload: ImagesBody, response: Response) -> dict[str, Any]:
            self.received.append(payload)
            response.headers["x-inference-time"] = "40.0"
            return self.prediction_body(len(payload.images))

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            entry = {
                "task": self.task,
                "name": "pose-fake",
                "version": "7",
                "labels": ["standing", "sitting", "lying"],
                "limits": {},
                "ready": True,
                "status": "ready",
                "reason": None,
            }
            return {"models": [entry]}

        return app


@dataclass
class ReceivedClip:
    """One `audio` part of a multipart request, with the transcript sent beside it."""

    filename: str | None
    data: bytes
    transcript: str | None


@dataclass
class ReceivedS3Request:
    """One `predict-s3` request: its JSON body and the S3 scope header the gateway set."""

    body: dict[str, Any]
    s3_scope: str | None


@dataclass
class FakeAudioService:
    """An audio service answering multipart uploads (`audio` files, optional `transcript`
    fields) with fixed scores; clips without a transcript get a made-up recognised one.
    `predict-s3` answers the same for URIs under `s3://calls/`, 404 `input_not_found`
    for any other."""

    task: str = "audio"
    received: list[ReceivedClip] = field(default_factory=list)
    received_s3: list[ReceivedS3Request] = field(default_factory=list)
    recognised_transcript: str = "there is smoke coming from the kitchen"

    @staticmethod
    def prediction_body(clips: list[dict[str, Any]]) -> dict[str, Any]:
        """The answer for `clips` (fused scores: emergency 0.8, routine 0.2)."""
        fused = [{"label": "emergency", "score": 0.8}, {"label": "routine", "score": 0.2}]
        return {
            "model": {"name": "calls-fake", "version": "2"},
            "predictions": [fused] * len(clips),
            "clips": clips,
        }

    def create_app(self) -> FastAPI:
        """The service's FastAPI app."""
        app = FastAPI()

        @app.post(f"/v1/{self.task}/predict")
        async def predict(request: Request) -> dict[str, Any]:
            form = await request.form()
            files = form.getlist("audio")
            transcripts = [str(value) for value in form.getlist("transcript")]
            clips = []
            for index, upload in enumerate(files):
                assert not isinstance(upload, str), "audio parts must be files"
                transcript = transcripts[index] if index < len(transcripts) else None
                self.received.append(ReceivedClip(upload.filename, await upload.read(), transcript))
                clips.append(
                    {
                        "audio": [
                            {"label": "emergency", "score": 0.6},
                            {"label": "routine", "score": 0.4},
                        ],
                        "text": [
                            {"label": "emergency", "score": 0.9},
                            {"label": "routine", "score": 0.1},
                        ],
                        "transcript": transcript or self.recognised_transcript,
                        "transcript_source": "request" if transcript else "asr",
                        "duration_seconds": 1.5,
                    }
                )
            return self.prediction_body(clips)

        @app.post(f"/v1/{self.task}/predict-s3", response_model=None)
        async def predict_s3(request: Request) -> dict[str, Any] | JSONResponse:
            body = await request.json()
            self.received_s3.append(ReceivedS3Request(body, request.headers.get("x-mtc-s3-scope")))
            uri = str(body.get("s3_uri", ""))
            if not uri.startswith("s3://calls/"):
                return JSONResponse(
                    {"detail": f"{uri}: no such object", "error_type": "input_not_found"},
                    status_code=404,
                )
            transcript = body.get("transcript")
            clip = {
                "audio": [{"label": "urgent", "score": 0.7}, {"label": "calm", "score": 0.3}],
                "text": None,
                "transcript": transcript or self.recognised_transcript,
                "transcript_source": "request" if transcript else "asr",
                "duration_seconds": 2.0,
            }
            return self.prediction_body([clip])

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            entry = {
                "task": self.task,
                "name": "calls-fake",
                "version": "2",
                "labels": ["emergency", "routine"],
                "limits": {},
                "ready": True,
                "status": "ready",
                "reason": None,
            }
            return {"models": [entry]}

        return app
