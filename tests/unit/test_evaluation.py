"""Held-out metrics, checked against hand-computed values."""

from __future__ import annotations

import pytest

from services.core.model import LabelScore
from services.lifecycle.evaluation import evaluate_predictions, expected_calibration_error


def ranked(top: str, score: float) -> list[LabelScore]:
    other = "neg" if top == "pos" else "pos"
    return [LabelScore(top, score), LabelScore(other, 1 - score)]


def test_metrics_match_hand_computation() -> None:
    predictions = [
        ranked("pos", 0.9),  # gold pos: hit
        ranked("pos", 0.8),  # gold neg: miss
        ranked("neg", 0.7),  # gold neg: hit
        ranked("neg", 0.6),  # gold pos: miss
        ranked("pos", 0.95),  # gold pos: hit
    ]
    gold = ["pos", "neg", "neg", "pos", "pos"]
    report = evaluate_predictions(predictions, gold, ["neg", "pos"])
    assert report.accuracy == pytest.approx(3 / 5)
    # rows gold (neg, pos), columns predicted (neg, pos)
    assert report.confusion_matrix == [[1, 1], [1, 2]]
    assert report.per_class["pos"].precision == pytest.approx(2 / 3)
    assert report.per_class["pos"].recall == pytest.approx(2 / 3)
    assert report.per_class["neg"].precision == pytest.approx(1 / 2)
    assert report.per_class["neg"].recall == pytest.approx(1 / 2)
    assert report.macro_f1 == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert report.per_class["neg"].support == 2
    assert "accuracy  0.6000" in report.table()
    assert report.to_json()["confusion_matrix"] == [[1, 1], [1, 2]]


def test_calibration_error_is_zero_when_confidence_matches_accuracy() -> None:
    assert expected_calibration_error([1.0, 1.0], [True, True]) == pytest.approx(0.0)
    # One bin at confidence 0.8 with half right: gap 0.3.
    assert expected_calibration_error([0.8, 0.8], [True, False]) == pytest.approx(0.3)


def test_unknown_gold_label_is_refused() -> None:
    with pytest.raises(ValueError, match="not labels of the model"):
        evaluate_predictions([ranked("pos", 0.9)], ["maybe"], ["neg", "pos"])
