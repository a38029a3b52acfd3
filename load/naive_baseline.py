"""`python -m load.naive_baseline MODEL_DIR PORT`: the naive way to serve a text classifier.

What the original projects did, kept as the benchmark's baseline: one FastAPI route that
calls a Hugging Face `pipeline("text-classification")` on every request, with the library's
defaults (PyTorch, its own thread count, no batching, no cache).
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class PredictRequest(BaseModel):
    """Texts to classify."""

    text: list[str]


def build_app(model_dir: str) -> FastAPI:
    """The baseline app serving the model directory `model_dir`."""
    from transformers import pipeline

    classifier: Any = pipeline("text-classification", model=model_dir, top_k=None)
    app = FastAPI()

    @app.post("/v1/sentiment/predict")
    def predict(body: PredictRequest) -> dict[str, Any]:
        """Every label's score per text."""
        return {"predictions": classifier(body.text)}

    @app.get("/health/ready")
    def ready() -> dict[str, str]:
        """Up once the model is loaded (the pipeline loads before the server starts)."""
        return {"status": "ready"}

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the baseline on 127.0.0.1."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m load.naive_baseline MODEL_DIR PORT")
    uvicorn.run(build_app(args[0]), host="127.0.0.1", port=int(args[1]), access_log=False)


if __name__ == "__main__":
    main()
