"""A text service for job tests: predictable labels, scripted failures, a record of every
chunk it was sent (serve it with `tests.support.in_thread_servers.serving`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

LABELS = ("negative", "positive")


class PredictBody(BaseModel):
    """The text services' request schema."""

    text: list[str] = Field(min_length=1)


def expected_label(text: str) -> str:
    """The label this service gives `text`: positive when it contains "good"."""
    return "positive" if "good" in text else "negative"


@dataclass
class JobTextService:
    """Answers `POST /v1/{task}/predict` with `expected_label` of each text (score 0.9),
    unless `failures` holds statuses to answer first (one per request, in order).
    `before_answer` runs on each predict request (e.g. to cancel a job mid-way)."""

    task: str = "sentiment"
    failures: list[int] = field(default_factory=list)
    before_answer: Callable[[int], None] | None = None
    chunks: list[list[str]] = field(default_factory=list)
    """Texts of each request answered 200, in arrival order."""
    refused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create_app(self) -> FastAPI:
        """The service's FastAPI app."""
        app = FastAPI()

        @app.post(f"/v1/{self.task}/predict", response_model=None)
        def predict(payload: PredictBody) -> dict[str, Any] | JSONResponse:
            with self._lock:
                if self.failures:
                    status = self.failures.pop(0)
                    self.refused += 1
                    return JSONResponse(
                        {"detail": f"scripted {status}", "error_type": "scripted"},
                        status_code=status,
                        headers={"retry-after": "0"} if status in (429, 503) else {},
                    )
                calls = len(self.chunks)
            if self.before_answer is not None:
                self.before_answer(calls)
            with self._lock:
                self.chunks.append(list(payload.text))
            return {
                "model": {"name": f"{self.task}-scripted", "version": "1"},
                "predictions": [_scores(text) for text in payload.text],
                "truncated": [],
            }

        @app.get("/v1/models")
        def models() -> dict[str, Any]:
            entry = {
                "task": self.task,
                "name": f"{self.task}-scripted",
                "version": "1",
                "labels": list(LABELS),
                "limits": {},
                "ready": True,
                "status": "ready",
                "reason": None,
            }
            return {"models": [entry]}

        @app.get("/health/ready")
        def ready() -> dict[str, str]:
            return {"status": "ready"}

        return app


def _scores(text: str) -> list[dict[str, Any]]:
    best = expected_label(text)
    other = next(label for label in LABELS if label != best)
    return [{"label": best, "score": 0.9}, {"label": other, "score": 0.1}]
