"""`mtc train pose`: fit the landmark classifier's weights on labelled photos.

`photo_dir` holds one sub-folder per label (`standing/`, `sitting/`, ...) of JPEG, PNG or
WebP photos. Each photo goes through exactly what the service runs (decode, MediaPipe Pose,
`landmark_features`), then a multinomial logistic regression is fitted with numpy alone
(full-batch gradient descent, L2, class-balanced, seeded). The result is a landmark model
directory whose `config.json` says `"classifier": "logistic_regression"`.

Photos are split into train and held-out by a hash of their bytes, so the split never
depends on file names or the order files are listed in, and a copy of a photo under another
name cannot land on both sides.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from services.artifacts.manifest import Manifest
from services.core.errors import MtcError
from services.pose.images import ImageLimits, decode_image
from services.pose.landmarks import (
    FEATURE_NAMES,
    NO_PERSON,
    DetectorSettings,
    LandmarkDetector,
    LandmarkModelConfig,
    LinearHead,
    landmark_features,
)

logger = logging.getLogger(__name__)

TRAINED_TASK: Final = "pose"
HELDOUT_PERCENT: Final = 20
_TRAINING_LIMITS: Final = ImageLimits(
    max_bytes=50 * 1024 * 1024, max_pixels=100_000_000, min_side=16, max_side=1280
)


class PoseTrainingError(RuntimeError):
    """The photo folder cannot be trained on (too few labels or usable photos)."""


@dataclass(frozen=True)
class PoseTrainConfig:
    """The training recipe."""

    iterations: int = 2000
    learning_rate: float = 0.5
    l2: float = 1e-3
    """L2 penalty on the weights (not the bias), per example."""
    seed: int = 1234
    heldout_percent: int = HELDOUT_PERCENT
    detector: DetectorSettings = field(default_factory=DetectorSettings)


@dataclass(frozen=True)
class LabelledFeatures:
    """Feature rows with their label indices and the photos they came from."""

    features: npt.NDArray[np.float64]
    targets: npt.NDArray[np.int64]
    digests: list[str]


def is_heldout(digest: str, percent: int = HELDOUT_PERCENT) -> bool:
    """Whether a photo (by the hex sha256 of its bytes) belongs to the held-out split."""
    return int(digest[:8], 16) % 100 < percent


def train_landmark_classifier(
    photo_dir: Path,
    out: Path,
    *,
    name: str = "pose-landmark-logreg",
    version: str = "1",
    config: PoseTrainConfig | None = None,
) -> Manifest:
    """Train on `photo_dir/<label>/*` and write a landmark model directory into `out`.

    Returns the written manifest; its `metrics` hold held-out accuracy and its
    `training_data` the counts and the split rule. `out` may be replaced only when it is
    empty or an earlier model of the same `name`.
    """
    config = config or PoseTrainConfig()
    labels, examples, skipped = _extract(photo_dir, config)
    if NO_PERSON not in labels:
        # Images without a person all map to the zero feature vector; teaching that point
        # as `no_person` lets a model trained on people still say nobody is there.
        labels.append(NO_PERSON)
    digests = examples.digests
    heldout_mask = np.array([is_heldout(d, config.heldout_percent) for d in digests], dtype=bool)
    train_x, train_y = examples.features[~heldout_mask], examples.targets[~heldout_mask]
    no_person = labels.index(NO_PERSON)
    if not np.any(train_y == no_person):
        # One all-zero row (what an image without a person gives) anchors `no_person`.
        train_x = np.vstack([train_x, np.zeros((1, len(FEATURE_NAMES)))])
        train_y = np.append(train_y, no_person)
    head = fit_softmax_regression(train_x, train_y, labels, config)

    heldout_x, heldout_y = examples.features[heldout_mask], examples.targets[heldout_mask]
    metrics = {
        "train_accuracy": _accuracy(head, train_x, train_y),
        "heldout_accuracy": _accuracy(head, heldout_x, heldout_y),
        "heldout_examples": len(heldout_y),
        "heldout_label_counts": _counts(heldout_y, labels),
    }
    model_config = LandmarkModelConfig(
        classifier="logistic_regression",
        head=head,
        detector=config.detector,
        extra={
            "description": "Multinomial logistic regression on MediaPipe Pose landmark "
            "geometry, fitted by `mtc train pose`; features are standardised with "
            "feature_mean / feature_scale before the weights apply.",
        },
    )
    manifest = model_config.write_model(
        out,
        name=name,
        task=TRAINED_TASK,
        version=version,
        metrics=metrics,
        training_data={
            "photo_dir": photo_dir.name,
            "photos_used": len(digests),
            "photos_skipped": skipped,
            "train_examples": len(train_y),
            "train_label_counts": _counts(train_y, labels),
            "split_rule": f"held-out iff int(sha256(file bytes)[:8], 16) % 100 < "
            f"{config.heldout_percent}; train otherwise",
            "method": {
                "iterations": config.iterations,
                "learning_rate": config.learning_rate,
                "l2": config.l2,
                "seed": config.seed,
                "class_balanced": True,
            },
        },
    )
    logger.info(
        "%s: trained on %d photos, held-out accuracy %s",
        out,
        len(train_y),
        metrics["heldout_accuracy"],
    )
    return manifest


def fit_softmax_regression(
    features: npt.NDArray[np.float64],
    targets: npt.NDArray[np.int64],
    labels: list[str],
    config: PoseTrainConfig,
) -> LinearHead:
    """Multinomial logistic regression by full-batch gradient descent (deterministic)."""
    if len(targets) == 0:
        raise PoseTrainingError("no training examples left after the held-out split")
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-6] = 1.0  # constant features: leave them unscaled
    x = (features - mean) / scale
    classes = len(labels)
    onehot = np.eye(classes)[targets]
    # Class-balanced: every label weighs the same in the loss, however many photos it has.
    counts = np.bincount(targets, minlength=classes).astype(np.float64)
    sample_weight = (len(targets) / (classes * np.maximum(counts, 1.0)))[targets]
    rng = np.random.default_rng(config.seed)
    weights = rng.normal(0.0, 0.01, size=(classes, x.shape[1]))
    bias = np.zeros(classes)
    total = sample_weight.sum()
    # The served head's own forward pass; its weights and bias are updated in place.
    head = LinearHead(tuple(labels), weights, bias, mean, scale)
    for _ in range(config.iterations):
        error = (head.probabilities(features) - onehot) * sample_weight[:, None] / total
        weights -= config.learning_rate * (error.T @ x + config.l2 * weights)
        bias -= config.learning_rate * error.sum(axis=0)
    return head


def _extract(
    photo_dir: Path, config: PoseTrainConfig
) -> tuple[list[str], LabelledFeatures, dict[str, int]]:
    if not photo_dir.is_dir():
        raise PoseTrainingError(f"{photo_dir}: no such directory")
    folders = sorted(p for p in photo_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    labels = [folder.name for folder in folders]
    if len(labels) < 2:
        raise PoseTrainingError(
            f"{photo_dir}: need at least two label folders (e.g. standing/, sitting/), "
            f"found {labels}"
        )
    detector = LandmarkDetector(config.detector)
    rows: dict[str, tuple[npt.NDArray[np.float64], set[int]]] = {}
    skipped: Counter[str] = Counter()
    for target, folder in enumerate(folders):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            data = path.read_bytes()
            try:
                image = decode_image(data, label=str(path), limits=_TRAINING_LIMITS)
            except MtcError as exc:
                logger.warning("skipping %s", exc.detail)
                skipped["not_a_usable_image"] += 1
                continue
            if image.sha256 in rows:
                rows[image.sha256][1].add(target)
                continue
            keypoints = detector.detect(image.pixels)
            person = detector.is_person(keypoints)
            if not person and folder.name != NO_PERSON:
                logger.warning("skipping %s: no person found in it", path)
                skipped["no_person_found"] += 1
                continue
            features = landmark_features(keypoints, image.width, image.height, is_person=person)
            rows[image.sha256] = (features, {target})
    conflicting = [digest for digest, (_, targets) in rows.items() if len(targets) > 1]
    skipped["same_photo_under_two_labels"] = len(conflicting)
    usable = sorted((d, f, next(iter(t))) for d, (f, t) in rows.items() if len(t) == 1)
    if not usable:
        raise PoseTrainingError(f"{photo_dir}: no usable photos")
    missing = sorted(set(labels) - {labels[t] for _, _, t in usable})
    if missing:
        raise PoseTrainingError(f"{photo_dir}: no usable photo for label(s) {missing}")
    examples = LabelledFeatures(
        features=np.stack([f for _, f, _ in usable]),
        targets=np.array([t for _, _, t in usable], dtype=np.int64),
        digests=[d for d, _, _ in usable],
    )
    return labels, examples, dict(skipped)


def _accuracy(
    head: LinearHead, x: npt.NDArray[np.float64], y: npt.NDArray[np.int64]
) -> float | None:
    if len(y) == 0:
        return None
    predicted = head.probabilities(x).argmax(axis=1)
    return round(float((predicted == y).mean()), 6)


def _counts(y: npt.NDArray[np.int64], labels: list[str]) -> dict[str, Any]:
    counts = np.bincount(y, minlength=len(labels))
    return {label: int(count) for label, count in zip(labels, counts, strict=True)}
