"""HTTP API of the text service: `POST /v1/{task}/predict` on top of the core app."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.core.api import DataPlaneDep, PredictionResponse, create_app, timing_headers
from services.core.contracts import TextPredictRequest, TextPredictResponse
from services.core.dataplane import DataPlane
from services.core.errors import (
    BatchTooLarge,
    BodyTooLarge,
    InvalidInput,
    ItemTooLarge,
    ModelNotReady,
    Overloaded,
    RequestTimedOut,
)
from services.core.http_errors import error_responses
from services.core.json_body import with_body_schema
from services.core.model import LabelScore
from services.text.models.onnx_classifier import OnnxSequenceClassifier
from services.text.models.sequence_classifier import SequenceClassifier
from services.text.settings import TextSettings

INLINE_TOKENIZE_CHARS = 4_000
"""Requests with at most this many characters are tokenized on the event loop (well under
a millisecond); larger ones in a thread, so they never stall other requests."""


def text_routes(settings: TextSettings, model: SequenceClassifier) -> Any:
    """The route registrar for `create_app`."""

    async def tokenized(count: Callable[[Sequence[str]], list[int]], texts: list[str]) -> list[int]:
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            # A thread hop costs more than tokenizing a few short texts right here.
            return count(texts)
        return await asyncio.to_thread(count, texts)

    async def token_costs(texts: list[str]) -> list[int]:
        """Batching costs (token counts) of the texts the cache did not answer."""
        return await tokenized(model.costs, texts)

    async def truncated_texts(
        texts: Sequence[str], predictions: Sequence[Sequence[LabelScore]], limit: int
    ) -> list[int]:
        """Indices of the texts longer than the model reads. Predictions carry their
        text's token count; only cache entries written without one are tokenized again."""
        counts: list[int | None] = [getattr(p, "tokens", None) for p in predictions]
        unknown = [index for index, count in enumerate(counts) if count is None]
        if unknown:
            recounted = await tokenized(model.token_counts, [texts[index] for index in unknown])
            for index, count in zip(unknown, recounted, strict=True):
                counts[index] = count
        return [index for index, count in enumerate(counts) if count is not None and count > limit]

    # The list cap of the schema is the configured limit: validating an over-long list
    # stops as soon as it passes the cap, whatever its length.
    request_schema = TextPredictRequest.with_limit(settings.max_items_per_request)

    def register(app: FastAPI, dataplane: DataPlane[Any]) -> None:
        async def predict(body: TextPredictRequest, plane: DataPlaneDep) -> JSONResponse:
            """Classify each text; every label is returned with its score, highest first."""
            texts = body.text
            if not model.ready:
                raise ModelNotReady(f"the {settings.task} model is not loaded yet")
            for index, text in enumerate(texts):
                if not text.isascii():
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError:
                        # JSON can carry lone surrogates ("\ud800"); no tokenizer reads them.
                        raise InvalidInput(
                            f"text[{index}] is not valid Unicode (it contains a lone "
                            "surrogate escape)"
                        ) from None
                if len(text) > settings.max_text_chars:
                    raise ItemTooLarge(
                        f"text[{index}] has {len(text)} characters; the limit is "
                        f"{settings.max_text_chars} (MTC_MAX_TEXT_CHARS)"
                    )
            result = await plane.predict(texts, costs_of=token_costs)
            limit = model.max_tokens
            meta = model.metadata
            response = {
                "model": {"name": meta.name, "version": meta.version},
                "predictions": [
                    [{"label": s.label, "score": s.score} for s in scores]
                    for scores in result.predictions
                ],
                "truncated": await truncated_texts(texts, result.predictions, limit),
            }
            return PredictionResponse(
                response, headers=timing_headers(result.queue_seconds, result.inference_seconds)
            )

        app.post(
            f"/v1/{settings.task}/predict",
            tags=[settings.task],
            response_model=TextPredictResponse,
            responses=error_responses(
                BatchTooLarge,
                BodyTooLarge,
                InvalidInput,
                ItemTooLarge,
                Overloaded,
                ModelNotReady,
                RequestTimedOut,
            ),
            summary=f"Classify texts ({settings.task})",
        )(with_body_schema(predict, request_schema))

    return register


def build_app(settings: TextSettings, model: SequenceClassifier | None = None) -> FastAPI:
    """The text service application for one task."""
    limits = {
        "max_items_per_request": settings.max_items_per_request,
        "max_text_chars": settings.max_text_chars,
        "max_body_bytes": settings.max_body_bytes,
    }
    classifier = model
    if classifier is None and settings.runtime == "onnx":
        classifier = OnnxSequenceClassifier(
            max_tokens=settings.max_tokens, torch_threads=settings.threads_per_worker, limits=limits
        )
    elif classifier is None:
        classifier = SequenceClassifier(
            max_tokens=settings.max_tokens,
            torch_threads=settings.threads_per_worker,
            limits=limits,
            dtype=settings.resolved_torch_dtype,
            graph=settings.torch_graph,
        )
    return create_app(
        settings,
        classifier,
        register_routes=text_routes(settings, classifier),
        title=f"mtc text service: {settings.task}",
        description="Text classification with a Hugging Face sequence-classification model.",
    )
