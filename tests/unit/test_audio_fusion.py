"""The fusion rule and its fitting."""

from __future__ import annotations

import numpy as np
import pytest

from services.audio.fusion import FusionRule, fit_fusion, negative_log_likelihood


def test_fusion_is_a_normalised_weighted_product() -> None:
    audio = np.array([[0.5, 0.3, 0.2]])
    text = np.array([[0.1, 0.8, 0.1]])
    fused = FusionRule(audio_weight=1.0, text_weight=1.0).fuse(audio, text)
    expected = audio * text / (audio * text).sum()
    np.testing.assert_allclose(fused, expected, rtol=1e-9)


def test_zero_text_weight_keeps_the_audio_ranking() -> None:
    audio = np.array([[0.6, 0.3, 0.1]])
    text = np.array([[0.0, 0.0, 1.0]])
    fused = FusionRule(audio_weight=1.0, text_weight=0.0).fuse(audio, text)
    np.testing.assert_allclose(fused, audio, rtol=1e-9)


def test_missing_transcript_uses_audio_alone() -> None:
    audio = np.array([[0.7, 0.2, 0.1]])
    np.testing.assert_array_equal(FusionRule(0.3, 2.0).fuse(audio, None), audio)


def test_fit_trusts_the_branch_that_is_right() -> None:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 4, size=200)
    informative = np.full((200, 4), 0.1)
    informative[np.arange(200), targets] = 0.7
    noise = rng.dirichlet(np.ones(4), size=200)
    rule = fit_fusion(audio=noise, text=informative, targets=list(targets))
    assert rule.text_weight > rule.audio_weight
    fused = rule.fuse(noise, informative)
    assert negative_log_likelihood(fused, list(targets)) < negative_log_likelihood(
        noise, list(targets)
    )


def test_weights_round_trip_and_are_validated() -> None:
    rule = FusionRule(0.4, 1.3)
    assert FusionRule.from_json(rule.to_json()) == rule
    with pytest.raises(ValueError, match="not both 0"):
        FusionRule.from_json({"audio_weight": 0, "text_weight": 0})
    with pytest.raises(ValueError, match=">= 0"):
        FusionRule.from_json({"audio_weight": -1, "text_weight": 1})
