"""The fusion rule: how calm/urgent scores become call-label evidence, meet the transcript's
scores, and are fitted."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from services.audio.fusion import (
    RATE_BOUNDS,
    FusionRule,
    confusion_rates,
    fit_fusion,
    fit_weights,
    negative_log_likelihood,
)

LABELS = ("regular", "help", "robbery", "theft")
CALM, URGENT = np.array([[0.95, 0.05]]), np.array([[0.05, 0.95]])


def rule(**changes: Any) -> FusionRule:
    base = FusionRule(
        labels=LABELS,
        ordinary_labels=("regular",),
        prior=(0.25, 0.25, 0.25, 0.25),
        calm_when_emergency=0.2,
        urgent_when_ordinary=0.1,
        audio_weight=1.0,
        text_weight=1.0,
        asr_audio_weight=1.0,
        asr_text_weight=0.5,
    )
    return replace(base, **changes)


def top(scores: np.ndarray) -> str:
    return LABELS[int(np.argmax(scores[0]))]


def test_likelihood_follows_the_two_rates() -> None:
    likelihood = rule().likelihood(np.array([[0.7, 0.3]]))
    ordinary = 0.9 * 0.7 + 0.1 * 0.3
    emergency = 0.2 * 0.7 + 0.8 * 0.3
    np.testing.assert_allclose(likelihood, [[ordinary, emergency, emergency, emergency]])


def test_without_text_the_sound_decides_regular_against_emergency() -> None:
    calm, urgent = rule().fuse(CALM, None), rule().fuse(URGENT, None)
    assert top(calm) == "regular"
    assert top(urgent) != "regular"
    # The emergency labels share what the sound gives them by their prior.
    np.testing.assert_allclose(urgent[0, 1:], urgent[0, 1])
    np.testing.assert_allclose(calm.sum(), 1.0)


def test_without_text_it_is_prior_times_likelihood() -> None:
    prior = (0.4, 0.3, 0.2, 0.1)
    scores = rule(prior=prior).fuse(URGENT, None)
    joint = np.array(prior) * rule().likelihood(URGENT)
    np.testing.assert_allclose(scores, joint / joint.sum())


def test_a_confident_transcript_names_the_emergency_even_when_the_caller_sounds_calm() -> None:
    text = np.array([[0.01, 0.02, 0.95, 0.02]])
    assert top(rule().fuse(CALM, text)) == "robbery"


def test_an_urgent_sound_overrides_an_unsure_transcript() -> None:
    unsure = np.array([[0.5, 0.3, 0.1, 0.1]])
    assert top(rule().fuse(CALM, unsure)) == "regular"
    assert top(rule().fuse(URGENT, unsure)) == "help"


def test_the_sound_cannot_override_a_certain_transcript() -> None:
    # The rates bound the sound's evidence: an ordinary call made in a hurry stays ordinary.
    certain = np.array([[0.98, 0.01, 0.005, 0.005]])
    assert top(rule().fuse(URGENT, certain)) == "regular"


def test_among_emergencies_only_the_transcript_ranks() -> None:
    text = np.array([[0.1, 0.2, 0.3, 0.4]])
    fused = rule().fuse(URGENT, text)[0]
    assert list(np.argsort(fused[1:])) == list(np.argsort(text[0, 1:]))


def test_a_doubtful_recognised_transcript_counts_less() -> None:
    wrong = np.array([[0.8, 0.1, 0.05, 0.05]])
    written = rule().fuse(URGENT, wrong)
    doubtful = rule().fuse(URGENT, wrong, asr_confidence=np.array([0.2]))
    assert top(written) == "regular"
    assert top(doubtful) == "help"
    sure = rule(asr_text_weight=1.0).fuse(URGENT, wrong, asr_confidence=np.array([1.0]))
    np.testing.assert_allclose(sure, written)


def test_fused_scores_are_the_weighted_product() -> None:
    text = np.array([[0.4, 0.3, 0.2, 0.1]])
    fusion = rule(audio_weight=0.5, text_weight=2.0)
    expected = fusion.likelihood(URGENT) ** 0.5 * text**2.0
    np.testing.assert_allclose(fusion.fuse(URGENT, text), expected / expected.sum())


def test_rates_are_the_mean_scores_of_each_kind_of_call() -> None:
    urgency = np.array([[0.9, 0.1], [0.3, 0.7], [0.1, 0.9], [0.6, 0.4]])
    ordinary = np.array([True, True, False, False])
    calm_when_emergency, urgent_when_ordinary = confusion_rates(urgency, ordinary)
    assert calm_when_emergency == pytest.approx((0.1 + 0.6) / 2)
    assert urgent_when_ordinary == pytest.approx((0.1 + 0.7) / 2)
    weighted = confusion_rates(urgency, ordinary, np.array([3.0, 1.0, 1.0, 1.0]))
    assert weighted[1] == pytest.approx((3 * 0.1 + 0.7) / 4)


def test_rates_stay_within_bounds() -> None:
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    rates = confusion_rates(perfect, np.array([True, False]))
    assert rates == (RATE_BOUNDS[0], RATE_BOUNDS[0])


def synthetic_heldout(seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Emergency calls mostly urgent, ordinary ones mostly calm; text right 70 % of the time."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, len(LABELS), size=400)
    urgent = np.where(targets == 0, rng.random(400) < 0.1, rng.random(400) < 0.8)
    urgency = np.where(urgent[:, None], [0.1, 0.9], [0.9, 0.1])
    text = np.full((400, len(LABELS)), 0.1)
    guessed = np.where(rng.random(400) < 0.7, targets, rng.integers(0, len(LABELS), size=400))
    text[np.arange(400), guessed] = 0.7
    return urgency, text / text.sum(axis=1, keepdims=True), list(targets)


def test_fitting_gives_weight_to_both_informative_branches() -> None:
    urgency, text, targets = synthetic_heldout(0)
    fitted = fit_fusion(
        urgency, text, targets, labels=LABELS, ordinary_labels=("regular",), prior=(0.25,) * 4
    )
    assert fitted.audio_weight > 0
    assert fitted.text_weight > 0
    assert 0.1 < fitted.calm_when_emergency < 0.35
    assert fitted.urgent_when_ordinary < 0.25
    fused = fitted.fuse(urgency, text)
    assert negative_log_likelihood(fused, targets) < negative_log_likelihood(text, targets)


def test_a_sound_that_tells_nothing_gets_rates_that_move_nothing() -> None:
    _, text, targets = synthetic_heldout(1)
    noise = np.random.default_rng(2).dirichlet(np.ones(2), size=len(targets))
    fitted = fit_fusion(
        noise, text, targets, labels=LABELS, ordinary_labels=("regular",), prior=(0.25,) * 4
    )
    assert fitted.calm_when_emergency > 0.4
    assert fitted.urgent_when_ordinary > 0.4
    agree = fitted.fuse(noise, text).argmax(axis=1) == text.argmax(axis=1)
    assert agree.mean() > 0.95


def test_recognised_transcripts_get_their_own_weights() -> None:
    urgency, text, targets = synthetic_heldout(3)
    fitted = fit_fusion(
        urgency, text, targets, labels=LABELS, ordinary_labels=("regular",), prior=(0.25,) * 4
    )
    assert (fitted.asr_audio_weight, fitted.asr_text_weight) == (
        fitted.audio_weight,
        fitted.text_weight,
    )
    noise = np.random.default_rng(4).dirichlet(np.ones(len(LABELS)), size=len(targets))
    audio, words = fit_weights(
        fitted, urgency, noise, targets, asr_confidence=np.full(len(targets), 0.5)
    )
    assert audio > words


def test_fitting_without_text_keeps_unit_weights() -> None:
    urgency, _, targets = synthetic_heldout(5)
    fitted = fit_fusion(
        urgency, None, targets, labels=LABELS, ordinary_labels=("regular",), prior=(0.25,) * 4
    )
    assert (fitted.audio_weight, fitted.text_weight) == (1.0, 1.0)


def test_rule_round_trips_and_is_validated() -> None:
    fusion = rule(prior=(0.4, 0.2, 0.2, 0.2))
    assert FusionRule.from_json(fusion.to_json()) == fusion
    document = fusion.to_json()
    broken: list[tuple[dict[str, Any], str]] = [
        ({"audio_weight": 0, "text_weight": 0}, "not both 0"),
        ({"asr_audio_weight": -1}, ">= 0"),
        ({"calm_when_emergency": 0.6}, "between"),
        ({"urgent_when_ordinary": 0.0}, "between"),
        ({"ordinary_labels": ["quiet"]}, "not among the labels"),
        ({"ordinary_labels": list(LABELS)}, "not all"),
        ({"prior": {"regular": 1.0}}, "every label"),
        ({"prior": dict.fromkeys(LABELS, 0.5)}, "sum to 1"),
    ]
    for change, message in broken:
        with pytest.raises(ValueError, match=message):
            FusionRule.from_json({**document, **change})
    with pytest.raises(KeyError):
        FusionRule.from_json({key: v for key, v in document.items() if key != "asr_text_weight"})
