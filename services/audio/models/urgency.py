"""The audio branch's classifier: does the call sound `calm` or `urgent`?

A small multilayer perceptron (or, with no hidden units, a logistic regression) over the
standardised feature vector of `services/audio/features.py`. Inference is a couple of
numpy matrix products, well under a millisecond per clip; training (`training.py`) uses
torch. The weights are stored as safetensors next to a JSON config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.audio.features import AcousticFeatureConfig, feature_names
from services.audio.models.korean_transcripts import softmax

URGENCY_LABELS = ("calm", "urgent")
"""What the audio branch predicts, in output order."""
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class UrgencyClassifier:
    """Standardisation, an optional ReLU hidden layer, and a linear output over
    URGENCY_LABELS."""

    features: AcousticFeatureConfig
    feature_mean: NDArray[np.float32]
    feature_scale: NDArray[np.float32]
    layers: tuple[tuple[NDArray[np.float32], NDArray[np.float32]], ...]
    """(weight, bias) per layer, weight shaped (outputs, inputs); ReLU between layers."""

    def __post_init__(self) -> None:
        width = len(feature_names(self.features))
        if self.feature_mean.shape != (width,) or self.feature_scale.shape != (width,):
            raise ValueError(f"standardisation must have {width} entries, one per feature")
        inputs = width
        for weight, bias in self.layers:
            if weight.ndim != 2 or weight.shape[1] != inputs or bias.shape != (weight.shape[0],):
                raise ValueError(f"layer shapes {weight.shape}/{bias.shape} do not chain")
            inputs = weight.shape[0]
        if inputs != len(URGENCY_LABELS):
            raise ValueError(f"the last layer must have {len(URGENCY_LABELS)} outputs")

    def probabilities(self, features: NDArray[np.float32]) -> NDArray[np.float64]:
        """(clips, 2) probabilities in URGENCY_LABELS order for (clips, features) vectors."""
        hidden = (np.asarray(features, dtype=np.float64) - self.feature_mean) / self.feature_scale
        for position, (weight, bias) in enumerate(self.layers):
            hidden = hidden @ weight.T.astype(np.float64) + bias
            if position < len(self.layers) - 1:
                hidden = np.maximum(hidden, 0.0)
        return softmax(hidden)

    def save(self, directory: Path, extra_config: dict[str, Any] | None = None) -> None:
        """Write `model.safetensors` and `config.json` into `directory`."""
        from safetensors.numpy import save_file

        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            "feature_mean": self.feature_mean,
            "feature_scale": self.feature_scale,
        }
        for index, (weight, bias) in enumerate(self.layers):
            tensors[f"layer{index}.weight"] = np.ascontiguousarray(weight, dtype=np.float32)
            tensors[f"layer{index}.bias"] = np.ascontiguousarray(bias, dtype=np.float32)
        save_file(tensors, str(directory / WEIGHTS_FILE))
        config = {
            **(extra_config or {}),
            "urgency_labels": list(URGENCY_LABELS),
            "layers": len(self.layers),
            "features": self.features.to_json(),
            "feature_names": feature_names(self.features),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", "utf-8")

    @classmethod
    def load(cls, directory: Path) -> tuple[UrgencyClassifier, dict[str, Any]]:
        """The classifier in `directory`, and its whole config document."""
        from safetensors.numpy import load_file

        config: dict[str, Any] = json.loads((directory / CONFIG_FILE).read_text("utf-8"))
        if list(config["urgency_labels"]) != list(URGENCY_LABELS):
            raise ValueError(f"urgency labels {config['urgency_labels']} are not {URGENCY_LABELS}")
        features = AcousticFeatureConfig.from_json(config["features"])
        if list(config["feature_names"]) != feature_names(features):
            raise ValueError("the stored feature names differ from what this code measures")
        tensors = load_file(str(directory / WEIGHTS_FILE))
        layers = tuple(
            (tensors[f"layer{index}.weight"], tensors[f"layer{index}.bias"])
            for index in range(int(config["layers"]))
        )
        classifier = cls(features, tensors["feature_mean"], tensors["feature_scale"], layers)
        return classifier, config
