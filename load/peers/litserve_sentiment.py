"""`python litserve_sentiment.py MODEL_DIR PORT DTYPE`: the sentiment model served by LitServe.

A peer of `python -m load.bench --peers`; it runs from LitServe's own virtualenv, not mtc's.
Configured as the strongest LitServe setup measured on the 2-CPU benchmark machine: server-side
batching (up to 16 requests, waiting at most 10 ms), two inference worker processes with one
torch thread each, the model in DTYPE (`bfloat16` or `float32`). It answers mtc's request and
response shape on mtc's route, one text per request: `{"text": [...]}` ->
`{"predictions": [[{"label", "score"}, ...]]}`, labels ranked by score.
"""

# No `from __future__ import annotations`: LitServe reads decode_request's and
# encode_response's annotations as the route's request and response types.
import sys
from typing import Any

import litserve  # type: ignore[import-not-found]
import torch
from pydantic import BaseModel, Field
from transformers import AutoModelForSequenceClassification, AutoTokenizer

MAX_BATCH_SIZE = 16
BATCH_TIMEOUT_SECONDS = 0.01
WORKERS = 2
PREDICT_PATH = "/v1/sentiment/predict"


class PredictRequest(BaseModel):
    """mtc's request body, one text: LitServe batches requests, not the texts in them."""

    text: list[str] = Field(min_length=1, max_length=1)


class SentimentAPI(litserve.LitAPI):  # type: ignore[misc]
    """Batched text classification of one model directory."""

    def __init__(self, model_dir: str, dtype: torch.dtype) -> None:
        super().__init__(
            max_batch_size=MAX_BATCH_SIZE,
            batch_timeout=BATCH_TIMEOUT_SECONDS,
            api_path=PREDICT_PATH,
        )
        self.model_dir = model_dir
        self.dtype = dtype

    def setup(self, device: str) -> None:
        """Load the tokenizer and the model in each worker process."""
        # Two single-threaded workers beat one two-threaded one on two CPUs (mtc runs the same).
        torch.set_num_threads(1)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(self.model_dir, dtype=self.dtype)
        self.model = model.eval()
        config = self.model.config
        self.labels = [config.id2label[index] for index in range(config.num_labels)]

    def decode_request(self, request: PredictRequest, **kwargs: Any) -> str:
        """The one text of a request."""
        return request.text[0]

    def predict(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        """Every label's probability for each text of the batch, padded to the longest."""
        encoded = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(**encoded).logits
        scores: list[list[float]] = logits.float().softmax(dim=-1).tolist()
        return scores

    def encode_response(self, scores: list[float], **kwargs: Any) -> dict[str, Any]:
        """mtc's answer shape: every label with its score, highest first."""
        ranked = sorted(zip(self.labels, scores, strict=True), key=lambda pair: -pair[1])
        return {"predictions": [[{"label": label, "score": score} for label, score in ranked]]}


def main(argv: list[str]) -> None:
    """Serve MODEL_DIR on 127.0.0.1:PORT with the model in DTYPE."""
    if len(argv) != 3 or argv[2] not in ("bfloat16", "float32"):
        raise SystemExit("usage: litserve_sentiment.py MODEL_DIR PORT bfloat16|float32")
    model_dir, port, dtype = argv[0], int(argv[1]), getattr(torch, argv[2])
    server = litserve.LitServer(
        SentimentAPI(model_dir, dtype), accelerator="cpu", workers_per_device=WORKERS
    )
    server.run(host="127.0.0.1", port=port, generate_client_file=False)


if __name__ == "__main__":
    main(sys.argv[1:])
