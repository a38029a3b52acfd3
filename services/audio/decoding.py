"""Reading uploaded audio: sniffed by content, checked against limits, mono at the model rate.

The file type comes from the bytes (libsndfile reads WAV, FLAC, OGG/Vorbis and MP3), never
from a file name or Content-Type. Header facts (sample rate, channels, frames) are checked
before the samples are decoded, so a 10 MB file that claims hours of audio is refused
without decoding it.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr
from numpy.typing import NDArray

from services.core.errors import InvalidInput, ItemTooLarge, UnsupportedMediaType, UnusableContent

READABLE_FORMATS = ("WAV", "FLAC", "OGG", "MP3")
"""Container formats accepted; libsndfile knows more, but these are the documented ones."""

MAX_CHANNELS = 8
MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 384_000


@dataclass(frozen=True)
class AudioLimits:
    """What one clip may be."""

    max_bytes: int
    max_seconds: float
    min_seconds: float
    silence_threshold_dbfs: float


@dataclass(frozen=True)
class DecodedAudio:
    """One clip as the models read it: mono float32 samples in [-1, 1] at `sample_rate`."""

    samples: NDArray[np.float32]
    sample_rate: int
    source_format: str
    source_sample_rate: int
    source_channels: int

    @property
    def duration_seconds(self) -> float:
        """Length of the clip."""
        return len(self.samples) / self.sample_rate


def loudness_dbfs(samples: NDArray[np.float32]) -> float:
    """RMS level in dB relative to full scale; minus infinity for digital silence."""
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def _declared_wav_shortfall(data: bytes) -> tuple[int, int] | None:
    """(declared, present) sample bytes of a RIFF/WAVE file whose data chunk is cut short.

    libsndfile quietly reads what is there; a cut upload should be refused instead of
    classified on its first half. Streaming writers that leave the size unset (0 or
    0xFFFFFFFF) are not flagged.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        body = offset + 8
        if chunk_id == b"data":
            present = len(data) - body
            if size in (0, 0xFFFFFFFF) or present >= size:
                return None
            return size, present
        offset = body + size + (size & 1)
    return None


def decode_audio(data: bytes, *, label: str, limits: AudioLimits, sample_rate: int) -> DecodedAudio:
    """Validate and decode one file; every error names `label` (e.g. `audio[0] (call.wav)`)."""
    if not data:
        raise InvalidInput(f"{label}: the file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ItemTooLarge(
            f"{label}: {len(data)} bytes or more; the limit is {limits.max_bytes} bytes "
            "(MTC_MAX_AUDIO_BYTES)"
        )
    try:
        info = soundfile.info(io.BytesIO(data))
    except (soundfile.SoundFileError, RuntimeError, ValueError):
        raise UnsupportedMediaType(
            f"{label}: not a readable audio file; send WAV, FLAC, OGG/Vorbis or MP3"
        ) from None
    if info.format not in READABLE_FORMATS:
        raise UnsupportedMediaType(
            f"{label}: {info.format} audio is not accepted; send WAV, FLAC, OGG/Vorbis or MP3"
        )
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise InvalidInput(
            f"{label}: the header declares a sample rate of {info.samplerate} Hz; accepted "
            f"rates are {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz"
        )
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise InvalidInput(
            f"{label}: the header declares {info.channels} channels; 1 to {MAX_CHANNELS} "
            "are accepted"
        )
    declared_seconds = info.frames / info.samplerate
    if declared_seconds > limits.max_seconds:
        raise ItemTooLarge(
            f"{label}: {declared_seconds:.1f} s of audio; the limit is "
            f"{limits.max_seconds:g} s (MTC_MAX_AUDIO_SECONDS)"
        )
    shortfall = _declared_wav_shortfall(data)
    if shortfall is not None:
        declared, present = shortfall
        raise InvalidInput(
            f"{label}: truncated WAV file: the header declares {declared} bytes of samples "
            f"but only {present} are present"
        )
    try:
        frames, _ = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, ValueError) as exc:
        raise InvalidInput(f"{label}: the {info.format} data is damaged: {exc}") from None
    # MP3 headers only estimate the length; the decoded samples are the truth.
    if len(frames) / info.samplerate > limits.max_seconds:
        raise ItemTooLarge(
            f"{label}: {len(frames) / info.samplerate:.1f} s of audio; the limit is "
            f"{limits.max_seconds:g} s (MTC_MAX_AUDIO_SECONDS)"
        )
    mono = frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]
    if not np.all(np.isfinite(mono)):
        raise InvalidInput(f"{label}: the samples contain NaN or infinite values")
    if info.samplerate != sample_rate and len(mono) > 0:
        mono = soxr.resample(mono, info.samplerate, sample_rate, quality="HQ")
    mono = np.ascontiguousarray(np.clip(mono, -1.0, 1.0), dtype=np.float32)
    duration = len(mono) / sample_rate
    if duration < limits.min_seconds:
        raise UnusableContent(
            f"{label}: {duration:.3f} s of audio; at least {limits.min_seconds:g} s is needed "
            "(MTC_MIN_AUDIO_SECONDS)"
        )
    level = loudness_dbfs(mono)
    if level < limits.silence_threshold_dbfs:
        shown = "-inf" if math.isinf(level) else f"{level:.1f}"
        raise UnusableContent(
            f"{label}: the clip is silent (loudness {shown} dBFS, below the "
            f"{limits.silence_threshold_dbfs:g} dBFS threshold, MTC_SILENCE_THRESHOLD_DBFS)"
        )
    return DecodedAudio(
        samples=mono,
        sample_rate=sample_rate,
        source_format=str(info.format),
        source_sample_rate=int(info.samplerate),
        source_channels=int(info.channels),
    )
