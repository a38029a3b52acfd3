"""What the audio branch measures of a clip: pooled statistics of how it sounds.

One fixed-length vector per clip, whatever its length: the spectral shape and its movement
(mel bands), loudness dynamics and clipping (shouting), pitch level, range and movement
(raised, agitated voices), a speaking-rate estimate, and tonal and transient events (sirens,
screams, breaking glass). Every measure is relative to the clip's own level, so the gain of
the phone line does not matter; only the shape of the waveform and the spectrum does. The
words are not measured at all: that is the transcript branch's job.

Plain numpy on a 20 ms hop: a few milliseconds of CPU for a 5-second clip.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

_TINY = 1e-10


@dataclass(frozen=True)
class AcousticFeatureConfig:
    """Analysis parameters; stored with the model so serving measures what training did."""

    sample_rate: int = 16_000
    n_fft: int = 512
    hop_length: int = 320
    n_mels: int = 32
    fmin: float = 60.0
    fmax: float = 7_600.0
    pitch_min_hz: float = 70.0
    pitch_max_hz: float = 500.0

    def to_json(self) -> dict[str, Any]:
        """The config as stored in the model directory."""
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> AcousticFeatureConfig:
        """Parse a stored config."""
        return cls(**{key: document[key] for key in cls.__dataclass_fields__ if key in document})

    def frames(self, samples: int) -> int:
        """Analysis frames for a clip of `samples` samples (centred framing)."""
        return 1 + samples // self.hop_length


SUMMARY_NAMES = (
    "crest_db",
    "clipped_share_log",
    "level_spread_db",
    "level_p50_below_p99_db",
    "loud_frame_share",
    "active_share",
    "pause_share",
    "centroid_log_mean",
    "centroid_log_std",
    "flatness_mean",
    "flatness_std",
    "tilt_db_mean",
    "tilt_db_std",
    "flux_mean",
    "flux_p99",
    "transient_rate",
    "tonal_prominence_mean",
    "tonal_prominence_p90",
    "tonal_share",
    "tonal_steadiness",
    "voiced_share",
    "voicing_strength",
    "pitch_median_semitones",
    "pitch_p10_semitones",
    "pitch_p90_semitones",
    "pitch_iqr_semitones",
    "pitch_movement_semitones",
    "high_periodic_share",
    "syllable_rate",
    "modulation_centroid_hz",
)


def feature_names(config: AcousticFeatureConfig) -> list[str]:
    """Names of the vector's entries, in order."""
    bands = [f"mel{band:02d}_mean_db" for band in range(config.n_mels)]
    movement = [f"mel{band:02d}_std_db" for band in range(config.n_mels)]
    return [*bands, *movement, *SUMMARY_NAMES]


@functools.lru_cache(maxsize=4)
def _mel_filters(config: AcousticFeatureConfig) -> NDArray[np.float64]:
    import librosa

    filters = librosa.filters.mel(
        sr=config.sample_rate,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
    )
    # Transposed and contiguous: (frequency bins, bands), ready to multiply spectra by.
    return np.ascontiguousarray(np.asarray(filters, dtype=np.float64).T)


@functools.lru_cache(maxsize=4)
def _window_autocorrelation(n_fft: int) -> NDArray[np.float64]:
    # Dividing a frame's autocorrelation by its window's removes the taper's own decay, so a
    # perfectly periodic frame scores close to 1 at its period.
    window = np.hanning(n_fft)
    spectrum = np.fft.rfft(window, n=2 * n_fft)
    correlation = np.fft.irfft(np.abs(spectrum) ** 2)[:n_fft]
    return np.asarray(correlation / correlation[0], dtype=np.float64)


def _frames(samples: NDArray[np.float64], config: AcousticFeatureConfig) -> NDArray[np.float64]:
    """(frames, n_fft) centred frames, a strided view of the padded signal (no copy)."""
    half = config.n_fft // 2
    padded = np.pad(samples, (half, half))
    windows = np.lib.stride_tricks.sliding_window_view(padded, config.n_fft)
    return np.asarray(windows[:: config.hop_length][: config.frames(len(samples))])


def _percentile(values: NDArray[np.float64], share: float, default: float = 0.0) -> float:
    return float(np.percentile(values, share)) if values.size else default


def _mean(values: NDArray[np.float64], default: float = 0.0) -> float:
    return float(values.mean()) if values.size else default


def _std(values: NDArray[np.float64]) -> float:
    return float(values.std()) if values.size > 1 else 0.0


