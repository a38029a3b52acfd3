"""Late fusion of the audio branch (calm / urgent) and the transcript classifier (the call
labels) into one decision over the call labels.

Sound cannot tell a robbery from a theft, but it can tell how urgent a call sounds, and
that is evidence for or against an emergency. The audio branch's output is turned into a
likelihood for each call label, through two rates stored with the model:

    L(ordinary label)  = (1 - urgent_when_ordinary) * p_calm + urgent_when_ordinary * p_urgent
    L(emergency label) = calm_when_emergency * p_calm + (1 - calm_when_emergency) * p_urgent

`ordinary_labels` (normally just `regular`) are the labels an ordinary call carries; every
other label is an emergency, and all emergency labels share one likelihood, so among them
only the transcript decides. The rates bound how far the sound can move the answer: the
calmest clip multiplies the odds of an ordinary label against an emergency one by at most
(1 - urgent_when_ordinary) / calm_when_emergency, the most urgent divides them by at most
(1 - calm_when_emergency) / urgent_when_ordinary (each to the power of the audio weight).

- With a transcript: `fused = softmax(audio_weight * log L + text_weight * log p_text)`.
  The text's probabilities already carry the label prior. A transcript recognised by
  Whisper is wrong far more often than one the caller's system sends, so it has its own
  pair of weights, and its text weight is scaled by Whisper's confidence in it:
  `asr_audio_weight` and `asr_text_weight * confidence`.
- Without one: `fused = prior * L`, normalised: the sound alone decides between the ordinary
  labels and the emergency labels, which share the rest by their prior.

`fit_fusion` measures the rates on held-out clips (how often the audio branch calls an
emergency calm, and an ordinary call urgent), then chooses the weights from a fixed grid
by the lowest negative log-likelihood of the fused answer (`fit_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.audio.models.korean_transcripts import softmax

_FLOOR = 1e-6  # keeps log(0) finite when a branch is certain
WEIGHT_GRID = tuple(round(step * 0.1, 1) for step in range(0, 21))
RATE_BOUNDS = (0.01, 0.45)
"""The rates are kept off 0 (no sound is proof) and below 0.5 (past it, sounding urgent
would count against an emergency)."""
RULE = (
    "with a transcript: softmax(audio_weight * log L + text_weight * log p_text); for one "
    "recognised by Whisper asr_audio_weight and asr_text_weight * Whisper's confidence "
    "instead; without: prior * L normalised; "
    "L(ordinary label) = (1 - urgent_when_ordinary) * p_calm + urgent_when_ordinary * "
    "p_urgent, L(other label) = calm_when_emergency * p_calm + (1 - calm_when_emergency) * "
    "p_urgent"
)


def _check_weights(audio: float, text: float, name: str) -> None:
    if audio < 0 or text < 0 or audio + text == 0:
        raise ValueError(f"{name} weights must be >= 0 and not both 0")


@dataclass(frozen=True)
class FusionRule:
    """How the urgency scores become call-label evidence, and how that meets the text."""

    labels: tuple[str, ...]
    ordinary_labels: tuple[str, ...]
    prior: tuple[float, ...]
    """Probability of each label before anything is heard, in `labels` order."""
    calm_when_emergency: float
    urgent_when_ordinary: float
    audio_weight: float = 1.0
    text_weight: float = 1.0
    asr_audio_weight: float = 1.0
    asr_text_weight: float = 1.0

    def __post_init__(self) -> None:
        if len(set(self.labels)) != len(self.labels) or not self.labels:
            raise ValueError(f"labels must be distinct and not empty: {self.labels}")
        unknown = sorted(set(self.ordinary_labels) - set(self.labels))
        if unknown:
            raise ValueError(f"ordinary labels {unknown} are not among the labels {self.labels}")
        if not self.ordinary_labels or set(self.ordinary_labels) == set(self.labels):
            raise ValueError("ordinary labels must name some, but not all, of the labels")
        if len(self.prior) != len(self.labels) or min(self.prior) <= 0:
            raise ValueError("the prior needs one positive probability per label")
        if abs(sum(self.prior) - 1.0) > 1e-3:
            raise ValueError(f"the prior must sum to 1, not {sum(self.prior)}")
        for name in ("calm_when_emergency", "urgent_when_ordinary"):
            if not RATE_BOUNDS[0] <= getattr(self, name) <= RATE_BOUNDS[1]:
                raise ValueError(f"{name} must be between {RATE_BOUNDS[0]} and {RATE_BOUNDS[1]}")
        _check_weights(self.audio_weight, self.text_weight, "fusion")
        _check_weights(self.asr_audio_weight, self.asr_text_weight, "ASR fusion")

    @property
    def ordinary_mask(self) -> NDArray[np.bool_]:
        """True at the ordinary labels, in `labels` order."""
        return np.array([label in self.ordinary_labels for label in self.labels])

    def to_json(self) -> dict[str, Any]:
        """As stored in the manifest."""
        return {
            **asdict(self),
            "rule": RULE,
            "labels": list(self.labels),
            "ordinary_labels": list(self.ordinary_labels),
            "prior": {label: round(p, 6) for label, p in zip(self.labels, self.prior, strict=True)},
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> FusionRule:
        """Parse (and validate) the manifest entry."""
        labels = tuple(str(label) for label in document["labels"])
        prior = document["prior"]
        if not isinstance(prior, dict) or sorted(prior) != sorted(labels):
            raise ValueError("the prior must map every label to a probability")
        return cls(
            labels=labels,
            ordinary_labels=tuple(str(label) for label in document["ordinary_labels"]),
            prior=tuple(float(prior[label]) for label in labels),
            calm_when_emergency=float(document["calm_when_emergency"]),
            urgent_when_ordinary=float(document["urgent_when_ordinary"]),
            audio_weight=float(document["audio_weight"]),
            text_weight=float(document["text_weight"]),
            asr_audio_weight=float(document["asr_audio_weight"]),
            asr_text_weight=float(document["asr_text_weight"]),
        )

    def likelihood(self, urgency: NDArray[np.float64]) -> NDArray[np.float64]:
        """(clips, labels) likelihood of each label given (clips, 2) calm/urgent scores."""
        calm, urgent = urgency[..., 0:1], urgency[..., 1:2]
        if_ordinary = (1 - self.urgent_when_ordinary) * calm + self.urgent_when_ordinary * urgent
        if_emergency = self.calm_when_emergency * calm + (1 - self.calm_when_emergency) * urgent
        return np.asarray(np.where(self.ordinary_mask, if_ordinary, if_emergency))

    def audio_only(self, urgency: NDArray[np.float64]) -> NDArray[np.float64]:
        """Call-label probabilities from the sound alone: prior times likelihood."""
        joint = np.asarray(self.prior) * self.likelihood(urgency)
        return np.asarray(joint / joint.sum(axis=-1, keepdims=True))

    def fuse(
        self,
        urgency: NDArray[np.float64],
        text: NDArray[np.float64] | None,
        *,
        asr_confidence: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]:
        """Fused call-label probabilities; from the sound alone when `text` is None.
        `asr_confidence` (one per clip): the transcripts came from speech recognition."""
        if text is None:
            return self.audio_only(urgency)
        if asr_confidence is None:
            audio_weight, text_weight = self.audio_weight, np.asarray(self.text_weight)
        else:
            audio_weight = self.asr_audio_weight
            text_weight = self.asr_text_weight * np.asarray(asr_confidence)[..., None]
        logits = audio_weight * np.log(np.maximum(self.likelihood(urgency), _FLOOR))
        return softmax(logits + text_weight * np.log(np.maximum(text, _FLOOR)))


def negative_log_likelihood(
    probabilities: NDArray[np.float64],
    targets: Sequence[int],
    weights: NDArray[np.float64] | None = None,
) -> float:
    """Mean -log p(true label), weighted per example when `weights` is given."""
    picked = probabilities[np.arange(len(targets)), np.asarray(targets)]
    losses = -np.log(np.maximum(picked, _FLOOR))
    if weights is None:
        return float(losses.mean())
    return float((losses * weights).sum() / weights.sum())


def confusion_rates(
    urgency: NDArray[np.float64],
    ordinary: NDArray[np.bool_],
    weights: NDArray[np.float64] | None = None,
) -> tuple[float, float]:
    """(calm_when_emergency, urgent_when_ordinary): the mean calm score of the emergency
    clips and the mean urgent score of the ordinary ones (weighted), kept within
    `RATE_BOUNDS`. Estimated per kind of call, they do not depend on how many clips of
    each kind the held-out set happens to have."""
    weights = np.ones(len(urgency)) if weights is None else weights
    low, high = RATE_BOUNDS
    rates = []
    for kind, column in ((~ordinary, 0), (ordinary, 1)):
        mass = weights[kind].sum()
        if mass <= 0:
            raise ValueError("fitting the rates needs held-out clips of both kinds of call")
        rate = float((urgency[kind, column] * weights[kind]).sum() / mass)
        rates.append(round(min(max(rate, low), high), 4))
    return rates[0], rates[1]


def fit_weights(
    rule: FusionRule,
    urgency: NDArray[np.float64],
    text: NDArray[np.float64],
    targets: Sequence[int],
    weights: NDArray[np.float64] | None = None,
    *,
    asr_confidence: NDArray[np.float64] | None = None,
) -> tuple[float, float]:
    """(audio weight, text weight) from WEIGHT_GRID with the lowest negative log-likelihood
    of `rule`'s fused answer (ties: the earlier grid point): the written transcripts'
    weights, or with `asr_confidence` the recognised transcripts'."""
    if len(targets) == 0:
        raise ValueError("fitting the weights needs at least one held-out example")
    best: tuple[float, tuple[float, float]] | None = None
    for audio_weight in WEIGHT_GRID:
        for text_weight in WEIGHT_GRID:
            if audio_weight == text_weight == 0:
                continue
            if asr_confidence is None:
                candidate = replace(rule, audio_weight=audio_weight, text_weight=text_weight)
            else:
                candidate = replace(
                    rule, asr_audio_weight=audio_weight, asr_text_weight=text_weight
                )
            fused = candidate.fuse(urgency, text, asr_confidence=asr_confidence)
            loss = negative_log_likelihood(fused, targets, weights)
            if best is None or loss < best[0] - 1e-9:
                best = (loss, (audio_weight, text_weight))
    assert best is not None
    return best[1]


