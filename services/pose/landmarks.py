"""Body landmarks from MediaPipe Pose, the geometric features derived from them, and the
linear softmax head that turns features into label scores.

The serving model (`models.landmark_classifier`), the starter builder and the trainer all
use this one implementation, so a model is scored exactly as it was built or trained.

A landmark model directory holds `config.json` (format `CONFIG_FORMAT`) and the usual
`manifest.json`. The config names the labels, the features in order, and a weight matrix
and bias: `scores = softmax(weights @ ((features - feature_mean) / feature_scale) + bias)`.
The starter's weights are hand-set rules; `mtc train pose` fits them on labelled photos.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from services.artifacts.manifest import Manifest, write_manifest
from services.artifacts.model_dir import write_model_dir
from services.core.errors import ModelLoadError
from services.pose.models.base import Keypoint, Keypoints

CONFIG_FORMAT: Final = "mtc-pose-landmarks/1"
MODEL_TYPE: Final = "mtc-pose-landmarks"
"""`model_type` of a landmark model's `config.json` (Hugging Face configs name their own)."""
NO_PERSON: Final = "no_person"

LANDMARK_NAMES: Final = (
    "nose",
    "left_eye_inner",
    "left_eye",
    "left_eye_outer",
    "right_eye_inner",
    "right_eye",
    "right_eye_outer",
    "left_ear",
    "right_ear",
    "mouth_left",
    "mouth_right",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_pinky",
    "right_pinky",
    "left_index",
    "right_index",
    "left_thumb",
    "right_thumb",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_heel",
    "right_heel",
    "left_foot_index",
    "right_foot_index",
)
"""MediaPipe Pose's 33 landmarks, in its order (`mp.solutions.pose.PoseLandmark`)."""

_SHOULDERS: Final = (11, 12)
_HIPS: Final = (23, 24)
_KNEES: Final = (25, 26)
_ANKLES: Final = (27, 28)
_BODY: Final = (*_SHOULDERS, *_HIPS, *_KNEES, *_ANKLES)

FEATURE_DOCS: Final = {
    "person": "1 if a person with enough visible body landmarks was found, else 0 (and then "
    "every other feature is 0)",
    "visibility": "mean visibility (0..1) of shoulders, hips, knees and ankles",
    "torso_upright": "cosine between the hip->shoulder vector and straight up (1 upright, "
    "0 horizontal, -1 upside down)",
    "torso_horizontal": "|sine| of the same angle (0 upright, 1 horizontal)",
    "knee_straightness": "hip-knee-ankle angle / 180 degrees (1 straight leg)",
    "hip_straightness": "shoulder-hip-knee angle / 180 degrees (1 straight body)",
    "thigh_vertical": "|cosine| between hip->knee and vertical (1 vertical thigh)",
    "knee_drop": "how far the knees are below the hips, in torso lengths, clipped to "
    "[-1.5, 1.5] (~0.8 standing, ~0 seated or lying)",
    "vertical_extent": "height / (height + width) of the box around shoulders, hips, knees "
    "and ankles (~0.8 standing, ~0.2 lying)",
}

FEATURE_NAMES: Final = tuple(FEATURE_DOCS)
"""The features, in the order of every weight row. See `landmark_features` for definitions."""


@dataclass(frozen=True)
class DetectorSettings:
    """How MediaPipe Pose is run and when a detection counts as a person."""

    min_detection_confidence: float = 0.5
    visible_threshold: float = 0.5
    """A body landmark counts as visible at or above this visibility."""
    min_visible_landmarks: int = 4
    """Fewer visible shoulders/hips/knees/ankles (of 8) than this -> treated as no person."""


