"""The base class every served model subclasses, whatever its input modality."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

ItemT = TypeVar("ItemT")


@dataclass(frozen=True, slots=True)
class LabelScore:
    """One label and the model's score for it (a probability in [0, 1])."""

    label: str
    score: float


def rank_scores(labels: Sequence[str], rows: Sequence[Sequence[float]]) -> list[list[LabelScore]]:
    """Per row, every label with its score, highest first (the shape every model returns)."""
    ranked: list[list[LabelScore]] = []
    for row in rows:
        scores = [LabelScore(label, float(score)) for label, score in zip(labels, row, strict=True)]
        scores.sort(key=lambda entry: entry.score, reverse=True)
        ranked.append(scores)
    return ranked


def encode_scores(scores: Sequence[LabelScore]) -> bytes:
    """Compact JSON form of one ranked prediction (what the response cache stores)."""
    return json.dumps([[s.label, s.score] for s in scores], separators=(",", ":")).encode()


def decode_scores(raw: bytes) -> list[LabelScore]:
    """Inverse of `encode_scores`."""
    return [LabelScore(str(label), float(score)) for label, score in json.loads(raw)]


@dataclass(frozen=True)
class ModelMetadata:
    """What a loaded model is: reported by `/v1/models`, responses and `mtc_model_info`."""

    name: str
    version: str
    labels: list[str]
    limits: dict[str, Any] = field(default_factory=dict)


class ClassifierModel(ABC, Generic[ItemT]):
    """A classifier that turns a batch of items into ranked label scores.

    Subclasses implement `load` and `predict` and know nothing of HTTP: they raise
    `services.core.errors` types for bad input. The serving kit calls `load` once at start
    (from the app's lifespan, never at import) and `predict` from worker threads, possibly
    from several threads at once when `inference_workers > 1`.
    """

    runtime: str = "python"
    """What executes the model (e.g. `torch`, `torch-bf16`, `onnx-int8`). Part of every
    cache key, because two runtimes of the same model version do not give bit-identical
    scores; an instance may set its own once it knows (precision, model kind)."""

    def __init__(self) -> None:
        self._metadata: ModelMetadata | None = None

    @abstractmethod
    async def load(self, model_dir: Path) -> ModelMetadata:
        """Load weights from a local directory and return what was loaded.

        Runs before `ready` turns true. Raise `ModelLoadError` with a clear reason when the
        directory does not hold a usable model.
        """

    @abstractmethod
    def predict(self, batch: Sequence[ItemT]) -> list[list[LabelScore]]:
        """Score every item: one list per item, every label, sorted by score, highest first."""

    def cache_key(self, item: ItemT) -> bytes:
        """Canonical bytes of an item for the prediction cache.

        Two items with the same key must get the same prediction from this model.
        """
        return repr(item).encode("utf-8")

    def sealing_key(self, item: ItemT) -> bytes | None:
        """A secret derived from the item itself, or None. With one, the shared cache
        stores this item's prediction sealed (`services.core.cache_sealing`): only a request
        carrying the same input can read it back. Override when cache entries hold more
        than scores (e.g. a transcript); the key must not be computable from `cache_key`."""
        return None

    def encode_prediction(self, prediction: Sequence[LabelScore]) -> bytes:
        """Bytes of one prediction for the response cache; override to keep more than the
        ranked scores (and override `decode_prediction` to match)."""
        return encode_scores(prediction)

    def decode_prediction(self, raw: bytes) -> list[LabelScore]:
        """Inverse of `encode_prediction`; raises ValueError or TypeError on foreign bytes."""
        return decode_scores(raw)

    def cost(self, item: ItemT) -> int:
        """Relative size of an item (tokens for text); batches group items of similar cost."""
        return 1

    async def start(self, model_dir: Path) -> None:
        """Load the model and record its metadata; called once by the serving kit."""
        self._metadata = await self.load(model_dir)

    @property
    def ready(self) -> bool:
        """True once `load` has succeeded."""
        return self._metadata is not None

    @property
    def metadata(self) -> ModelMetadata:
        """Metadata of the loaded model; only valid when `ready`."""
        if self._metadata is None:
            raise RuntimeError("model is not loaded")
        return self._metadata
