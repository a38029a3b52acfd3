"""MediaPipe Pose landmarks + a linear softmax on their geometry: the offline pose model."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from services.artifacts.manifest import model_identity
from services.core.errors import ModelLoadError
from services.core.model import ModelMetadata, rank_scores
from services.pose.images import DecodedImage
from services.pose.landmarks import (
    LandmarkDetector,
    LandmarkModelConfig,
    landmark_features,
    read_landmark_config,
)
from services.pose.models.base import PoseModel, PosePrediction


class LandmarkClassifier(PoseModel):
    """Scores `standing`, `sitting`, `lying`, `no_person` (or the labels a trained config
    names) from the 33 MediaPipe landmarks, and returns those landmarks as keypoints.

    The directory is a `config.json` as written by `services.pose.starter` or
    `services.pose.training` (see `services.pose.landmarks`), plus `manifest.json`.
    """

    runtime = "mediapipe"
    _config: LandmarkModelConfig | None = None
    _detector: LandmarkDetector | None = None

    async def load(self, model_dir: Path) -> ModelMetadata:
        """Read the config and start MediaPipe once, so a broken install fails the load."""
        return await asyncio.to_thread(self._load, model_dir)

    def _load(self, model_dir: Path) -> ModelMetadata:
        if not (model_dir / "config.json").is_file():
            raise ModelLoadError(f"{model_dir}: no config.json; not a landmark model directory")
        config = read_landmark_config(model_dir)
        detector = LandmarkDetector(config.detector)
        try:
            detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))
        except (ImportError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"MediaPipe Pose cannot run here: {exc}") from exc
        labels = list(config.head.labels)
        name, version = model_identity(model_dir, labels)
        self._config = config
        self._detector = detector
        return ModelMetadata(
            name=name,
            version=version,
            labels=labels,
            limits={**self._limits, "classifier": config.classifier},
        )

    def predict(self, batch: Sequence[DecodedImage]) -> list[PosePrediction]:
        """Label scores per image, highest first, with the landmarks they were read from."""
        config, detector = self._config, self._detector
        if config is None or detector is None:
            raise RuntimeError("model is not loaded")
        found = [detector.detect(item.pixels) for item in batch]
        features = np.stack(
            [
                landmark_features(
                    keypoints, item.width, item.height, is_person=detector.is_person(keypoints)
                )
                for item, keypoints in zip(batch, found, strict=True)
            ]
        )
        ranked = rank_scores(config.head.labels, config.head.probabilities(features).tolist())
        return [
            PosePrediction(scores, keypoints)
            for scores, keypoints in zip(ranked, found, strict=True)
        ]
