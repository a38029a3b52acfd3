"""Any Hugging Face image-classification model directory (ViT etc.), served with PyTorch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.artifacts.manifest import model_identity
from services.core.errors import ModelLoadError
from services.core.model import ModelMetadata, rank_scores
from services.pose.images import DecodedImage
from services.pose.models.base import PoseModel, PosePrediction


class HfImageClassifier(PoseModel):
    """A `save_pretrained` directory: `config.json` with `id2label`, weights, and an image
    processor (`preprocessor_config.json`). Softmax over every label; no keypoints."""

    runtime = "torch"

    def __init__(
        self, *, torch_threads: int | None = None, limits: dict[str, Any] | None = None
    ) -> None:
        super().__init__(torch_threads=torch_threads, limits=limits)
        self._processor: Any = None
        self._model: Any = None
        self._labels: list[str] = []
        # Image processors are plain Python objects without documented thread-safety.
        self._processor_lock = threading.Lock()

    async def load(self, model_dir: Path) -> ModelMetadata:
        """Load the image processor and weights from `model_dir` (in a thread: it is slow)."""
        return await asyncio.to_thread(self._load, model_dir)

    def _load(self, model_dir: Path) -> ModelMetadata:
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        if self._torch_threads:
            torch.set_num_threads(self._torch_threads)
        if not (model_dir / "config.json").is_file():
            raise ModelLoadError(f"{model_dir}: no config.json; not a Hugging Face model directory")
        try:
            processor = AutoImageProcessor.from_pretrained(  # type: ignore[no-untyped-call]
                model_dir, local_files_only=True
            )
            model = AutoModelForImageClassification.from_pretrained(
                model_dir, local_files_only=True
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{model_dir}: cannot load image classifier: {exc}") from exc
        model.eval()
        config = model.config
        labels = [str(config.id2label[index]) for index in range(config.num_labels)]

        name, version = model_identity(model_dir, labels)

        self._processor = processor
        self._model = model
        self._labels = labels
        return ModelMetadata(name=name, version=version, labels=labels, limits=self._limits)

    def predict(self, batch: Sequence[DecodedImage]) -> list[PosePrediction]:
        """Scores for every label of every image, highest first."""
        import torch

        with self._processor_lock:
            inputs = self._processor(images=[item.pixels for item in batch], return_tensors="pt")
        with torch.inference_mode():
            logits = self._model(**inputs).logits.float()
        ranked = rank_scores(self._labels, logits.softmax(dim=-1).tolist())
        return [PosePrediction(scores) for scores in ranked]
