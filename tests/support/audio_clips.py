"""Audio for tests: speech spoken by espeak-ng (plainly, or shouted over a siren), tones,
silence, files in every format, and a tiny emergency-call model directory (random weights,
real code paths)."""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile

from services.artifacts.manifest import write_manifest
from services.audio.features import AcousticFeatureConfig, feature_names
from services.audio.fusion import FusionRule
from services.audio.models.urgency import URGENCY_LABELS, UrgencyClassifier
from services.audio.training import write_call_model_files
from tests.support.models import build_tiny_text_model

CALL_LABELS = ("regular", "help", "robbery", "sexual", "theft", "violence")
RATE = 16_000


def require_speech_tools() -> None:
    """Fail (not skip) with the install command when espeak-ng or sox is missing."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"{missing} not installed: apt-get install espeak-ng sox")


def spoken_wav(text: str, *, voice: str = "en-us", words_per_minute: int = 160) -> bytes:
    """`text` spoken by espeak-ng, as a 16 kHz mono 16-bit WAV file."""
    require_speech_tools()
    with tempfile.TemporaryDirectory(prefix="mtc-test-speech-") as scratch:
        raw, out = Path(scratch) / "raw.wav", Path(scratch) / "out.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(raw), text],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["sox", str(raw), "-b", "16", str(out), "rate", str(RATE), "channels", "1"],
            check=True,
            capture_output=True,
        )
        return out.read_bytes()


def urgent_wav(text: str, *, voice: str = "en-us") -> bytes:
    """`text` as an urgent call: fast, high and wide-ranging, shouted into clipping over a
    two-tone siren (made here, independently of the starter's synthesis), 16 kHz mono WAV."""
    require_speech_tools()
    with tempfile.TemporaryDirectory(prefix="mtc-test-speech-") as scratch:
        raw, out = Path(scratch) / "raw.wav", Path(scratch) / "out.wav"
        markup = f'<speak><prosody range="190%">{text}</prosody></speak>'
        subprocess.run(
            ["espeak-ng", "-m", "-v", voice, "-s", "250", "-p", "92", "-w", str(raw), markup],
            check=True,
            capture_output=True,
        )
        # sox clips what the gain pushes past full scale (and says so on stderr).
        effects = ["rate", str(RATE), "channels", "1", "treble", "+6", "gain", "-n", "+14"]
        subprocess.run(
            ["sox", "-V1", str(raw), "-b", "16", str(out), *effects],
            check=True,
            capture_output=True,
        )
        voice_samples, _ = soundfile.read(out, dtype="float32")
    times = np.arange(len(voice_samples) + RATE // 2) / RATE
    pitch = np.where((times // 0.55) % 2 == 0, 960.0, 770.0)
    siren = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / RATE)
    mixed = siren.astype(np.float32)
    mixed[RATE // 4 : RATE // 4 + len(voice_samples)] += 0.7 * voice_samples
    return encode(mixed / float(np.max(np.abs(mixed))) * 0.9)


def tone(seconds: float, *, rate: int = RATE, frequency: float = 440.0) -> npt.NDArray[np.float32]:
    """A sine tone at half scale."""
    times = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * times)).astype(np.float32)


def encode(
    samples: npt.NDArray[np.float32], *, rate: int = RATE, file_format: str = "WAV"
) -> bytes:
    """Samples (frames x channels, or mono) written as WAV, FLAC, OGG or MP3."""
    buffer = io.BytesIO()
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}
    soundfile.write(buffer, samples, rate, format=file_format, subtype=subtype[file_format])
    return buffer.getvalue()


def constant_flac(channels: int, rate: int, seconds: float, *, level: float = 0.25) -> bytes:
    """A FLAC of a constant level in every channel (the default is loud enough not to
    count as silence): it compresses to almost nothing whatever its length."""
    frames = round(rate * seconds)
    buffer = io.BytesIO()
    block = np.full((rate, channels), level, dtype=np.float32)
    with soundfile.SoundFile(
        buffer, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16"
    ) as sound:
        for start_frame in range(0, frames, rate):
            sound.write(block[: min(rate, frames - start_frame)])
    return buffer.getvalue()


def reencode(wav: bytes, file_format: str) -> bytes:
    """A WAV file converted to another format."""
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    return encode(samples, rate=rate, file_format=file_format)


def tiny_urgency_classifier(seed: int = 0) -> UrgencyClassifier:
    """A calm/urgent classifier with random weights (one hidden layer of 8)."""
    rng = np.random.default_rng(seed)
    config = AcousticFeatureConfig()
    width = len(feature_names(config))
    return UrgencyClassifier(
        features=config,
        feature_mean=np.zeros(width, dtype=np.float32),
        feature_scale=np.full(width, 10.0, dtype=np.float32),
        layers=(
            (
                rng.normal(size=(8, width)).astype(np.float32),
                np.zeros(8, dtype=np.float32),
            ),
            (
                rng.normal(size=(len(URGENCY_LABELS), 8)).astype(np.float32),
                np.zeros(len(URGENCY_LABELS), dtype=np.float32),
            ),
        ),
    )


def tiny_fusion_rule(*, audio_weight: float = 1.0, text_weight: float = 1.0) -> FusionRule:
    """Uniform prior over CALL_LABELS, `regular` the ordinary label, rates 0.2 and 0.1, the
    same weights for written and recognised transcripts."""
    return FusionRule(
        labels=CALL_LABELS,
        ordinary_labels=("regular",),
        prior=tuple(1 / len(CALL_LABELS) for _ in CALL_LABELS),
        calm_when_emergency=0.2,
        urgent_when_ordinary=0.1,
        audio_weight=audio_weight,
        text_weight=text_weight,
        asr_audio_weight=audio_weight,
        asr_text_weight=text_weight,
    )


def build_tiny_call_model(
    target: Path, *, audio_weight: float = 1.0, text_weight: float = 1.0
) -> Path:
    """An emergency-call model directory with random weights and a manifest."""
    with tempfile.TemporaryDirectory(prefix="mtc-tiny-text-") as scratch:
        text_dir = build_tiny_text_model(Path(scratch), labels=CALL_LABELS)
        write_call_model_files(
            target,
            classifier=tiny_urgency_classifier(),
            labels=CALL_LABELS,
            text_model_dir=text_dir,
        )
    write_manifest(
        target,
        name="tiny-call-model",
        task="audio",
        version="0.0.1",
        labels=list(CALL_LABELS),
        config={
            "fusion": tiny_fusion_rule(audio_weight=audio_weight, text_weight=text_weight).to_json()
        },
    )
    return target
