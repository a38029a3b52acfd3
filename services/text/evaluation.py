"""Evaluate a text model directory exactly as the service runs it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from services.core.cpu_features import has_native_bfloat16
from services.core.model import LabelScore
from services.lifecycle.evaluation import EvaluationReport, evaluate_predictions
from services.text.models.sequence_classifier import SequenceClassifier
from services.text.training import LabelledText

EVAL_BATCH_SIZE = 64


EvalRuntime = Literal["torch", "torch-bf16", "onnx", "openvino"]
"""How `mtc eval` runs the model: float32 or bfloat16 PyTorch, the ONNX int8 export, or
OpenVINO (bfloat16 where the CPU computes it natively)."""


def load_classifier(model_dir: Path, runtime: EvalRuntime = "torch") -> SequenceClassifier:
    """The serving model class for `runtime`, loaded from `model_dir`."""
    classifier: SequenceClassifier
    if runtime == "onnx":
        from services.text.models.onnx_classifier import OnnxSequenceClassifier

        classifier = OnnxSequenceClassifier()
    elif runtime == "openvino":
        from services.text.models.openvino_classifier import OpenVinoSequenceClassifier

        classifier = OpenVinoSequenceClassifier(
            precision="bfloat16" if has_native_bfloat16() else "float32"
        )
    else:
        classifier = SequenceClassifier(dtype="bfloat16" if runtime == "torch-bf16" else "float32")
    asyncio.run(classifier.start(model_dir))
    return classifier


def predict_all(
    classifier: SequenceClassifier, texts: Sequence[str], *, progress: bool = False
) -> list[list[LabelScore]]:
    """Predictions for every text, in input order, run in batches of similar length."""
    from tqdm import tqdm

    lengths = classifier.token_counts(texts)
    order = sorted(range(len(texts)), key=lambda index: lengths[index])
    results: list[list[LabelScore] | None] = [None] * len(texts)
    starts = range(0, len(order), EVAL_BATCH_SIZE)
    for start in tqdm(starts, desc="evaluate", unit="batch", disable=not progress):
        indices = order[start : start + EVAL_BATCH_SIZE]
        for index, prediction in zip(
            indices, classifier.predict([texts[i] for i in indices]), strict=True
        ):
            results[index] = prediction.scores
    return [scores for scores in results if scores is not None]


def evaluate_model_dir(
    model_dir: Path,
    examples: Sequence[LabelledText],
    *,
    runtime: EvalRuntime = "torch",
    progress: bool = False,
) -> EvaluationReport:
    """Accuracy, macro-F1, per-class precision/recall, confusion matrix and calibration."""
    classifier = load_classifier(model_dir, runtime)
    predictions = predict_all(classifier, [e.text for e in examples], progress=progress)
    return evaluate_predictions(
        predictions, [e.label for e in examples], classifier.metadata.labels
    )
