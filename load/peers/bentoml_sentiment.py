"""The sentiment model as a BentoML service with a batchable API.

A peer of `python -m load.bench --peers`; it runs from BentoML's own virtualenv, not mtc's:
`bentoml serve bentoml_sentiment:SentimentService --working-dir load/peers` with the model
directory in `MTC_PEER_MODEL_DIR`. BentoML's adaptive batching groups concurrent requests
(at most 16 texts per batch) in each of two worker processes with one torch thread each.
Request `{"text": [...]}` on mtc's route; BentoML answers a batchable API with the list
itself, `[[{"label", "score"}, ...]]`, labels ranked by score.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml  # type: ignore[import-not-found]
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

MAX_BATCH_SIZE = 16
WORKERS = 2


@bentoml.service(workers=WORKERS, traffic={"timeout": 60})
class SentimentService:
    """Batched text classification of the model directory in `MTC_PEER_MODEL_DIR`."""

    def __init__(self) -> None:
        # Two single-threaded workers beat one two-threaded one on two CPUs (mtc runs the same).
        torch.set_num_threads(1)
        model_dir = os.environ["MTC_PEER_MODEL_DIR"]
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
        self.model = model.eval()
        config = self.model.config
        self.labels = [config.id2label[index] for index in range(config.num_labels)]

    @bentoml.api(  # type: ignore[untyped-decorator]
        batchable=True, max_batch_size=MAX_BATCH_SIZE, route="/v1/sentiment/predict"
    )
    def predict(self, text: list[str]) -> list[list[dict[str, Any]]]:
        """Every label with its probability for each text, highest first."""
        encoded = self.tokenizer(text, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(**encoded).logits
        answers: list[list[dict[str, Any]]] = []
        for scores in logits.float().softmax(dim=-1).tolist():
            ranked = sorted(zip(self.labels, scores, strict=True), key=lambda pair: -pair[1])
            answers.append([{"label": label, "score": score} for label, score in ranked])
        return answers
