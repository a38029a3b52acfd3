"""HTTP API of the text service: `POST /v1/{task}/predict` on top of the core app."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.core.api import DataPlaneDep, PredictionResponse, create_app, prediction_response
from services.core.dataplane import DataPlane, ItemLimit, PredictionResult
from services.core.errors import BatchTooLarge, BodyTooLarge, InvalidInput, ItemTooLarge
from services.core.http_errors import error_responses
from services.core.json_body import with_body_schema
from services.core.kinds import SERVING_ERRORS
from services.core.open_inference import BytesTensor, InputTensor, TensorAdapter
from services.text.models.onnx_classifier import OnnxSequenceClassifier
from services.text.models.sequence_classifier import (
    SequenceClassifier,
    TextInput,
    TextItem,
    TextPrediction,
    text_of,
)
from services.text.settings import TextSettings
from services.wire.contracts import TextPredictRequest, TextPredictResponse

INLINE_TOKENIZE_CHARS = 4_000
"""Requests with at most this many characters are tokenized on the event loop (well under
a millisecond); larger ones in a thread, so they never stall other requests."""


async def token_costs(model: SequenceClassifier, items: list[TextInput]) -> list[int]:
    """Batching costs (token counts) of the texts the cache did not answer; each `TextItem`
    keeps its tokens for the model. Counted on the event loop for a few short texts, else
    in a thread."""
    if sum(len(text_of(item)) for item in items) <= INLINE_TOKENIZE_CHARS:
        # A thread hop costs more than tokenizing a few short texts right here.
        return model.costs(items)
    return await asyncio.to_thread(model.costs, items)


async def predict_texts(
    texts: Sequence[str],
    plane: DataPlane[Any, Any],
    settings: TextSettings,
    model: SequenceClassifier,
) -> PredictionResult[TextPrediction]:
    """Ranked predictions of the texts, for both APIs. Texts no tokenizer reads are refused
    (400), and so are texts longer than `MTC_MAX_TEXT_CHARS` (413)."""
    for index, text in enumerate(texts):
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # JSON can carry lone surrogates ("\ud800"); no tokenizer reads them.
                raise InvalidInput(
                    f"text[{index}] is not valid Unicode (it contains a lone surrogate escape)"
                ) from None
        if len(text) > settings.max_text_chars:
            raise ItemTooLarge(
                f"text[{index}] has {len(text)} characters; the limit is "
                f"{settings.max_text_chars} (MTC_MAX_TEXT_CHARS)"
            )
    return await plane.predict(
        [TextItem(text) for text in texts], costs_of=partial(token_costs, model)
    )


def text_tensors(settings: TextSettings, model: SequenceClassifier) -> TensorAdapter:
    """Open Inference input `text` (BYTES, one text per element): the texts of
    `/v1/{task}/predict`, with its checks and limits."""

    async def predict(
        tensors: Mapping[str, BytesTensor], plane: DataPlane[Any, Any]
    ) -> PredictionResult[TextPrediction]:
        return await predict_texts(tensors["text"].texts(), plane, settings, model)

    limit = ItemLimit(settings.max_items_per_request, "texts", "MTC_MAX_ITEMS_PER_REQUEST")
    return TensorAdapter((InputTensor("text"),), limit, predict)


def text_routes(settings: TextSettings, model: SequenceClassifier) -> Any:
    """The route registrar for `create_app`."""

    # The list cap of the schema is the configured limit: validating an over-long list
    # stops as soon as it passes the cap, whatever its length.
    request_schema = TextPredictRequest.with_limit(settings.max_items_per_request)

    def register(app: FastAPI, dataplane: DataPlane[Any, Any]) -> None:
        async def predict(body: TextPredictRequest, plane: DataPlaneDep) -> JSONResponse:
            """Classify each text; every label is returned with its score, highest first."""
            result = await predict_texts(body.text, plane, settings, model)
            return prediction_response(
                model,
                result,
                PredictionResponse,
                # Every prediction, cached or fresh, carries its text's token count.
                truncated=[
                    index
                    for index, prediction in enumerate(result.predictions)
                    if prediction.tokens > model.max_tokens
                ],
            )

        app.post(
            f"/v1/{settings.task}/predict",
            tags=[settings.task],
            response_model=TextPredictResponse,
            responses=error_responses(
                BatchTooLarge, BodyTooLarge, InvalidInput, ItemTooLarge, *SERVING_ERRORS
            ),
            summary=f"Classify texts ({settings.task})",
        )(with_body_schema(predict, request_schema))

    return register


def build_app(settings: TextSettings, model: SequenceClassifier | None = None) -> FastAPI:
    """The text service application for one task."""
    shared: dict[str, Any] = {
        "max_tokens": settings.max_tokens,
        "torch_threads": settings.threads_per_worker,
        "limits": {
            "max_items_per_request": settings.max_items_per_request,
            "max_text_chars": settings.max_text_chars,
            "max_body_bytes": settings.max_body_bytes,
        },
    }
    classifier = model
    if classifier is None and settings.runtime == "openvino":
        # Imported here: the extra is optional, and only this runtime needs it.
        from services.text.models.openvino_classifier import OpenVinoSequenceClassifier

        classifier = OpenVinoSequenceClassifier(
            **shared, precision=settings.resolved_torch_dtype, streams=settings.inference_workers
        )
    elif classifier is None and settings.runtime == "onnx":
        classifier = OnnxSequenceClassifier(**shared)
    elif classifier is None:
        classifier = SequenceClassifier(
            **shared, dtype=settings.resolved_torch_dtype, graph=settings.torch_graph
        )
    return create_app(
        settings,
        classifier,
        register_routes=text_routes(settings, classifier),
        tensor_adapter=text_tensors(settings, classifier),
        title=f"mtc text service: {settings.task}",
        description="Text classification with a Hugging Face sequence-classification model.",
    )
