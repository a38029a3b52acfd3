"""Evaluate a pose model directory on the labelled photo set, exactly as the service runs
it: the same model classes (`AutoPoseModel`), the same decoding and limits
(`PoseSettings`, `decode_image`), one image per request."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.model import LabelScore
from services.lifecycle.evaluation import EvaluationReport, evaluate_predictions
from services.pose.images import ImageLimits, decode_image
from services.pose.models.auto import AutoPoseModel
from services.pose.models.base import PoseModel
from services.pose.photo_set import PhotoImage
from services.pose.settings import PoseSettings

ORIGINALS = "originals"
TRANSFORMED = "transformed"


@dataclass(frozen=True)
class PhotoPrediction:
    """The model's top label for one photo or copy."""

    photo_id: str
    transform: str
    gold: str
    predicted: str
    score: float


@dataclass(frozen=True)
class PhotoSetReport:
    """Metrics on the originals, on all transformed copies, and per kind of copy."""

    sets: dict[str, EvaluationReport]
    """`originals`, `transformed`, then `transform:<name>` for each kind of copy."""
    predictions: list[PhotoPrediction]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "sets": {name: report.to_json() for name, report in self.sets.items()},
            "predictions": [vars(prediction) for prediction in self.predictions],
        }


def load_pose_model(model_dir: Path, settings: PoseSettings | None = None) -> PoseModel:
    """The serving model class for `model_dir`, loaded (as `services.pose.api.build_app`
    builds it)."""
    settings = settings or PoseSettings()
    model = AutoPoseModel(torch_threads=settings.threads_per_worker)
    asyncio.run(model.start(model_dir))
    return model


def predict_images(
    model: PoseModel,
    images: Sequence[PhotoImage],
    settings: PoseSettings | None = None,
    *,
    progress: bool = False,
) -> list[list[LabelScore]]:
    """Ranked label scores per image, each decoded with the service's checks and limits."""
    from tqdm import tqdm

    settings = settings or PoseSettings()
    limits = ImageLimits(
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        min_side=settings.min_image_side,
        max_side=settings.decode_max_side,
    )
    results: list[list[LabelScore]] = []
    for image in tqdm(images, desc="evaluate", unit="image", disable=not progress):
        label = f"{image.photo_id} ({image.transform})"
        decoded = decode_image(image.data, label=label, limits=limits)
        results.extend(prediction.scores for prediction in model.predict([decoded]))
    return results


def evaluate_photo_images(
    model: PoseModel, images: Sequence[PhotoImage], *, progress: bool = False
) -> PhotoSetReport:
    """Score `images` (originals and copies, see `photo_set.photo_images`) with `model`."""
    labels = model.metadata.labels
    scores = predict_images(model, images, progress=progress)
    predictions = [
        PhotoPrediction(
            image.photo_id, image.transform, image.label, ranked[0].label, ranked[0].score
        )
        for image, ranked in zip(images, scores, strict=True)
    ]
    groups: dict[str, list[int]] = {ORIGINALS: [], TRANSFORMED: []}
    for index, image in enumerate(images):
        if image.transform == "original":
            groups[ORIGINALS].append(index)
        else:
            groups[TRANSFORMED].append(index)
            groups.setdefault(f"transform:{image.transform}", []).append(index)
    sets = {
        name: evaluate_predictions(
            [scores[i] for i in indices], [images[i].label for i in indices], labels
        )
        for name, indices in groups.items()
        if indices
    }
    return PhotoSetReport(sets=sets, predictions=predictions)
