"""Held-out figures under a call mix."""

from __future__ import annotations

import numpy as np
import pytest

from services.audio.evaluation import (
    CallMix,
    emergency_scores,
    macro_f1,
    mix_weights,
    weighted_accuracy,
    weighted_confusion,
)

MIX = CallMix(urgent_when_emergency=0.8, urgent_when_ordinary=0.1)


def test_every_sentence_counts_once_split_by_the_mix() -> None:
    keys = ["fire", "fire", "pizza", "pizza", "pizza"]
    ordinary = [False, False, True, True, True]
    urgency = ["calm", "urgent", "calm", "urgent", "urgent"]
    weights = mix_weights(keys, ordinary, urgency, MIX)
    np.testing.assert_allclose(weights, [0.2, 0.8, 0.9, 0.05, 0.05])


def test_a_sentence_spoken_one_way_only_still_counts_once() -> None:
    weights = mix_weights(["fire", "fire"], [False, False], ["calm", "calm"], MIX)
    np.testing.assert_allclose(weights, [0.5, 0.5])


def test_without_a_mix_every_clip_counts_once() -> None:
    np.testing.assert_array_equal(mix_weights(["a", "a"], [True, False], ["calm"] * 2, None), 1)


def test_weighted_accuracy_and_confusion() -> None:
    predicted, gold = np.array([0, 1, 1]), np.array([0, 1, 0])
    weights = np.array([1.0, 2.0, 1.0])
    assert weighted_accuracy(predicted, gold, weights) == pytest.approx(0.75)
    confusion = weighted_confusion(predicted, gold, weights, 2)
    np.testing.assert_allclose(confusion, [[1.0, 1.0], [0.0, 2.0]])
    assert macro_f1(confusion) == pytest.approx((2 / 3 + 0.8) / 2)


def test_regular_against_emergency() -> None:
    ordinary_mask = np.array([True, False, False])
    probabilities = np.array([[0.6, 0.2, 0.2], [0.1, 0.5, 0.4], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    gold = np.array([0, 1, 2, 0])
    scores = emergency_scores(probabilities, gold, ordinary_mask, np.ones(4))
    assert scores.accuracy == pytest.approx(0.5)
    assert scores.balanced_accuracy == pytest.approx(0.5)
    assert scores.majority_accuracy == pytest.approx(0.5)
