"""The built sentiment starter, as the service runs it, on reviews nobody could read two ways.

A model taught sarcasm and faint praise once came to read sincere praise as irony ("a
wonderful, moving film ... I loved every minute of it" called NEGATIVE) while every held-out
figure held up; these are the sentences the benchmark checks each system with before it
measures speed."""

from __future__ import annotations

from pathlib import Path

import pytest

from load.peers.correctness import FIXED_SENTENCES
from services.text.evaluation import EvalRuntime, load_classifier, predict_all

STARTER = Path(__file__).resolve().parents[2] / ".mtc" / "models" / "sentiment"


@pytest.mark.parametrize("runtime", ["torch", "openvino"])
def test_plain_reviews_get_their_plain_labels(runtime: EvalRuntime) -> None:
    assert (STARTER / "manifest.json").is_file(), "build the starters first: make models"
    classifier = load_classifier(STARTER, runtime)
    texts = [text for text, _ in FIXED_SENTENCES]
    labels = [scores[0].label for scores in predict_all(classifier, texts)]
    assert labels == [label for _, label in FIXED_SENTENCES]
