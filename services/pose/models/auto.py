"""`AutoPoseModel`: picks the pose model class from the model directory it is given.

The service is built before its model is fetched (an `s3://` model arrives only during
start-up), so the choice between the landmark classifier and a Hugging Face image
classifier is made in `load`, from the fetched directory's `config.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from services.core.model import ModelMetadata
from services.pose.images import DecodedImage
from services.pose.landmarks import is_landmark_model_dir
from services.pose.models.base import PoseModel, PosePrediction
from services.pose.models.hf_image_classifier import HfImageClassifier
from services.pose.models.landmark_classifier import LandmarkClassifier


class AutoPoseModel(PoseModel):
    """Delegates to a `LandmarkClassifier` when `config.json` has
    `"model_type": "mtc-pose-landmarks"`, and to an `HfImageClassifier` otherwise."""

    runtime = "auto"
    _inner: PoseModel | None = None

    async def load(self, model_dir: Path) -> ModelMetadata:
        """Choose the model class from `model_dir/config.json`, then load it."""
        inner: PoseModel = (
            LandmarkClassifier(limits=self._limits)
            if is_landmark_model_dir(model_dir)
            else HfImageClassifier(torch_threads=self._torch_threads, limits=self._limits)
        )
        metadata = await inner.load(model_dir)
        self._inner = inner
        # Cache keys and `/v1/models` report the runtime of the model actually chosen.
        self.runtime = inner.runtime
        return metadata

    def predict(self, batch: Sequence[DecodedImage]) -> list[PosePrediction]:
        """The chosen model's predictions."""
        if self._inner is None:
            raise RuntimeError("model is not loaded")
        return self._inner.predict(batch)
