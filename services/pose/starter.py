"""The offline starter pose model: MediaPipe Pose landmarks + hand-set geometric rules.

Too few labelled pose photos ship in the packages we can install to train on (the 48 of
`services/pose/data/photo_set.csv` are kept for evaluation, `mtc eval --starter pose`), so
the starter does not learn its weights: each label's logit is a fixed, readable sum of
geometric evidence (see `RULES`), and a softmax turns the four logits into a
distribution. The detector itself
(MediaPipe's pose models) ships inside the `mediapipe==0.10.21` wheel. `mtc train pose`
replaces the rules with weights fitted on your own photos.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Final

import numpy as np

from services.artifacts.model_dir import BuildResult, current_build
from services.pose.landmarks import (
    FEATURE_NAMES,
    NO_PERSON,
    DetectorSettings,
    LandmarkModelConfig,
    LinearHead,
)

logger = logging.getLogger(__name__)

STARTER_NAME: Final = "pose-landmark-rules"
STARTER_TASK: Final = "pose"
STARTER_VERSION: Final = "1.0.0"
STARTER_LABELS: Final = ("standing", "sitting", "lying", NO_PERSON)

RULES: Final[dict[str, dict[str, float]]] = {
    # Upright torso, straight knees and hips, vertical thighs, knees well below the hips,
    # a tall body outline. -9 on `person` puts the label at 0 when nobody is found.
    "standing": {
        "person": -9.0,
        "torso_upright": 4.0,
        "torso_horizontal": -2.0,
        "knee_straightness": 2.0,
        "hip_straightness": 1.5,
        "thigh_vertical": 2.0,
        "knee_drop": 3.0,
        "vertical_extent": 2.0,
    },
    # Upright torso but bent knees and hips, thighs near horizontal, knees near hip height.
    "sitting": {
        "person": 4.0,
        "torso_upright": 4.0,
        "torso_horizontal": -2.0,
        "knee_straightness": -2.0,
        "hip_straightness": -2.0,
        "thigh_vertical": -2.0,
        "knee_drop": -3.0,
    },
    # Horizontal torso and a wide, flat body outline, whatever the legs do.
    "lying": {
        "person": -1.0,
        "torso_upright": -2.0,
        "torso_horizontal": 6.0,
        "vertical_extent": -3.0,
    },
    # Wins when no person was found (every feature 0), loses clearly when one is well seen.
    NO_PERSON: {"person": -6.0, "visibility": -8.0},
}
"""Logit weight of each feature per label (missing = 0); see `landmarks.FEATURE_DOCS`."""

RULE_BIAS: Final[dict[str, float]] = {"standing": 0.0, "sitting": 0.0, "lying": 0.0, NO_PERSON: 6.0}


def starter_config() -> LandmarkModelConfig:
    """The starter's `config.json` content: the rules as a linear softmax head."""
    weights = np.array(
        [[RULES[label].get(name, 0.0) for name in FEATURE_NAMES] for label in STARTER_LABELS]
    )
    head = LinearHead(
        labels=STARTER_LABELS,
        weights=weights,
        bias=np.array([RULE_BIAS[label] for label in STARTER_LABELS]),
        feature_mean=np.zeros(len(FEATURE_NAMES)),
        feature_scale=np.ones(len(FEATURE_NAMES)),
    )
    return LandmarkModelConfig(
        classifier="rules",
        head=head,
        detector=DetectorSettings(),
        extra={
            "description": "Hand-set rules on MediaPipe Pose landmark geometry: each label's "
            "logit is a weighted sum of the features (weights below, bias added), and the "
            "scores are the softmax of the logits.",
        },
    )


def build_pose_starter(out: Path, *, force: bool = False) -> BuildResult:
    """Write the starter model directory into `out` unless it already holds this build.

    Idempotent: an existing directory whose manifest verifies and whose config is exactly
    what this code writes is left alone. The directory appears atomically, manifest last.
    """
    started = time.perf_counter()
    config = starter_config()
    current = current_build(out, STARTER_NAME, STARTER_VERSION, logger, force=force)
    expected = hashlib.sha256(config.to_text().encode("utf-8")).hexdigest()
    if current is not None and current.files.get("config.json") != expected:
        current = None
    if current is not None:
        logger.info("%s is up to date (%s %s)", out, current.name, current.version)
        return BuildResult(out.absolute(), False, current, time.perf_counter() - started)

    manifest = config.write_model(
        out,
        name=STARTER_NAME,
        task=STARTER_TASK,
        version=STARTER_VERSION,
        metrics={
            "evaluation": "none: the rules are hand-set and no labelled pose photos ship "
            "with any installable package; see `mtc train pose` to fit and measure a "
            "model on your own photos",
        },
        training_data={
            "method": "hand-set rules (services/pose/starter.py RULES)",
            "landmark_model": "mediapipe==0.10.21 pose_landmark_full.tflite (Apache-2.0)",
        },
    )
    return BuildResult(out.absolute(), True, manifest, time.perf_counter() - started)
