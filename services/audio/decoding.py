"""Reading uploaded audio: sniffed by content, checked against limits, mono at the model rate.

The file type comes from the first bytes (WAV, FLAC, OGG/Vorbis and MP3), never from a file
name or Content-Type, and only those four ever reach libsndfile, which knows many more
formats and would otherwise try each. Header facts (sample rate, channels, frames) are
checked before the samples are decoded, so a 100 KB file that claims hours of audio, or
eight channels at 384 kHz, is refused without decoding it. What is accepted is decoded in
blocks and mixed down to mono and resampled as it goes, so one decode holds a block and the
clip at the model rate, never every channel of the whole file at its own rate.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from typing import Final

import numpy as np
import soundfile
import soxr
from numpy.typing import NDArray

from services.core.errors import InvalidInput, ItemTooLarge, UnsupportedMediaType, UnusableContent

MAX_CHANNELS = 8
MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 384_000

FLOAT32_BYTES: Final = 4
DECODE_BLOCK_FRAMES: Final = 32_768
"""Frames decoded at a time: at most 1 MiB of float32 with 8 channels."""

_NOT_AUDIO: Final = "not a readable audio file; send WAV, FLAC, OGG/Vorbis or MP3"


def decoded_bytes(seconds: float, channels: int, sample_rate: int) -> int:
    """Bytes of float32 samples that `seconds` of `channels` at `sample_rate` decode to."""
    return math.ceil(seconds * sample_rate) * channels * FLOAT32_BYTES


@dataclass(frozen=True)
class AudioLimits:
    """What one clip may be."""

    max_bytes: int
    max_seconds: float
    min_seconds: float
    silence_threshold_dbfs: float
    max_decoded_bytes: int
    """Most bytes of float32 samples (frames x channels x 4) a clip may declare; it bounds
    the decoding work of one clip, checked from the header before anything is decoded."""


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


def sniff_container(data: bytes) -> str | None:
    """The container named by the file's first bytes (libsndfile's name), or None if it
    is not one we accept."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "WAV"
    if data.startswith(b"fLaC"):
        return "FLAC"
    if data.startswith(b"OggS"):
        return "OGG"
    if data.startswith(b"ID3") or _starts_with_mpeg_audio_frame(data):
        return "MP3"
    return None


