"""Sounds around a synthetic caller, made from numbers: sirens, screams, breaking glass, crowd
babble, background noise, a room, a telephone line, and a voice shouted into clipping.

Everything is computed here with numpy from a seeded generator (the crowd is built from
espeak-ng utterances passed in); nothing is recorded, downloaded or copied. The sounds are
crude but have the properties a detector could key on: a siren is a loud tone sweeping
between two pitches, a scream a high, harmonic, wavering cry, glass a sharp broadband crack
followed by decaying high partials and scattered tinkles, a crowd many overlapping voices.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Signal = NDArray[np.float64]


def _transform_length(length: int) -> int:
    """The next power of two: numpy's FFT is many times slower on lengths with large prime
    factors, and clip lengths are arbitrary."""
    return 1 << max(0, length - 1).bit_length()


def power(signal: Signal) -> float:
    """Mean square, never 0 (so ratios stay finite)."""
    return float(np.mean(signal**2)) + 1e-12


def mix_at(base: Signal, extra: Signal, ratio_db: float, start: int = 0) -> Signal:
    """`base` with `extra` added from sample `start`, scaled so that `extra` is `ratio_db`
    relative to the power of `base` (over the samples `extra` covers)."""
    end = min(len(base), start + len(extra))
    if end <= start:
        return base
    segment = extra[: end - start]
    target = power(base) * 10 ** (ratio_db / 10)
    scale = np.sqrt(target / power(segment))
    mixed = base.copy()
    mixed[start:end] += segment * scale
    return mixed


def _fade(length: int, rate: int, seconds: float = 0.02) -> Signal:
    ramp = min(length // 2, int(seconds * rate))
    envelope = np.ones(length)
    if ramp > 0:
        envelope[:ramp] = np.linspace(0.0, 1.0, ramp)
        envelope[-ramp:] = np.linspace(1.0, 0.0, ramp)
    return envelope


def _harmonic_tone(frequency: Signal, rate: int, partials: tuple[float, ...]) -> Signal:
    phase = 2 * np.pi * np.cumsum(frequency) / rate
    tone = np.zeros(len(frequency))
    for number, amplitude in enumerate(partials, start=1):
        tone += amplitude * np.sin(number * phase)
    return tone


def siren(length: int, rate: int, rng: np.random.Generator) -> Signal:
    """An emergency-vehicle siren: wail (slow sweep), yelp (fast sweep) or two-tone."""
    times = np.arange(length) / rate
    kind = rng.choice(("wail", "yelp", "two-tone"))
    low, high = rng.uniform(550, 800), rng.uniform(1_100, 1_600)
    if kind == "two-tone":
        half_period = rng.uniform(0.4, 0.7)
        frequency = np.where((times // half_period) % 2 == 0, high, low)
    else:
        period = rng.uniform(3.0, 6.0) if kind == "wail" else rng.uniform(0.2, 0.35)
        sweep = 0.5 - 0.5 * np.cos(2 * np.pi * times / period + rng.uniform(0, 2 * np.pi))
        frequency = low + (high - low) * sweep
    # Odd partials: a siren horn's tone is closer to a square wave than to a sine.
    tone = _harmonic_tone(frequency, rate, (1.0, 0.0, 0.35, 0.0, 0.15))
    # Passing by: the level drifts up or down across the clip.
    drift = np.linspace(rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.0), length)
    return tone * drift * _fade(length, rate, 0.2)


def scream(rate: int, rng: np.random.Generator) -> Signal:
    """One scream: a high, rising-then-falling, wavering harmonic cry with breath noise."""
    seconds = rng.uniform(0.5, 1.6)
    length = int(seconds * rate)
    position = np.linspace(0.0, 1.0, length)
    peak = rng.uniform(700, 1_400)
    contour = peak * (0.75 + 0.25 * np.sin(np.pi * position) ** rng.uniform(0.5, 2.0))
    vibrato = 1 + rng.uniform(0.01, 0.04) * np.sin(2 * np.pi * rng.uniform(5, 9) * position)
    jitter = 1 + 0.01 * np.cumsum(rng.standard_normal(length)) / np.sqrt(length)
    tone = _harmonic_tone(contour * vibrato * jitter, rate, (1.0, 0.6, 0.35, 0.2, 0.1))
    breath = rng.standard_normal(length) * rng.uniform(0.05, 0.2)
    envelope = np.sin(np.pi * position) ** 0.5
    return np.asarray((tone + breath) * envelope * _fade(length, rate), dtype=np.float64)


def breaking_glass(rate: int, rng: np.random.Generator) -> Signal:
    """A pane breaking: a broadband crack, ringing high partials, then falling fragments."""
    seconds = rng.uniform(0.8, 1.6)
    length = int(seconds * rate)
    times = np.arange(length) / rate
    crack = rng.standard_normal(length) * np.exp(-times / rng.uniform(0.005, 0.02))
    ring = np.zeros(length)
    for _ in range(int(rng.integers(30, 70))):
        onset = int(rng.uniform(0, 0.08) * rate)
        frequency = rng.uniform(2_000, min(7_500, rate / 2 - 100))
        decay = rng.uniform(0.03, 0.35)
        local = times[: length - onset]
        ring[onset:] += (
            rng.uniform(0.2, 1.0)
            * np.sin(2 * np.pi * frequency * local + rng.uniform(0, 2 * np.pi))
            * np.exp(-local / decay)
        )
    tinkles = np.zeros(length)
    for _ in range(int(rng.integers(5, 15))):
        onset = int(rng.uniform(0.15, 0.9) * length)
        size = min(length - onset, int(0.015 * rate))
        tinkles[onset : onset + size] += (
            rng.standard_normal(size)
            * np.exp(-np.arange(size) / (0.003 * rate))
            * rng.uniform(0.1, 0.5)
        )
    return np.asarray(3.0 * crack + 0.3 * ring + tinkles, dtype=np.float64)


def crowd(length: int, voices: list[Signal], rng: np.random.Generator, talkers: int) -> Signal:
    """`talkers` utterances from `voices` overlapped at random offsets, looped to `length`."""
    babble = np.zeros(length)
    for _ in range(talkers):
        voice = voices[int(rng.integers(len(voices)))]
        looped = np.resize(voice, length + len(voice))
        offset = int(rng.integers(len(voice)))
        babble += looped[offset : offset + length] * rng.uniform(0.5, 1.0) / np.sqrt(power(voice))
    return babble


def noise(colour: str, length: int, rng: np.random.Generator) -> Signal:
    """White, pink (-3 dB/octave) or brown (-6 dB/octave) noise."""
    size = _transform_length(length)
    white = rng.standard_normal(size)
    if colour == "white":
        return white[:length]
    spectrum = np.fft.rfft(white)
    frequencies = np.maximum(np.fft.rfftfreq(size), 1.0 / size)
    spectrum /= np.sqrt(frequencies) if colour == "pink" else frequencies
    return np.fft.irfft(spectrum, n=size)[:length]


def band_limit(signal: Signal, rate: int, low_hz: float, high_hz: float) -> Signal:
    """Everything outside `low_hz`-`high_hz` removed, with 100 Hz cosine skirts."""
    size = _transform_length(len(signal))
    spectrum = np.fft.rfft(signal, size)
    frequencies = np.fft.rfftfreq(size, d=1.0 / rate)
    gain = np.clip((frequencies - (low_hz - 100)) / 100, 0, 1) * np.clip(
        ((high_hz + 100) - frequencies) / 100, 0, 1
    )
    filtered = np.fft.irfft(spectrum * (0.5 - 0.5 * np.cos(np.pi * gain)), n=size)
    return filtered[: len(signal)]


def room(signal: Signal, rate: int, reverb_seconds: float, rng: np.random.Generator) -> Signal:
    """The signal in a room: convolved with decaying noise (`reverb_seconds` to -60 dB)."""
    length = int(reverb_seconds * rate)
    times = np.arange(length) / rate
    response = rng.standard_normal(length) * np.exp(-6.9 * times / reverb_seconds)
    response[0] = 1.0 / rng.uniform(0.2, 0.5)
    size = _transform_length(len(signal) + length - 1)
    wet = np.fft.irfft(np.fft.rfft(signal, size) * np.fft.rfft(response, size), n=size)
    wet = wet[: len(signal)]
    return np.asarray(wet * np.sqrt(power(signal) / power(wet)), dtype=np.float64)


SHOUT_EMPHASIS = 2.5
"""Weight of the first difference added to a shouted voice: a raised voice has relatively
more energy in its upper harmonics (a flatter spectral tilt)."""


def shout(signal: Signal, drive_db: float) -> Signal:
    """A voice too loud for the microphone: brighter, driven `drive_db` past full scale and
    clipped flat."""
    brighter = signal + SHOUT_EMPHASIS * np.r_[0.0, np.diff(signal)]
    driven = brighter / (np.max(np.abs(brighter)) + 1e-12) * 10 ** (drive_db / 20)
    return np.asarray(np.clip(driven, -1.0, 1.0))
