"""Reading uploaded audio: formats by content, limits before decoding, decoding in bounded
memory, clear errors."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import soundfile

from services.audio.decoding import (
    AudioLimits,
    decode_audio,
    decoded_bytes,
    loudness_dbfs,
    sniff_container,
)
from services.core.errors import (
    InvalidInput,
    ItemTooLarge,
    UnsupportedMediaType,
    UnusableContent,
)
from tests.support.audio_clips import constant_flac, encode, spoken_wav, tone

LIMITS = AudioLimits(
    max_bytes=10 * 1024 * 1024,
    max_seconds=30.0,
    min_seconds=0.1,
    silence_threshold_dbfs=-55.0,
    max_decoded_bytes=decoded_bytes(30.0, 2, 96_000),
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


# --------------------------------------------------------------------------- decode bombs


def test_each_documented_container_is_named_by_its_first_bytes() -> None:
    mono = tone(0.5)
    for file_format in ("WAV", "FLAC", "OGG", "MP3"):
        assert sniff_container(encode(mono, file_format=file_format)) == file_format
    assert sniff_container(b"ID3\x04\x00" + bytes(20)) == "MP3"
    # MPEG-1 layer III frame header, 128 kbit/s at 44.1 kHz, without an ID3 tag.
    assert sniff_container(b"\xff\xfb\x90\x64" + bytes(20)) == "MP3"
    assert sniff_container(b"\xff\xff\xff\xff" + bytes(20)) is None  # reserved layer bits
    assert sniff_container(b"%PDF-1.7") is None


@pytest.mark.parametrize("file_format", ["AIFF", "AU", "CAF", "W64", "RF64"])
def test_formats_libsndfile_knows_but_we_do_not_accept_never_reach_it(
    file_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[object] = []
    real = soundfile.SoundFile

    def recording(*args: Any, **kwargs: Any) -> soundfile.SoundFile:
        opened.append(args[0])
        return real(*args, **kwargs)

    data = io.BytesIO()
    soundfile.write(data, tone(0.5), 16_000, format=file_format)
    # `soundfile.info` and `soundfile.read` open files through `SoundFile` too.
    monkeypatch.setattr(soundfile, "SoundFile", recording)
    with pytest.raises(UnsupportedMediaType, match=r"audio\[0\]: not a readable audio file"):
        decode(data.getvalue())
    assert opened == []


def test_more_samples_than_the_budget_are_refused_from_the_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """8 channels at 384 kHz for 2 s: 24.6 MB of samples, over the 23.04 MB budget, in
    under 100 KB of FLAC; the header is enough to refuse it."""
    data = constant_flac(8, 384_000, 2.0)
    assert len(data) < 100_000

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("samples were decoded")

    monkeypatch.setattr(soundfile.SoundFile, "read", no_decoding)
    with pytest.raises(
        ItemTooLarge,
        match=r"audio\[0\]: .* 24576000 bytes of samples.*"
        r"23040000 bytes \(MTC_MAX_AUDIO_DECODED_BYTES\)",
    ):
        decode(data)


def test_a_clip_exactly_at_the_budget_decodes_and_one_frame_more_is_refused() -> None:
    limits = replace(LIMITS, max_decoded_bytes=decoded_bytes(1.0, 2, 48_000))
    stereo = np.stack([tone(1.0, rate=48_000)] * 2, axis=1)
    at_limit = decode_audio(
        encode(stereo, rate=48_000, file_format="FLAC"),
        label="audio[0]",
        limits=limits,
        sample_rate=16_000,
    )
    assert at_limit.duration_seconds == pytest.approx(1.0)
    longer = np.concatenate([stereo, stereo[:1]])
    with pytest.raises(ItemTooLarge, match="MTC_MAX_AUDIO_DECODED_BYTES"):
        decode(encode(longer, rate=48_000, file_format="FLAC"), limits)


def test_decoding_holds_a_block_and_the_result_not_every_channel_of_the_file() -> None:
    """10 s of 8 channels at 48 kHz are 15.4 MB of float32 samples; decoded in blocks and
    mixed down as it goes, the decode allocates about a block (1 MiB) and the 16 kHz
    result (0.64 MB) at a time."""
    limits = replace(LIMITS, max_decoded_bytes=decoded_bytes(10.0, 8, 48_000))
    data = constant_flac(8, 48_000, 10.0)
    tracemalloc.start()
    try:
        decoded = decode_audio(data, label="audio[0]", limits=limits, sample_rate=16_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.duration_seconds == pytest.approx(10.0)
    assert decoded.source_channels == 8
    assert peak < 4 * 1024 * 1024, peak


class EndlessSound(soundfile.SoundFile):
    """A file that decodes forever, like an MP3 whose header underestimates its length."""

    def read(self, *args: Any, **kwargs: Any) -> Any:
        frames = super().read(*args, **kwargs)
        if len(frames) == 0:
            self.seek(0)
            frames = super().read(*args, **kwargs)
        return frames


def test_decoding_stops_as_soon_as_the_decoded_length_passes_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(soundfile, "SoundFile", EndlessSound)
    started = time.perf_counter()
    with pytest.raises(ItemTooLarge, match=r"audio\[0\]: more than 480000 frames decoded"):
        decode(encode(tone(1.0)))
    assert time.perf_counter() - started < 2.0
