"""The synthetic set's plan (who says what, how) and the sounds around the voice; nothing
here runs espeak-ng."""

from __future__ import annotations

import numpy as np
import pytest

from services.audio.starter import soundscape
from services.audio.starter.synthesis import (
    DELIVERIES,
    HELDOUT_POOL,
    TRAINING_POOL,
    ClipRecipe,
    SpokenClip,
    plan_set,
)
from services.text.starter import emergency_transcripts
from services.text.training import read_labelled_csv

RATE = 16_000


@pytest.fixture(scope="module")
def planned() -> list[SpokenClip]:
    sentences = read_labelled_csv(
        emergency_transcripts.TRANSCRIPTS_FILE, emergency_transcripts.LABELS
    )
    return plan_set(((s.text, s.label) for s in sentences), variants=2)


def test_every_sentence_of_every_label_is_spoken_calm_and_urgent(planned: list[SpokenClip]) -> None:
    by_text: dict[str, set[str]] = {}
    for clip in planned:
        by_text.setdefault(clip.text, set()).add(clip.recipe.delivery)
    assert all(deliveries == set(DELIVERIES) for deliveries in by_text.values())
    for label in emergency_transcripts.LABELS:
        urgent = [c for c in planned if c.label == label and c.recipe.delivery == "urgent"]
        calm = [c for c in planned if c.label == label and c.recipe.delivery == "calm"]
        assert len(urgent) == len(calm) > 0


def test_heldout_clips_use_unseen_voices_and_noise_levels(planned: list[SpokenClip]) -> None:
    assert not set(TRAINING_POOL.accents) & set(HELDOUT_POOL.accents)
    assert not set(TRAINING_POOL.variants) & set(HELDOUT_POOL.variants)
    for low, high in TRAINING_POOL.snr_bands_db:
        for other_low, other_high in HELDOUT_POOL.snr_bands_db:
            assert high <= other_low or other_high <= low
    for clip in planned:
        pool = HELDOUT_POOL if clip.heldout else TRAINING_POOL
        assert clip.recipe.speech.voice in pool.voices()
        assert any(low <= clip.recipe.snr_db <= high for low, high in pool.snr_bands_db)
    heldout = {clip.text for clip in planned if clip.heldout}
    assert 0 < len(heldout) < len({clip.text for clip in planned}) / 4


def test_recipes_are_drawn_from_the_seed() -> None:
    first = ClipRecipe.draw(b"same", "urgent", TRAINING_POOL)
    assert ClipRecipe.draw(b"same", "urgent", TRAINING_POOL) == first
    assert ClipRecipe.draw(b"other", "urgent", TRAINING_POOL) != first
    with pytest.raises(ValueError, match="delivery"):
        ClipRecipe.draw(b"same", "panicky", TRAINING_POOL)


def test_urgent_delivery_is_faster_higher_and_louder_than_calm() -> None:
    calm = [ClipRecipe.draw(str(n).encode(), "calm", TRAINING_POOL) for n in range(300)]
    urgent = [ClipRecipe.draw(str(n).encode(), "urgent", TRAINING_POOL) for n in range(300)]

    def mean(values: list[float]) -> float:
        return float(np.mean(values))

    assert mean([r.speech.words_per_minute for r in urgent]) > mean(
        [r.speech.words_per_minute for r in calm]
    )
    assert mean([r.speech.pitch for r in urgent]) > mean([r.speech.pitch for r in calm])
    shouted = mean([r.shout_drive_db is not None and r.shout_drive_db > 5 for r in urgent])
    assert shouted > 0.4
    assert not any(r.shout_drive_db is not None and r.shout_drive_db > 5 for r in calm)
    alarming = {"siren", "scream", "glass", "crowd"}
    assert mean([any(e.kind in alarming for e in r.events) for r in urgent]) > 0.5
    # Calm clips are not all quiet: some have a cafe or a distant siren behind them.
    assert any(r.events for r in calm)
    # The line is drawn alike for both.
    assert abs(mean([r.telephone for r in urgent]) - mean([r.telephone for r in calm])) < 0.1


def dominant_frequency(signal: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / RATE)[spectrum.argmax()])


def test_a_siren_sweeps_within_its_band() -> None:
    siren = soundscape.siren(3 * RATE, RATE, np.random.default_rng(0))
    pitches = [dominant_frequency(siren[start : start + 1024]) for start in range(0, 40_000, 4000)]
    assert min(pitches) >= 500
    assert max(pitches) <= 1_700
    assert max(pitches) - min(pitches) > 100


def test_a_scream_is_high_and_glass_is_higher() -> None:
    rng = np.random.default_rng(1)
    assert 600 <= dominant_frequency(soundscape.scream(RATE, rng)) <= 3_000
    glass = soundscape.breaking_glass(RATE, rng)
    high = np.abs(np.fft.rfft(glass)) ** 2
    frequencies = np.fft.rfftfreq(len(glass), 1 / RATE)
    assert high[frequencies > 2_000].sum() > high[frequencies < 1_000].sum()


def test_shouting_clips_the_voice() -> None:
    voice = 0.5 * np.sin(2 * np.pi * 150 * np.arange(RATE) / RATE)
    shouted = soundscape.shout(voice, drive_db=12.0)
    assert np.max(np.abs(shouted)) == pytest.approx(1.0)
    assert np.mean(np.abs(shouted) >= 0.999) > 0.3


def test_mixing_sets_the_ratio() -> None:
    rng = np.random.default_rng(2)
    base, extra = rng.normal(size=RATE), rng.normal(size=RATE) * 7
    mixed = soundscape.mix_at(base, extra, -10.0)
    added = mixed - base
    assert 10 * np.log10(soundscape.power(added) / soundscape.power(base)) == pytest.approx(-10.0)


def test_telephone_band_removes_lows_and_highs() -> None:
    times = np.arange(RATE) / RATE
    signal = sum(np.sin(2 * np.pi * f * times) for f in (100.0, 1_000.0, 6_000.0))
    filtered = soundscape.band_limit(np.asarray(signal), RATE, 300.0, 3_400.0)
    assert 900 < dominant_frequency(filtered) < 1_100
    assert soundscape.power(filtered) == pytest.approx(0.5, rel=0.05)


def test_noise_colours_fall_off_as_they_should() -> None:
    rng = np.random.default_rng(3)
    for colour, slope_db_per_octave in (("white", 0.0), ("pink", -3.0), ("brown", -6.0)):
        noise = soundscape.noise(colour, 2**16, rng)
        spectrum = np.abs(np.fft.rfft(noise)) ** 2
        frequencies = np.fft.rfftfreq(len(noise), 1 / RATE)
        low = spectrum[(frequencies > 250) & (frequencies < 500)].mean()
        high = spectrum[(frequencies > 2_000) & (frequencies < 4_000)].mean()
        measured = 10 * np.log10(high / low) / 3  # three octaves apart
        assert measured == pytest.approx(slope_db_per_octave, abs=1.0), colour
