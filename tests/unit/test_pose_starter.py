"""The starter pose model's rules, its builder, and how keypoints are cached."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from services.artifacts.manifest import read_manifest, verify_model_dir
from services.artifacts.model_dir import ModelDirConflict
from services.core.cache import MemoryCache
from services.core.dataplane import DataPlane
from services.core.metrics import ServiceMetrics
from services.core.model import LabelScore, ModelMetadata
from services.core.settings import ServiceSettings
from services.pose.images import DecodedImage
from services.pose.landmarks import (
    LANDMARK_NAMES,
    DetectorSettings,
    LandmarkDetector,
    is_landmark_model_dir,
    landmark_features,
    read_landmark_config,
)
from services.pose.models.base import Keypoint, Keypoints, PoseModel, PosePrediction
from services.pose.starter import STARTER_LABELS, build_pose_starter, starter_config

# Pixel positions (x, y) of shoulder, hip, knee, ankle (both sides alike) in a 100x100 image.
STANDING = {"shoulder": (50, 20), "hip": (50, 50), "knee": (50, 72), "ankle": (50, 95)}
SITTING = {"shoulder": (40, 20), "hip": (40, 50), "knee": (65, 51), "ankle": (66, 78)}
LYING = {"shoulder": (15, 70), "hip": (45, 71), "knee": (68, 72), "ankle": (92, 73)}


def skeleton(joints: dict[str, tuple[int, int]], visibility: float = 0.95) -> Keypoints:
    """33 keypoints in a 100x100 image; body joints placed as given, the rest at the head."""
    points = []
    for name in LANDMARK_NAMES:
        part = name.removeprefix("left_").removeprefix("right_")
        x, y = joints.get(part, joints["shoulder"])
        points.append(Keypoint(name, x / 100, y / 100, visibility))
    return points


def rule_scores(keypoints: Keypoints | None, *, is_person: bool = True) -> dict[str, float]:
    head = starter_config().head
    features = landmark_features(keypoints, 100, 100, is_person=is_person)
    probabilities = head.probabilities(features[None, :])[0]
    return dict(zip(head.labels, probabilities.tolist(), strict=True))


@pytest.mark.parametrize(
    ("joints", "expected"),
    [(STANDING, "standing"), (SITTING, "sitting"), (LYING, "lying")],
)
def test_rules_read_the_pose_from_the_geometry(
    joints: dict[str, tuple[int, int]], expected: str
) -> None:
    scores = rule_scores(skeleton(joints))
    assert max(scores, key=scores.__getitem__) == expected
    assert scores[expected] > 0.8
    assert sum(scores.values()) == pytest.approx(1.0)


def test_no_person_wins_without_a_detection_or_with_too_little_visible() -> None:
    assert max(rule_scores(None, is_person=False).items(), key=lambda kv: kv[1])[0] == "no_person"
    detector = LandmarkDetector(DetectorSettings())
    faint = skeleton(STANDING, visibility=0.2)
    assert detector.is_person(skeleton(STANDING))
    assert not detector.is_person(faint)
    assert rule_scores(faint, is_person=detector.is_person(faint))["no_person"] > 0.9


def test_starter_builder_is_idempotent_and_atomic(tmp_path: Path) -> None:
    out = tmp_path / "models" / "pose"
    first = build_pose_starter(out)
    assert first.built
    manifest = read_manifest(out)
    assert manifest is not None
    verify_model_dir(out, manifest)
    assert manifest.labels == list(STARTER_LABELS)
    assert is_landmark_model_dir(out)
    config = read_landmark_config(out)
    assert config.classifier == "rules"
    assert np.allclose(config.head.weights, starter_config().head.weights)
    mtime = os.stat(out / "config.json").st_mtime_ns

    second = build_pose_starter(out)
    assert not second.built
    assert os.stat(out / "config.json").st_mtime_ns == mtime

    (out / "config.json").write_text("{}", encoding="utf-8")  # damaged -> rebuilt
    assert build_pose_starter(out).built
    assert build_pose_starter(out, force=True).built
    assert sorted(p.name for p in out.parent.iterdir()) == ["pose"]  # no staging left over


def test_starter_builder_refuses_to_overwrite_something_else(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ModelDirConflict):
        build_pose_starter(tmp_path)
    assert (tmp_path / "precious.txt").is_file()


class LandmarkStub(PoseModel):
    """Gives every image the standing skeleton; counts the images it was asked about."""

    runtime = "stub"

    def __init__(self) -> None:
        super().__init__()
        self.images_seen = 0

    async def load(self, model_dir: Path) -> ModelMetadata:
        return ModelMetadata(name="stub", version="1", labels=["standing"])

    def predict(self, batch: Sequence[DecodedImage]) -> list[PosePrediction]:
        self.images_seen += len(batch)
        return [PosePrediction([LabelScore("standing", 1.0)], skeleton(STANDING)) for _ in batch]


def decoded(sha: str) -> DecodedImage:
    return DecodedImage(np.zeros((16, 16, 3), dtype=np.uint8), sha * 64, "PNG", 16, 16)


def test_keypoints_round_trip_through_the_cache_format() -> None:
    model = LandmarkStub()
    found = PosePrediction([LabelScore("standing", 0.75)], skeleton(STANDING))
    assert model.decode_prediction(model.encode_prediction(found)) == found
    nobody = PosePrediction([LabelScore("no_person", 1.0)], None)
    assert model.decode_prediction(model.encode_prediction(nobody)) == nobody


async def test_a_replica_answered_by_the_shared_cache_returns_the_keypoints() -> None:
    cache = MemoryCache(100, 60)
    first, second = LandmarkStub(), LandmarkStub()
    planes = []
    for model in (first, second):
        await model.start(Path("."))
        plane = DataPlane(model, cache, ServiceMetrics("pose"), ServiceSettings(task="pose"))
        await plane.start()
        planes.append(plane)
    try:
        fresh = await planes[0].predict([decoded("a")])
        cached = await planes[1].predict([decoded("a")])
    finally:
        for plane in planes:
            await plane.stop()
    assert (first.images_seen, second.images_seen) == (1, 0)
    assert cached.cache_hits == 1
    assert cached.predictions == fresh.predictions
    assert cached.predictions[0].keypoints == skeleton(STANDING)
