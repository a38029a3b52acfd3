"""Log-mel spectrograms: what the audio classifier sees of a clip."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class LogMelConfig:
    """Spectrogram parameters; stored with the model so serving computes what training did."""

    sample_rate: int = 16_000
    n_fft: int = 512
    hop_length: int = 320
    n_mels: int = 48
    fmin: float = 50.0
    fmax: float = 7_600.0

    def to_json(self) -> dict[str, Any]:
        """The config as stored in the model directory."""
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> LogMelConfig:
        """Parse a stored config."""
        return cls(**{key: document[key] for key in cls.__dataclass_fields__ if key in document})

    def frames(self, samples: int) -> int:
        """Spectrogram frames for a clip of `samples` samples (librosa's centred framing)."""
        return 1 + samples // self.hop_length


def log_mel(samples: NDArray[np.float32], config: LogMelConfig) -> NDArray[np.float32]:
    """(n_mels, frames) float32 log-mel spectrogram, standardised per clip.

    Per-clip standardisation removes the recording level, so a quiet phone line and a loud
    one look alike to the classifier.
    """
    import librosa

    power = librosa.feature.melspectrogram(
        y=samples,
        sr=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
    )
    decibels = librosa.power_to_db(power, ref=np.max, top_db=80.0)
    spread = float(decibels.std())
    standardised = (decibels - float(decibels.mean())) / (spread if spread > 1e-6 else 1.0)
    return np.asarray(standardised, dtype=np.float32)


def pad_batch(spectrograms: list[NDArray[np.float32]]) -> NDArray[np.float32]:
    """(batch, 1, n_mels, longest) array; shorter clips padded with their own quietest value."""
    longest = max(spec.shape[1] for spec in spectrograms)
    batch = np.empty((len(spectrograms), 1, spectrograms[0].shape[0], longest), dtype=np.float32)
    for index, spec in enumerate(spectrograms):
        batch[index, 0, :, : spec.shape[1]] = spec
        batch[index, 0, :, spec.shape[1] :] = spec.min()
    return batch
