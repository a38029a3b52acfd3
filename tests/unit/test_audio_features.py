"""What the audio branch measures of a clip."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from services.audio.features import AcousticFeatureConfig, acoustic_features, feature_names

CONFIG = AcousticFeatureConfig()
RATE = CONFIG.sample_rate


def harmonic(pitch_hz: float, seconds: float = 2.0) -> npt.NDArray[np.float32]:
    """A buzzy voiced-like tone in syllable-sized bursts, with a little noise."""
    times = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * pitch_hz * k * times) / k for k in range(1, 8))
    bursts = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * times)
    noise = np.random.default_rng(0).normal(scale=0.01, size=len(times))
    return (0.3 * tone * bursts + noise).astype(np.float32)


def measure(samples: npt.NDArray[np.float32]) -> dict[str, float]:
    values = acoustic_features(samples, CONFIG)
    return dict(zip(feature_names(CONFIG), values.tolist(), strict=True))


def test_one_finite_vector_of_the_named_length_whatever_the_clip() -> None:
    for samples in (
        harmonic(120.0, 0.3),
        harmonic(200.0, 12.0),
        np.zeros(RATE, dtype=np.float32),
        np.random.default_rng(1).normal(size=RATE).astype(np.float32),
    ):
        values = acoustic_features(samples, CONFIG)
        assert values.shape == (len(feature_names(CONFIG)),)
        assert np.isfinite(values).all()


def test_the_same_clip_measures_the_same() -> None:
    samples = harmonic(150.0)
    np.testing.assert_array_equal(
        acoustic_features(samples, CONFIG), acoustic_features(samples.copy(), CONFIG)
    )


def test_the_level_of_the_line_does_not_matter() -> None:
    loud, quiet = harmonic(150.0), harmonic(150.0) * np.float32(0.05)
    np.testing.assert_allclose(
        acoustic_features(loud, CONFIG), acoustic_features(quiet, CONFIG), atol=1e-2
    )


def test_pitch_is_measured_in_semitones() -> None:
    low, high = measure(harmonic(110.0)), measure(harmonic(220.0))
    assert low["pitch_median_semitones"] == pytest.approx(12 * np.log2(110 / 100), abs=0.5)
    assert high["pitch_median_semitones"] - low["pitch_median_semitones"] == pytest.approx(
        12, abs=0.5
    )
    assert low["voiced_share"] > 0.8


def test_clipping_shows() -> None:
    clean = harmonic(150.0)
    clipped = np.clip(clean * 6, -0.5, 0.5).astype(np.float32)
    assert measure(clipped)["clipped_share_log"] > measure(clean)["clipped_share_log"] + 1.0
    assert measure(clipped)["crest_db"] < measure(clean)["crest_db"]


def test_a_siren_is_a_steady_prominent_tone() -> None:
    times = np.arange(3 * RATE) / RATE
    sweep = 700 + 400 * (0.5 - 0.5 * np.cos(2 * np.pi * times / 3))
    siren = np.sin(2 * np.pi * np.cumsum(sweep) / RATE).astype(np.float32)
    noise = np.random.default_rng(2).normal(scale=0.3, size=len(times)).astype(np.float32)
    with_siren, without = measure(noise + siren), measure(noise)
    assert with_siren["tonal_share"] > 0.8
    assert without["tonal_share"] < 0.1
    assert with_siren["tonal_steadiness"] > 0.8


def test_config_round_trips() -> None:
    config = AcousticFeatureConfig(n_mels=24)
    assert AcousticFeatureConfig.from_json(config.to_json()) == config
    assert len(feature_names(config)) == 2 * 24 + len(feature_names(CONFIG)) - 2 * CONFIG.n_mels