class LandmarkDetector:
    """MediaPipe Pose (full model, `model_complexity=1`, the one bundled in the 0.10.21
    wheel), one instance per thread because MediaPipe graphs are not thread-safe."""

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        self._per_thread = threading.local()

    def _pose(self) -> Any:
        pose = getattr(self._per_thread, "pose", None)
        if pose is None:
            import mediapipe as mp  # type: ignore[import-untyped]

            pose = mp.solutions.pose.Pose(
                static_image_mode=True,
                model_complexity=1,
                enable_segmentation=False,
                min_detection_confidence=self.settings.min_detection_confidence,
            )
            self._per_thread.pose = pose
        return pose

    def detect(self, pixels: npt.NDArray[np.uint8]) -> Keypoints | None:
        """The 33 landmarks of the most prominent person in an RGB image, or None."""
        result = self._pose().process(pixels)
        if result.pose_landmarks is None:
            return None
        # Rounded (to a millionth of the image) so an answer served from the cache, which
        # stores these numbers as JSON, is identical to a fresh one.
        return [
            Keypoint(name, round(mark.x, 6), round(mark.y, 6), round(mark.visibility, 6))
            for name, mark in zip(LANDMARK_NAMES, result.pose_landmarks.landmark, strict=True)
        ]

    def is_person(self, keypoints: Keypoints | None) -> bool:
        """Whether enough body landmarks are visible to judge the pose."""
        if keypoints is None:
            return False
        visible = sum(
            1 for index in _BODY if keypoints[index].visibility >= self.settings.visible_threshold
        )
        return visible >= self.settings.min_visible_landmarks


def landmark_features(
    keypoints: Keypoints | None, width: int, height: int, *, is_person: bool
) -> npt.NDArray[np.float64]:
    """The `FEATURE_NAMES` vector of one image (all zeros when there is no person).

    Geometry is measured in pixels of the upright image (landmarks are fractions of width
    and height, which would distort angles on non-square images). Left and right sides are
    averaged, weighted by visibility, so an occluded side counts less.
    """
    features = np.zeros(len(FEATURE_NAMES), dtype=np.float64)
    if keypoints is None or not is_person:
        return features
    points = np.array([[k.x * width, k.y * height] for k in keypoints], dtype=np.float64)
    seen = np.array([k.visibility for k in keypoints], dtype=np.float64)

    def middle(pair: tuple[int, int]) -> npt.NDArray[np.float64]:
        weights = seen[list(pair)] + 1e-6
        result: npt.NDArray[np.float64] = (points[list(pair)] * weights[:, None]).sum(
            axis=0
        ) / weights.sum()
        return result

    def sided(values: Sequence[float], pairs: Sequence[int]) -> float:
        weights = seen[list(pairs)] + 1e-6
        return float(np.dot(values, weights) / weights.sum())

    shoulder, hip = middle(_SHOULDERS), middle(_HIPS)
    torso = shoulder - hip
    torso_length = float(np.hypot(*torso)) + 1e-6
    # Image y grows downwards, so "up" is -y.
    upright = -torso[1] / torso_length
    horizontal = abs(torso[0]) / torso_length

    knee_angles, hip_angles, thigh_vertical, knee_drop = [], [], [], []
    for side in (0, 1):
        s, h, k, a = (points[group[side]] for group in (_SHOULDERS, _HIPS, _KNEES, _ANKLES))
        knee_angles.append(_angle(h, k, a) / math.pi)
        hip_angles.append(_angle(s, h, k) / math.pi)
        thigh = k - h
        thigh_vertical.append(abs(thigh[1]) / (float(np.hypot(*thigh)) + 1e-6))
        knee_drop.append(float(np.clip(thigh[1] / torso_length, -1.5, 1.5)))

    body = points[list(_BODY)]
    extent_w, extent_h = body.max(axis=0) - body.min(axis=0)
    features[:] = (
        1.0,
        float(seen[list(_BODY)].mean()),
        upright,
        horizontal,
        sided(knee_angles, _KNEES),
        sided(hip_angles, _HIPS),
        sided(thigh_vertical, _KNEES),
        sided(knee_drop, _KNEES),
        float(extent_h / (extent_h + extent_w + 1e-6)),
    )
    return features


def _angle(
    a: npt.NDArray[np.float64], vertex: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
) -> float:
    first, second = a - vertex, b - vertex
    norm = float(np.hypot(*first) * np.hypot(*second)) + 1e-9
    return math.acos(float(np.clip(np.dot(first, second) / norm, -1.0, 1.0)))


