"""The MediaPipe starter and trainer on real photos (Debian `opencv-doc`), through the API."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.artifacts.manifest import read_manifest
from services.pose.api import build_app
from services.pose.landmarks import LANDMARK_NAMES, read_landmark_config
from services.pose.settings import PoseSettings
from services.pose.starter import build_pose_starter
from services.pose.training import PoseTrainConfig, train_landmark_classifier
from tests.support.pose_images import (
    PEDESTRIANS,
    grass_crop,
    image_bytes,
    opencv_doc_data,
    pedestrian_crop,
)
from tests.support.service_client import wait_ready

URL = "/v1/pose/predict"


@pytest.fixture(scope="session")
def photos() -> Path:
    """`messi5.jpg`, `squirrel_cls.jpg`, `vtest.avi` (downloaded once, cached in .mtc/)."""
    return opencv_doc_data()


@pytest.fixture(scope="module")
def starter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pose_starter(tmp_path_factory.mktemp("models") / "pose").out


def serve(model_dir: Path, **overrides: Any) -> TestClient:
    return TestClient(build_app(PoseSettings(model_uri=str(model_dir), **overrides)))


@pytest.fixture(scope="module")
def client(starter_dir: Path) -> Iterator[TestClient]:
    with serve(starter_dir, inference_workers=2) as test_client:
        wait_ready(test_client)
        yield test_client


def top(scores: list[dict[str, Any]]) -> str:
    return str(scores[0]["label"])


def test_starter_labels_real_photos(client: TestClient, photos: Path) -> None:
    standing = pedestrian_crop(photos, 0)
    lying = pedestrian_crop(photos, 0, rotate=1)
    squirrel = (photos / "squirrel_cls.jpg").read_bytes()
    response = client.post(
        URL,
        files=[
            ("image", ("walker.png", standing, "image/png")),
            ("image", ("squirrel.jpg", squirrel, "image/jpeg")),
            ("image", ("turned.png", lying, "image/png")),
        ],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "pose-landmark-rules", "version": "1.0.0"}
    labels = [top(scores) for scores in body["predictions"]]
    assert labels == ["standing", "no_person", "lying"]
    for scores in body["predictions"]:
        assert [e["label"] for e in scores] != []
        assert {e["label"] for e in scores} == {"standing", "sitting", "lying", "no_person"}
        assert sum(e["score"] for e in scores) == pytest.approx(1.0, abs=1e-6)
    walker, nobody, turned = body["keypoints"]
    assert nobody is None
    assert [k["name"] for k in walker] == list(LANDMARK_NAMES)
    by_name = {k["name"]: k for k in walker}
    # Upright: the nose is above the hips, the hips above the ankles (y grows downwards).
    assert by_name["nose"]["y"] < by_name["left_hip"]["y"] < by_name["left_ankle"]["y"]
    assert all(0.0 <= k["visibility"] <= 1.0 for k in walker)
    assert len(turned) == 33


def test_every_pedestrian_is_standing(client: TestClient, photos: Path) -> None:
    images = [base64.b64encode(pedestrian_crop(photos, i)).decode() for i in range(6)]
    response = client.post(URL, json={"images": images})
    assert response.status_code == 200
    assert [top(scores) for scores in response.json()["predictions"]] == ["standing"] * 6


def test_a_real_person_in_action_is_found(client: TestClient, photos: Path) -> None:
    # A footballer mid-kick is neither clearly standing nor sitting; he is a person.
    messi = (photos / "messi5.jpg").read_bytes()
    body = client.post(URL, files=[("image", ("messi5.jpg", messi, "image/jpeg"))]).json()
    assert top(body["predictions"][0]) != "no_person"
    assert body["keypoints"][0] is not None


def test_scores_are_deterministic_and_keypoints_survive_the_cache(
    starter_dir: Path, photos: Path
) -> None:
    image = pedestrian_crop(photos, 3)
    upload = [("image", ("p.png", image, "image/png"))]
    with serve(starter_dir, cache_ttl_seconds=0) as uncached:
        wait_ready(uncached)
        first, second = (uncached.post(URL, files=upload).json() for _ in range(2))
    assert first == second
    with serve(starter_dir) as cached:
        wait_ready(cached)
        fresh = cached.post(URL, files=upload).json()
        hit = cached.post(URL, files=upload).json()
    assert hit == fresh == first


def test_concurrent_requests_on_two_workers(client: TestClient, photos: Path) -> None:
    crops = [pedestrian_crop(photos, i) for i in range(6, 10)]
    results: list[str] = []

    def call(data: bytes, index: int) -> None:
        # Distinct images, so each one reaches the model rather than the cache.
        response = client.post(URL, files=[("image", (f"{index}.png", data, "image/png"))])
        results.append(top(response.json()["predictions"][0]))

    threads = [threading.Thread(target=call, args=(data, i)) for i, data in enumerate(crops)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["standing"] * 4


def test_service_refuses_bad_images_and_keeps_serving(client: TestClient, photos: Path) -> None:
    bad = client.post(URL, files=[("image", ("x.jpg", b"GIF89a....", "image/jpeg"))])
    assert bad.status_code == 415
    good = client.post(URL, files=[("image", ("ok.png", image_bytes((64, 64)), "image/png"))])
    assert good.status_code == 200
    assert top(good.json()["predictions"][0]) == "no_person"


def test_train_on_photo_folders_then_serve(tmp_path: Path, photos: Path) -> None:
    photo_dir = tmp_path / "photos"
    for label in ("standing", "lying", "no_person"):
        (photo_dir / label).mkdir(parents=True)
    for index in range(len(PEDESTRIANS) - 2):
        (photo_dir / "standing" / f"{index}.png").write_bytes(pedestrian_crop(photos, index))
        turns = 1 if index % 2 else 3
        rotated = pedestrian_crop(photos, index, rotate=turns)
        (photo_dir / "lying" / f"{index}.png").write_bytes(rotated)
    for shift in range(0, 300, 60):
        (photo_dir / "no_person" / f"grass{shift}.png").write_bytes(grass_crop(photos, shift))
    (photo_dir / "no_person" / "squirrel.jpg").write_bytes(
        (photos / "squirrel_cls.jpg").read_bytes()
    )
    (photo_dir / "standing" / "README.txt").write_text("not a photo", encoding="utf-8")

    out = tmp_path / "trained"
    manifest = train_landmark_classifier(photo_dir, out, config=PoseTrainConfig(iterations=500))
    assert manifest.labels == ["lying", "no_person", "standing"]
    assert manifest.training_data["photos_skipped"]["not_a_usable_image"] == 1
    assert manifest.metrics["train_accuracy"] == 1.0
    assert manifest.metrics["heldout_examples"] + manifest.training_data["train_examples"] == 26
    assert read_landmark_config(out).classifier == "logistic_regression"
    again = train_landmark_classifier(photo_dir, out, config=PoseTrainConfig(iterations=500))
    assert again.files == manifest.files  # same photos, same seed: the same model

    unseen = [pedestrian_crop(photos, len(PEDESTRIANS) - 1)]
    unseen.append(pedestrian_crop(photos, len(PEDESTRIANS) - 2, rotate=1))
    with serve(out) as trained:
        wait_ready(trained)
        body = trained.post(
            URL, json={"images": [base64.b64encode(data).decode() for data in unseen]}
        ).json()
    assert body["model"]["name"] == "pose-landmark-logreg"
    assert [top(scores) for scores in body["predictions"]] == ["standing", "lying"]
    assert read_manifest(out) is not None


def test_missing_apt_get_fails_with_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, no dpkg-deb
    with pytest.raises(RuntimeError, match="apt-get download opencv-doc"):
        opencv_doc_data(tmp_path / "empty-cache")