def fit_fusion(
    urgency: NDArray[np.float64],
    text: NDArray[np.float64] | None,
    targets: Sequence[int],
    *,
    labels: Sequence[str],
    ordinary_labels: Sequence[str],
    prior: Sequence[float],
    weights: NDArray[np.float64] | None = None,
) -> FusionRule:
    """The rates from `confusion_rates`, then the weights from `fit_weights` on written
    transcripts (1 and 1 without `text`). Recognised transcripts get the same weights until
    `fit_weights` on recognised ones replaces them."""
    if len(targets) == 0:
        raise ValueError("fusion needs at least one held-out example")
    ordinary = np.array([labels[target] in ordinary_labels for target in targets])
    calm_when_emergency, urgent_when_ordinary = confusion_rates(urgency, ordinary, weights)
    rule = FusionRule(
        labels=tuple(labels),
        ordinary_labels=tuple(ordinary_labels),
        prior=tuple(prior),
        calm_when_emergency=calm_when_emergency,
        urgent_when_ordinary=urgent_when_ordinary,
    )
    if text is None:
        return rule
    audio_weight, text_weight = fit_weights(rule, urgency, text, targets, weights)
    return replace(
        rule,
        audio_weight=audio_weight,
        text_weight=text_weight,
        asr_audio_weight=audio_weight,
        asr_text_weight=text_weight,
    )
