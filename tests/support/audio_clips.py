"""Audio for tests: speech spoken by espeak-ng, tones, silence, files in every format, and
a tiny emergency-call model directory (random weights, real code paths)."""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile

from services.audio.features import LogMelConfig
from services.audio.fusion import FusionRule
from services.audio.models.resnet import build_resnet
from services.audio.training import write_call_model_files
from services.core.manifest import write_manifest
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


def reencode(wav: bytes, file_format: str) -> bytes:
    """A WAV file converted to another format."""
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    return encode(samples, rate=rate, file_format=file_format)


def build_tiny_call_model(
    target: Path, *, audio_weight: float = 1.0, text_weight: float = 1.0
) -> Path:
    """An emergency-call model directory with random weights and a manifest."""
    import torch

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="mtc-tiny-text-") as scratch:
        text_dir = build_tiny_text_model(Path(scratch), labels=CALL_LABELS)
        write_call_model_files(
            target,
            network=build_resnet(len(CALL_LABELS), (1, 1, 1, 1)),
            labels=CALL_LABELS,
            features=LogMelConfig(),
            resnet_layers=(1, 1, 1, 1),
            text_model_dir=text_dir,
        )
    write_manifest(
        target,
        name="tiny-call-model",
        task="audio",
        version="0.0.1",
        labels=list(CALL_LABELS),
        config={"fusion": FusionRule(audio_weight, text_weight).to_json()},
    )
    return target
