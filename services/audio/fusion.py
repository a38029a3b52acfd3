"""Late fusion of the audio and transcript classifiers into one decision.

The rule: fused scores are `softmax(w_audio * log p_audio + w_text * log p_text)`, a
weighted product of the two probability vectors, renormalised. The weights live in the
model manifest (`config.fusion`); `fit_fusion` chooses them on held-out clips by the
lowest negative log-likelihood, so a branch that does not generalise gets a small weight.
A clip with no transcript is scored by the audio branch alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

_FLOOR = 1e-6  # keeps log(0) finite when a branch is certain
WEIGHT_GRID = tuple(round(step * 0.1, 1) for step in range(0, 21))


@dataclass(frozen=True)
class FusionRule:
    """Weights of the two branches' log-probabilities."""

    audio_weight: float
    text_weight: float

    def to_json(self) -> dict[str, Any]:
        """As stored in the manifest."""
        return {
            "rule": "softmax(audio_weight * log p_audio + text_weight * log p_text)",
            "audio_weight": self.audio_weight,
            "text_weight": self.text_weight,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> FusionRule:
        """Parse the manifest entry."""
        audio, text = float(document["audio_weight"]), float(document["text_weight"])
        if audio < 0 or text < 0 or audio + text == 0:
            raise ValueError("fusion weights must be >= 0 and not both 0")
        return cls(audio_weight=audio, text_weight=text)

    def fuse(
        self, audio: NDArray[np.float64], text: NDArray[np.float64] | None
    ) -> NDArray[np.float64]:
        """Fused probabilities (labels along the last axis); audio alone when `text` is None."""
        if text is None:
            return audio
        logits = self.audio_weight * np.log(np.maximum(audio, _FLOOR)) + self.text_weight * (
            np.log(np.maximum(text, _FLOOR))
        )
        logits -= logits.max(axis=-1, keepdims=True)
        weights = np.exp(logits)
        return np.asarray(weights / weights.sum(axis=-1, keepdims=True))


def negative_log_likelihood(probabilities: NDArray[np.float64], targets: Sequence[int]) -> float:
    """Mean -log p(true label)."""
    picked = probabilities[np.arange(len(targets)), np.asarray(targets)]
    return float(-np.log(np.maximum(picked, _FLOOR)).mean())


def fit_fusion(
    audio: NDArray[np.float64], text: NDArray[np.float64], targets: Sequence[int]
) -> FusionRule:
    """The grid weights with the lowest held-out negative log-likelihood (ties: smaller)."""
    if len(targets) == 0:
        raise ValueError("fusion needs at least one held-out example")
    best: tuple[float, FusionRule] | None = None
    for audio_weight in WEIGHT_GRID:
        for text_weight in WEIGHT_GRID:
            if audio_weight == text_weight == 0:
                continue
            rule = FusionRule(audio_weight, text_weight)
            loss = negative_log_likelihood(rule.fuse(audio, text), targets)
            if best is None or loss < best[0] - 1e-9:
                best = (loss, rule)
    assert best is not None
    return best[1]