def _starts_with_mpeg_audio_frame(data: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, then a version, layer, bitrate and rate
    that are not the reserved values."""
    if len(data) < 4 or data[0] != 0xFF or data[1] & 0xE0 != 0xE0:
        return False
    version, layer = (data[1] >> 3) & 0b11, (data[1] >> 1) & 0b11
    bitrate, rate = data[2] >> 4, (data[2] >> 2) & 0b11
    return version != 0b01 and layer != 0b00 and bitrate != 0b1111 and rate != 0b11


def _declared_wav_shortfall(data: bytes) -> tuple[int, int] | None:
    """(declared, present) sample bytes of a RIFF/WAVE file whose data chunk is cut short.

    libsndfile quietly reads what is there; a cut upload should be refused instead of
    classified on its first half. Streaming writers that leave the size unset (0 or
    0xFFFFFFFF) are not flagged.
    """
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
    container = sniff_container(data)
    if container is None:
        raise UnsupportedMediaType(f"{label}: {_NOT_AUDIO}")
    try:
        sound = soundfile.SoundFile(io.BytesIO(data))
    except (soundfile.SoundFileError, RuntimeError, ValueError):
        raise UnsupportedMediaType(f"{label}: {_NOT_AUDIO}") from None
    with sound:
        # soundfile refuses `format=` when reading, so check what libsndfile found instead:
        # bytes that start like one container but parse as another are refused.
        if sound.format != container:
            raise UnsupportedMediaType(
                f"{label}: starts like {container} but reads as {sound.format}; {_NOT_AUDIO}"
            )
        _check_header(sound, label=label, limits=limits)
        shortfall = _declared_wav_shortfall(data) if container == "WAV" else None
        if shortfall is not None:
            declared, present = shortfall
            raise InvalidInput(
                f"{label}: truncated WAV file: the header declares {declared} bytes of "
                f"samples but only {present} are present"
            )
        try:
            mono = _decode_mono(sound, label=label, limits=limits, sample_rate=sample_rate)
        except (soundfile.SoundFileError, RuntimeError, ValueError) as exc:
            raise InvalidInput(f"{label}: the {container} data is damaged: {exc}") from None
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
        source_format=container,
        source_sample_rate=int(sound.samplerate),
        source_channels=int(sound.channels),
    )


def _check_header(sound: soundfile.SoundFile, *, label: str, limits: AudioLimits) -> None:
    if not MIN_SAMPLE_RATE <= sound.samplerate <= MAX_SAMPLE_RATE:
        raise InvalidInput(
            f"{label}: the header declares a sample rate of {sound.samplerate} Hz; accepted "
            f"rates are {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz"
        )
    if not 1 <= sound.channels <= MAX_CHANNELS:
        raise InvalidInput(
            f"{label}: the header declares {sound.channels} channels; 1 to {MAX_CHANNELS} "
            "are accepted"
        )
    declared_seconds = sound.frames / sound.samplerate
    if declared_seconds > limits.max_seconds:
        raise ItemTooLarge(
            f"{label}: {declared_seconds:.1f} s of audio; the limit is "
            f"{limits.max_seconds:g} s (MTC_MAX_AUDIO_SECONDS)"
        )
    declared_bytes = sound.frames * sound.channels * FLOAT32_BYTES
    if declared_bytes > limits.max_decoded_bytes:
        raise ItemTooLarge(
            f"{label}: {declared_seconds:.1f} s of {sound.channels} channels at "
            f"{sound.samplerate} Hz decode to {declared_bytes} bytes of samples; the limit "
            f"is {limits.max_decoded_bytes} bytes (MTC_MAX_AUDIO_DECODED_BYTES)"
        )


def _decode_mono(
    sound: soundfile.SoundFile, *, label: str, limits: AudioLimits, sample_rate: int
) -> NDArray[np.float32]:
    """The samples mixed down to mono at `sample_rate`, decoded one block at a time."""
    channels, source_rate = sound.channels, sound.samplerate
    # MP3 headers only estimate the length: the frames actually decoded are counted too.
    max_frames = min(
        math.floor(limits.max_seconds * source_rate),
        limits.max_decoded_bytes // (channels * FLOAT32_BYTES),
    )
    resampler = (
        soxr.ResampleStream(source_rate, sample_rate, 1, dtype="float32", quality="HQ")
        if source_rate != sample_rate
        else None
    )
    block = np.empty((DECODE_BLOCK_FRAMES, channels), dtype=np.float32)
    pieces: list[NDArray[np.float32]] = []
    decoded = 0
    while True:
        frames = sound.read(dtype="float32", always_2d=True, out=block)
        if len(frames) == 0:
            break
        decoded += len(frames)
        if decoded > max_frames:
            raise ItemTooLarge(
                f"{label}: more than {max_frames} frames decoded ({max_frames / source_rate:.1f} "
                f"s of {channels} channels); the limits are {limits.max_seconds:g} s "
                f"(MTC_MAX_AUDIO_SECONDS) and {limits.max_decoded_bytes} bytes of samples "
                "(MTC_MAX_AUDIO_DECODED_BYTES)"
            )
        mono = frames.mean(axis=1, dtype=np.float32) if channels > 1 else frames[:, 0].copy()
        if not np.all(np.isfinite(mono)):
            raise InvalidInput(f"{label}: the samples contain NaN or infinite values")
        pieces.append(mono if resampler is None else resampler.resample_chunk(mono))
    if resampler is not None and decoded > 0:
        pieces.append(resampler.resample_chunk(np.empty(0, dtype=np.float32), last=True))
    samples = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.float32)
    return np.clip(samples, -1.0, 1.0, out=samples).astype(np.float32, copy=False)
