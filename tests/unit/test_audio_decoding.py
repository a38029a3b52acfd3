"""Reading uploaded audio: formats by content, limits before decoding, clear errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from services.audio.decoding import AudioLimits, decode_audio, loudness_dbfs
from services.core.errors import (
    InvalidInput,
    ItemTooLarge,
    UnsupportedMediaType,
    UnusableContent,
)
from tests.support.audio_clips import encode, spoken_wav, tone

LIMITS = AudioLimits(
    max_bytes=10 * 1024 * 1024, max_seconds=30.0, min_seconds=0.1, silence_threshold_dbfs=-55.0
)


def decode(data: bytes, limits: AudioLimits = LIMITS) -> np.ndarray:
    return decode_audio(data, label="audio[0]", limits=limits, sample_rate=16_000).samples


@pytest.mark.parametrize("file_format", ["WAV", "FLAC", "OGG", "MP3"])
def test_every_documented_format_decodes_to_mono_16k(file_format: str) -> None:
    stereo = np.stack([tone(1.0, rate=44_100), tone(1.0, rate=44_100, frequency=660)], axis=1)
    decoded = decode_audio(
        encode(stereo, rate=44_100, file_format=file_format),
        label="audio[0]",
        limits=LIMITS,
        sample_rate=16_000,
    )
    assert decoded.source_format == file_format
    assert decoded.source_channels == 2
    assert decoded.samples.ndim == 1
    assert decoded.samples.dtype == np.float32
    # MP3 adds encoder padding; every format lands within 0.1 s of one second.
    assert abs(decoded.duration_seconds - 1.0) < 0.1


def test_speech_keeps_its_length() -> None:
    decoded = decode_audio(
        spoken_wav("call an ambulance"), label="a", limits=LIMITS, sample_rate=16_000
    )
    assert 0.5 < decoded.duration_seconds < 3.0
    assert loudness_dbfs(decoded.samples) > -40


def test_not_audio_is_unsupported_media() -> None:
    with pytest.raises(UnsupportedMediaType, match=r"audio\[0\]: not a readable audio file"):
        decode(b"%PDF-1.7 this is a document, not a recording" * 10)


def test_empty_file_is_invalid() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode(b"")


def test_truncated_wav_is_refused_not_classified_on_half() -> None:
    whole = encode(tone(2.0))
    with pytest.raises(InvalidInput, match="truncated WAV"):
        decode(whole[: len(whole) // 2])


def test_header_only_wav_is_refused() -> None:
    with pytest.raises(UnsupportedMediaType):
        decode(encode(tone(1.0))[:30])


def test_too_long_is_refused_from_the_header() -> None:
    # 31 s at a low rate is small on disk; the header alone is enough to refuse it.
    with pytest.raises(ItemTooLarge, match=r"31.0 s of audio; the limit is 30 s"):
        decode(encode(tone(31.0, rate=8_000), rate=8_000))


def test_header_claiming_hours_is_refused_without_decoding() -> None:
    wav = bytearray(encode(tone(0.5)))
    data_at = wav.index(b"data")
    # A RIFF header that claims 2 GB of samples in a tiny file.
    wav[data_at + 4 : data_at + 8] = struct.pack("<I", 2_000_000_000)
    with pytest.raises((ItemTooLarge, InvalidInput)):
        decode(bytes(wav))


def test_too_many_bytes_is_refused_before_parsing() -> None:
    with pytest.raises(ItemTooLarge, match="MTC_MAX_AUDIO_BYTES"):
        decode(b"RIFF" + b"\0" * (11 * 1024 * 1024))


def test_silence_is_unusable() -> None:
    with pytest.raises(UnusableContent, match="silent"):
        decode(encode(np.zeros(16_000, dtype=np.float32)))


def test_faint_noise_below_threshold_is_silent() -> None:
    faint = (np.random.default_rng(0).standard_normal(16_000) * 1e-4).astype(np.float32)
    with pytest.raises(UnusableContent, match="dBFS"):
        decode(encode(faint))


def test_zero_samples_is_unusable() -> None:
    with pytest.raises(UnusableContent, match=r"at least 0\.1 s"):
        decode(encode(np.zeros(0, dtype=np.float32)))


def test_absurd_sample_rate_is_refused() -> None:
    wav = bytearray(encode(tone(0.5)))
    fmt_at = wav.index(b"fmt ")
    wav[fmt_at + 12 : fmt_at + 16] = struct.pack("<I", 1)  # 1 Hz
    with pytest.raises((InvalidInput, UnsupportedMediaType)):
        decode(bytes(wav))
