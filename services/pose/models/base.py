"""What every pose model shares: decoded images in, label scores and keypoints out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from services.core.model import ClassifierModel, Prediction, scores_from_document
from services.pose.images import DecodedImage


@dataclass(frozen=True, slots=True)
class Keypoint:
    """One body landmark: position as a fraction of the upright image's width and height
    (0..1 inside the image, slightly outside for landmarks the model guesses beyond it)."""

    name: str
    x: float
    y: float
    visibility: float
    """The model's estimate (0..1) that the landmark is visible rather than occluded."""


Keypoints = list[Keypoint]
"""Every landmark of one detected person, in the model's fixed order."""


@dataclass(frozen=True, slots=True)
class PosePrediction(Prediction):
    """The ranked scores of one image and the landmarks the model found in it."""

    keypoints: Keypoints | None = None
    """None when no person was found, or when the model does not locate landmarks."""

    def to_document(self) -> dict[str, Any]:
        """Scores and keypoints (`[name, x, y, visibility]` rows)."""
        rows = (
            None
            if self.keypoints is None
            else [[k.name, k.x, k.y, k.visibility] for k in self.keypoints]
        )
        return {**Prediction.to_document(self), "keypoints": rows}

    @classmethod
    def from_document(cls, document: Any) -> Self:
        """Inverse of `to_document`."""
        if not isinstance(document, dict):
            raise TypeError("a cached pose prediction is a JSON object")
        rows = document["keypoints"]
        keypoints = (
            None
            if rows is None
            else [Keypoint(str(name), float(x), float(y), float(v)) for name, x, y, v in rows]
        )
        return cls(scores_from_document(document["scores"]), keypoints)


class PoseModel(ClassifierModel[DecodedImage, PosePrediction]):
    """Base of the pose models: cached by the image's sha256, one unit of cost per image."""

    output_type = PosePrediction

    def __init__(
        self, *, torch_threads: int | None = None, limits: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self._torch_threads = torch_threads
        self._limits = dict(limits or {})

    def cache_key(self, item: DecodedImage) -> bytes:
        """The sha256 of the original file bytes: same file, same prediction."""
        return bytes.fromhex(item.sha256)

    def cost(self, item: DecodedImage) -> int:
        """Every image costs the same: models resize them to one input size."""
        return 1