@dataclass(frozen=True)
class LinearHead:
    """`softmax(weights @ ((x - feature_mean) / feature_scale) + bias)` over `labels`."""

    labels: tuple[str, ...]
    weights: npt.NDArray[np.float64]
    """Shape (labels, features)."""
    bias: npt.NDArray[np.float64]
    feature_mean: npt.NDArray[np.float64]
    feature_scale: npt.NDArray[np.float64]

    def probabilities(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Rows of label probabilities for rows of features (shape (n, features))."""
        standardised = (features - self.feature_mean) / self.feature_scale
        logits = standardised @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        result: npt.NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
        return result


@dataclass(frozen=True)
class LandmarkModelConfig:
    """The parsed `config.json` of a landmark model directory."""

    classifier: str
    """`rules` (hand-set weights) or `logistic_regression` (fitted by `mtc train pose`)."""
    head: LinearHead
    detector: DetectorSettings
    extra: dict[str, Any]
    """Anything else in the document (descriptions, training details), kept on write."""

    def to_json(self) -> dict[str, Any]:
        """The JSON document written as `config.json`."""
        head = self.head
        return {
            **self.extra,
            "format": CONFIG_FORMAT,
            "model_type": MODEL_TYPE,
            "classifier": self.classifier,
            "labels": list(head.labels),
            "features": list(FEATURE_NAMES),
            "feature_docs": FEATURE_DOCS,
            "weights": {
                label: dict(zip(FEATURE_NAMES, (round(float(v), 8) for v in row), strict=True))
                for label, row in zip(head.labels, head.weights, strict=True)
            },
            "bias": {
                label: round(float(v), 8) for label, v in zip(head.labels, head.bias, strict=True)
            },
            "feature_mean": [round(float(v), 8) for v in head.feature_mean],
            "feature_scale": [round(float(v), 8) for v in head.feature_scale],
            "detector": {
                "model": "mediapipe==0.10.21 pose_landmark_full (model_complexity=1)",
                **asdict(self.detector),
            },
        }

    def to_text(self) -> str:
        """The exact text of `config.json` (stable: the same config gives the same bytes)."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    def write_model(self, out: Path, *, name: str, **manifest: Any) -> Manifest:
        """Write `config.json` and a manifest of the head's labels and `manifest` fields into
        `out`, which is replaced only when empty or an earlier model of the same `name`."""

        def fill(staging: Path) -> Manifest:
            (staging / "config.json").write_text(self.to_text(), encoding="utf-8")
            return write_manifest(staging, name=name, labels=list(self.head.labels), **manifest)

        return write_model_dir(out, fill, replaceable=lambda m: m.name == name)


def is_landmark_model_dir(model_dir: Path) -> bool:
    """Whether `model_dir/config.json` describes a landmark model (vs. a Hugging Face one)."""
    try:
        document = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and document.get("model_type") == MODEL_TYPE


def read_landmark_config(model_dir: Path) -> LandmarkModelConfig:
    """Parse and check `model_dir/config.json`, raising ModelLoadError with the reason."""
    path = model_dir / "config.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != CONFIG_FORMAT:
        raise ModelLoadError(f"{path}: not a landmark model config (format {CONFIG_FORMAT})")
    try:
        if list(document["features"]) != list(FEATURE_NAMES):
            raise ModelLoadError(
                f"{path}: features {document['features']} differ from this code's "
                f"{list(FEATURE_NAMES)}; rebuild or retrain the model"
            )
        labels = tuple(str(label) for label in document["labels"])
        weights = np.array(
            [
                [float(document["weights"][label][name]) for name in FEATURE_NAMES]
                for label in labels
            ]
        )
        bias = np.array([float(document["bias"][label]) for label in labels])
        mean = np.array(document["feature_mean"], dtype=np.float64)
        scale = np.array(document["feature_scale"], dtype=np.float64)
        detector = document.get("detector", {})
        settings = DetectorSettings(
            min_detection_confidence=float(detector.get("min_detection_confidence", 0.5)),
            visible_threshold=float(detector.get("visible_threshold", 0.5)),
            min_visible_landmarks=int(detector.get("min_visible_landmarks", 4)),
        )
        classifier = str(document["classifier"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: malformed landmark model config: {exc!r}") from exc
    if not labels or mean.shape != (len(FEATURE_NAMES),) or scale.shape != mean.shape:
        raise ModelLoadError(f"{path}: labels, feature_mean or feature_scale have the wrong size")
    if not np.all(scale > 0) or not np.all(np.isfinite(weights)):
        raise ModelLoadError(f"{path}: feature_scale must be positive and weights finite")
    config = LandmarkModelConfig(
        classifier=classifier,
        head=LinearHead(labels, weights, bias, mean, scale),
        detector=settings,
        extra={},
    )
    # Whatever `to_json` does not write itself is kept as `extra`.
    written = config.to_json()
    return replace(config, extra={k: v for k, v in document.items() if k not in written})