def _pitch(
    frames: NDArray[np.float64], active: NDArray[np.bool_], config: AcousticFeatureConfig
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per frame: (best periodicity in the voice range, its F0 in Hz, best periodicity above
    it), from the autocorrelation of the active frames; 0, 100 Hz and 0 elsewhere."""
    strength, pitch_hz, high = (
        np.zeros(len(frames)),
        np.full(len(frames), 100.0),
        np.zeros(len(frames)),
    )
    rows = np.flatnonzero(active)
    if rows.size == 0:
        return strength, pitch_hz, high
    # Zero-padded to twice the frame, the inverse transform of the power spectrum is the
    # frame's (non-circular) autocorrelation.
    transform = np.fft.rfft(frames[rows] * np.hanning(config.n_fft), 2 * config.n_fft)
    power = transform.real**2 + transform.imag**2
    correlation = np.fft.irfft(power, axis=1)[:, : config.n_fft]
    energy = np.maximum(correlation[:, :1], _TINY)
    normalised = correlation / energy / np.maximum(_window_autocorrelation(config.n_fft), 0.05)
    shortest = max(2, int(config.sample_rate / config.pitch_max_hz))
    longest = min(config.n_fft // 2, int(config.sample_rate / config.pitch_min_hz))
    voice_range = normalised[:, shortest : longest + 1]
    best = voice_range.argmax(axis=1)
    strength[rows] = voice_range[np.arange(len(best)), best]
    pitch_hz[rows] = config.sample_rate / (best + shortest)
    # Screams and sirens repeat faster than any speaking voice (roughly 500-2000 Hz).
    fastest = max(2, int(config.sample_rate / 2_000))
    if shortest > fastest:
        high[rows] = normalised[:, fastest:shortest].max(axis=1)
    return strength, pitch_hz, high


def _syllable_rate(
    band_level_db: NDArray[np.float64], active: NDArray[np.bool_], config: AcousticFeatureConfig
) -> tuple[float, float]:
    """(level peaks per active second, centroid of the level's 1-12 Hz modulation spectrum)."""
    frame_rate = config.sample_rate / config.hop_length
    kernel = np.hanning(7)
    # Edge padding: zeros would read as a jump to 0 dB at both ends of the clip.
    padded = np.pad(band_level_db, len(kernel) // 2, mode="edge")
    smooth = np.convolve(padded, kernel / kernel.sum(), mode="valid")
    is_peak = np.zeros(len(smooth), dtype=bool)
    is_peak[1:-1] = (smooth[1:-1] > smooth[:-2]) & (smooth[1:-1] >= smooth[2:])
    candidates = np.flatnonzero(is_peak & active)
    kept: list[int] = []
    window = int(0.1 * frame_rate)
    for index in candidates:
        low = smooth[max(0, index - window) : index + window + 1].min()
        # A syllable nucleus stands out from its surroundings; 80 ms apart at least.
        if smooth[index] - low >= 3.0 and (not kept or index - kept[-1] >= 0.08 * frame_rate):
            kept.append(int(index))
    active_seconds = max(active.sum() / frame_rate, 0.1)
    envelope = smooth - smooth.mean()
    size = 1 << max(8, (len(envelope) - 1).bit_length())  # a power of two: a fast transform
    spectrum = np.abs(np.fft.rfft(envelope * np.hanning(len(envelope)), n=size))
    frequencies = np.fft.rfftfreq(size, d=1.0 / frame_rate)
    band = (frequencies >= 1.0) & (frequencies <= 12.0)
    power = spectrum[band] ** 2
    centroid = float((frequencies[band] * power).sum() / power.sum()) if power.sum() > 0 else 0.0
    return len(kept) / active_seconds, centroid


def acoustic_features(
    samples: NDArray[np.float32], config: AcousticFeatureConfig
) -> NDArray[np.float32]:
    """The clip's feature vector (`feature_names(config)` order)."""
    signal = np.asarray(samples, dtype=np.float64)
    signal = signal - signal.mean()
    peak = float(np.abs(signal).max()) if signal.size else 0.0
    rms = float(np.sqrt(np.mean(signal**2))) if signal.size else 0.0
    crest_db = 20 * np.log10((peak + _TINY) / (rms + _TINY))
    # Clipped audio sits on flat tops at its maximum; clean speech almost never does.
    clipped_share = float(np.mean(np.abs(signal) >= 0.995 * peak)) if peak > 0 else 0.0

    frames = _frames(signal, config)
    transform = np.fft.rfft(frames * np.hanning(config.n_fft), axis=1)
    spectrum = np.asarray(transform.real**2 + transform.imag**2, dtype=np.float64)
    frequencies = np.fft.rfftfreq(config.n_fft, d=1.0 / config.sample_rate)
    level_db = 10 * np.log10(spectrum.sum(axis=1) + _TINY)
    loudest = _percentile(level_db, 99)
    active = level_db >= loudest - 35.0
    active_level = level_db[active]

    mel_db = 10 * np.log10(spectrum @ _mel_filters(config) + _TINY)
    mel_db = np.maximum(mel_db, mel_db.max() - 80.0)
    mel_db -= mel_db.mean()
    band_means = mel_db.mean(axis=0)
    band_movement = mel_db.std(axis=0)

    in_band = (frequencies >= 100) & (frequencies <= 7_000)
    useful = spectrum[:, in_band] + _TINY
    centroid = (useful * frequencies[in_band]).sum(axis=1) / useful.sum(axis=1)
    flatness = np.exp(np.log(useful).mean(axis=1)) / useful.mean(axis=1)
    high = spectrum[:, (frequencies >= 2_000) & (frequencies <= 7_000)].sum(axis=1)
    low = spectrum[:, (frequencies >= 100) & (frequencies < 1_000)].sum(axis=1)
    tilt_db = 10 * np.log10((high + _TINY) / (low + _TINY))

    flux = np.maximum(np.diff(mel_db, axis=0), 0.0).mean(axis=1) if len(mel_db) > 1 else level_db
    frame_rate = config.sample_rate / config.hop_length
    seconds = max(len(level_db) / frame_rate, 0.1)
    transient_threshold = _mean(flux) + 3 * _std(flux)
    transients = float(np.sum(flux > transient_threshold)) if flux.size > 1 else 0.0

    tonal_band = (frequencies >= 400) & (frequencies <= 4_000)
    tonal_db = 10 * np.log10(spectrum[:, tonal_band] + _TINY)
    prominence = tonal_db.max(axis=1) - np.median(tonal_db, axis=1)
    peak_bin = tonal_db.argmax(axis=1)
    tonal = active & (prominence > 25.0)
    steady = tonal[1:] & tonal[:-1] & (np.abs(np.diff(peak_bin)) <= 2)
    tonal_steadiness = float(steady.sum() / max(tonal.sum(), 1))

    # Pitch is read every other frame (40 ms): enough for its statistics, at half the cost.
    pitch_active = active[::2]
    strength, pitch_hz, high_periodicity = _pitch(frames[::2], pitch_active, config)
    voiced = pitch_active & (strength > 0.5)
    semitones = 12 * np.log2(pitch_hz[voiced] / 100.0)
    consecutive = voiced[1:] & voiced[:-1]
    all_semitones = 12 * np.log2(pitch_hz / 100.0)
    movement = np.abs(np.diff(all_semitones))[consecutive]

    speech_bands = (frequencies >= 300) & (frequencies <= 2_500)
    speech_level = 10 * np.log10(spectrum[:, speech_bands].sum(axis=1) + _TINY)
    syllable_rate, modulation_centroid = _syllable_rate(speech_level, active, config)
    first, last = (np.flatnonzero(active)[[0, -1]]) if active.any() else (0, 0)
    inside = active[first : last + 1]

    summary = [
        crest_db,
        np.log10(clipped_share + 1e-5),
        _percentile(active_level, 95) - _percentile(active_level, 5),
        loudest - _percentile(active_level, 50, loudest),
        float(np.mean(level_db >= loudest - 6.0)),
        float(active.mean()),
        float(1.0 - inside.mean()) if inside.size else 0.0,
        _mean(np.log(centroid[active])),
        _std(np.log(centroid[active])),
        _mean(flatness[active]),
        _std(flatness[active]),
        _mean(tilt_db[active]),
        _std(tilt_db[active]),
        _mean(flux),
        _percentile(flux, 99),
        transients / seconds,
        _mean(prominence[active]),
        _percentile(prominence[active], 90),
        float(tonal.sum() / max(active.sum(), 1)),
        tonal_steadiness,
        float(voiced.sum() / max(pitch_active.sum(), 1)),
        _mean(strength[pitch_active]),
        _percentile(semitones, 50),
        _percentile(semitones, 10),
        _percentile(semitones, 90),
        _percentile(semitones, 75) - _percentile(semitones, 25),
        _mean(movement),
        float(np.mean(high_periodicity[pitch_active] > 0.7)) if pitch_active.any() else 0.0,
        syllable_rate,
        modulation_centroid,
    ]
    vector = np.concatenate([band_means, band_movement, np.asarray(summary, dtype=np.float64)])
    return np.asarray(np.nan_to_num(vector, nan=0.0, posinf=0.0, neginf=0.0), dtype=np.float32)
