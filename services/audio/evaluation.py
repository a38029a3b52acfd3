"""Held-out figures of the emergency-call model, where each clip may carry a weight.

Synthetic clips are spoken both calm and urgent whatever their words, which teaches the audio
branch to listen to the sound, not the sentence; but in real calls the two are related, and
the fused figures only mean something under some relation. `CallMix` states one (how often
ordinary and emergency calls sound urgent) and `mix_weights` reweights the held-out clips
to it, every sentence counting once in total. Real recordings need no mix: their weights
are all 1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class CallMix:
    """How often a call sounds urgent, by kind: an assumption, stated where it is used."""

    urgent_when_emergency: float
    urgent_when_ordinary: float

    def share(self, ordinary: bool, urgency: str) -> float:
        """P(urgency | kind of call)."""
        urgent = self.urgent_when_ordinary if ordinary else self.urgent_when_emergency
        return urgent if urgency == "urgent" else 1.0 - urgent

    def to_json(self) -> dict[str, Any]:
        """As recorded in the manifest."""
        return asdict(self)


def mix_weights(
    keys: Sequence[str],
    ordinary: Sequence[bool],
    urgencies: Sequence[str],
    mix: CallMix | None,
) -> NDArray[np.float64]:
    """Per clip, its weight under `mix`: each key (sentence) sums to 1, shared between its
    calm and urgent clips in the mix's proportions. All 1 without a mix."""
    if mix is None:
        return np.ones(len(keys))
    counts = Counter(zip(keys, urgencies, strict=True))
    weights = np.zeros(len(keys))
    for index, (key, is_ordinary, urgency) in enumerate(
        zip(keys, ordinary, urgencies, strict=True)
    ):
        present = [u for u in ("calm", "urgent") if (key, u) in counts]
        total = sum(mix.share(is_ordinary, u) for u in present)
        weights[index] = mix.share(is_ordinary, urgency) / total / counts[key, urgency]
    return weights


def weighted_accuracy(
    predicted: NDArray[np.int64], gold: NDArray[np.int64], weights: NDArray[np.float64]
) -> float:
    """Share of the weight on correct predictions."""
    return float(weights[predicted == gold].sum() / weights.sum()) if weights.sum() else 0.0


def weighted_confusion(
    predicted: NDArray[np.int64],
    gold: NDArray[np.int64],
    weights: NDArray[np.float64],
    classes: int,
) -> NDArray[np.float64]:
    """Rows gold, columns predicted; cells are summed weights."""
    matrix = np.zeros((classes, classes))
    np.add.at(matrix, (gold, predicted), weights)
    return matrix


def macro_f1(confusion: NDArray[np.float64]) -> float:
    """Mean F1 over the classes that occur in gold or predictions."""
    scores = []
    for index in range(len(confusion)):
        correct = confusion[index, index]
        predicted, actual = confusion[:, index].sum(), confusion[index, :].sum()
        if predicted == 0 and actual == 0:
            continue
        scores.append(2 * correct / (predicted + actual) if predicted + actual else 0.0)
    return float(np.mean(scores)) if scores else 0.0


@dataclass(frozen=True)
class EmergencyScores:
    """Regular-versus-emergency: how well a set of answers separates the two kinds of call."""

    accuracy: float
    balanced_accuracy: float
    majority_accuracy: float
    """What answering the more common kind every time reaches (no sound, no words)."""


def emergency_scores(
    probabilities: NDArray[np.float64],
    gold: NDArray[np.int64],
    ordinary_mask: NDArray[np.bool_],
    weights: NDArray[np.float64],
) -> EmergencyScores:
    """Whether the top label is an ordinary one, against whether the gold label is."""
    said_ordinary = ordinary_mask[probabilities.argmax(axis=-1)]
    is_ordinary = ordinary_mask[gold]
    correct = said_ordinary == is_ordinary
    total = weights.sum()
    recalls = [
        float(weights[correct & (is_ordinary == side)].sum() / weights[is_ordinary == side].sum())
        for side in (True, False)
        if weights[is_ordinary == side].sum() > 0
    ]
    ordinary_share = float(weights[is_ordinary].sum() / total) if total else 0.0
    return EmergencyScores(
        accuracy=float(weights[correct].sum() / total) if total else 0.0,
        balanced_accuracy=float(np.mean(recalls)) if recalls else 0.0,
        majority_accuracy=max(ordinary_share, 1.0 - ordinary_share),
    )
