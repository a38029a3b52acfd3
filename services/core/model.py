"""The base class every served model subclasses, whatever its input modality."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

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


def scores_document(scores: Sequence[LabelScore]) -> list[list[Any]]:
    """`[[label, score], ...]`: the JSON form of a ranking inside a cached prediction."""
    return [[entry.label, entry.score] for entry in scores]


def scores_from_document(rows: Any) -> list[LabelScore]:
    """Inverse of `scores_document`; raises ValueError or TypeError on anything else."""
    if not isinstance(rows, list):
        raise TypeError("a ranking is a list of [label, score] pairs")
    return [LabelScore(str(label), float(score)) for label, score in rows]


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a model answers for one item: every label with its score, highest first.

    A kind whose model computes more than the ranking (token counts, keypoints, the scores
    of each branch of a fusion) subclasses this with typed fields, so that everything
    the model found travels together through the queue and the response cache, and
    overrides `to_document` and `from_document` to keep those fields in the cache.
    """

    scores: list[LabelScore]

    def to_document(self) -> dict[str, Any]:
        """JSON-ready form of the whole prediction (what the response cache stores)."""
        return {"scores": scores_document(self.scores)}

    @classmethod
    def from_document(cls, document: Any) -> Self:
        """Inverse of `to_document`. Raises ValueError, TypeError or KeyError on any other
        shape (an entry written by an earlier release), which the cache reads as a miss."""
        if not isinstance(document, dict):
            raise TypeError("a cached prediction is a JSON object")
        return cls(scores_from_document(document["scores"]))


OutputT = TypeVar("OutputT", bound=Prediction)


@dataclass(frozen=True)
class ModelMetadata:
    """What a loaded model is: reported by `/v1/models`, responses and `mtc_model_info`."""

    name: str
    version: str
    labels: list[str]
    limits: dict[str, Any] = field(default_factory=dict)


class ClassifierModel(ABC, Generic[ItemT, OutputT]):
    """A classifier that turns a batch of items into predictions of its kind (`OutputT`:
    the ranked label scores, plus whatever else the kind's model computes).

    Subclasses implement `load` and `predict` and know nothing of HTTP: they raise
    `services.core.errors` types for bad input. The serving kit calls `load` once at start
    (from the app's lifespan, never at import) and `predict` from worker threads, possibly
    from several threads at once when `inference_workers > 1`.
    """

    output_type: type[OutputT]
    """The `Prediction` class `predict` returns; the cache decodes entries with it."""

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
    def predict(self, batch: Sequence[ItemT]) -> list[OutputT]:
        """One prediction per item, in order: every label, sorted by score, highest first."""

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

    def encode_prediction(self, prediction: OutputT) -> bytes:
        """Bytes of one prediction for the response cache."""
        return json.dumps(prediction.to_document(), separators=(",", ":")).encode()

    def decode_prediction(self, raw: bytes) -> OutputT:
        """Inverse of `encode_prediction`; raises ValueError, TypeError or KeyError on
        foreign bytes."""
        return self.output_type.from_document(json.loads(raw))

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
