"""Images for the pose tests: made with Pillow, crafted bad files, a tiny random ViT, and
real photos from Debian's `opencv-doc` package (fetched once, cached under `.mtc/`)."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image

from services.pose.photo_set import video_frame

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
OPENCV_DOC_CACHE: Final = REPO_ROOT / ".mtc" / "test-data" / "opencv-doc"
OPENCV_DOC_DATA: Final = "usr/share/doc/opencv-doc/examples/data"
OPENCV_DOC_FILES: Final = ("messi5.jpg", "squirrel_cls.jpg", "vtest.avi")

TINY_VIT_LABELS: Final = ["standing", "sitting"]

PEDESTRIANS: Final[tuple[tuple[int, int, int, int, int], ...]] = (
    # (frame, x, y, width, height) of people walking or standing in vtest.avi; found with
    # OpenCV's HOG people detector and checked by eye.
    (0, 232, 192, 72, 143),
    (120, 495, 193, 65, 131),
    (240, 431, 233, 71, 142),
    (240, 646, 253, 75, 150),
    (360, 415, 220, 69, 138),
    (360, 683, 217, 71, 142),
    (480, 574, 237, 76, 153),
    (480, 447, 219, 70, 140),
    (600, 546, 178, 69, 138),
    (600, 620, 288, 72, 144),
    (720, 243, 158, 66, 132),
    (720, 443, 161, 78, 157),
)
"""Pedestrians in `vtest.avi` (768x576): frame index and bounding box."""

GRASS: Final = (0, 60, 340, 150, 150)
"""(frame, x, y, width, height): an empty patch of lawn in `vtest.avi`."""


# --------------------------------------------------------------------------- made images


def image_bytes(
    size: tuple[int, int] = (64, 48),
    *,
    image_format: str = "PNG",
    color: tuple[int, int, int] = (200, 120, 40),
    exif_orientation: int | None = None,
    mode: str = "RGB",
) -> bytes:
    """A small image with a gradient (so JPEG and resizing have something to keep)."""
    width, height = size
    ramp = np.linspace(0, 1, width, dtype=np.float64)[None, :, None]
    pixels = (np.array(color, dtype=np.float64)[None, None, :] * (0.5 + 0.5 * ramp)).repeat(
        height, axis=0
    )
    image = Image.fromarray(pixels.astype(np.uint8), "RGB").convert(mode)
    buffer = io.BytesIO()
    options: dict[str, Any] = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        options["exif"] = exif.tobytes()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def rgb_to_png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """PNG bytes of an RGB array."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    """A JPEG cut off in the middle of its entropy-coded data."""
    whole = image_bytes((256, 256), image_format="JPEG")
    return whole[: len(whole) // 2]


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of `width` x `height` black pixels: tiny on disk, huge decoded.

    20000 x 20000 compresses to about 60 KB but would decode to 400 megapixels.
    """
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row) for _ in range(height)]
    data = b"".join(chunks) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def black_rgb_png(width: int, height: int) -> bytes:
    """A valid 8-bit RGB PNG of black pixels: about 117 KB at 40 megapixels, which Pillow
    decodes into 4 bytes per pixel."""
    row = b"\x00" + bytes(3 * width)  # filter byte, then the pixels
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- tiny ViT


def build_tiny_vit(target: Path) -> Path:
    """A randomly initialised 2-layer ViT (32x32 input) with its image processor, saved
    like any Hugging Face image-classification model. Real code path, tiny weights."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(TINY_VIT_LABELS)),
        label2id={label: index for index, label in enumerate(TINY_VIT_LABELS)},
    )
    ViTForImageClassification(config).save_pretrained(target)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(target)
    return target


# --------------------------------------------------------------------------- real photos


def opencv_doc_data(cache_dir: Path = OPENCV_DOC_CACHE) -> Path:
    """Directory holding `messi5.jpg`, `squirrel_cls.jpg` and `vtest.avi` from Debian's
    `opencv-doc` package, downloaded with apt-get on first use and kept in `cache_dir`.

    Raises RuntimeError with instructions when apt-get cannot provide the package.
    """
    if all((cache_dir / name).is_file() for name in OPENCV_DOC_FILES):
        return cache_dir
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError(
            "the pose tests need real photos from the Debian package opencv-doc, but apt-get "
            f"or dpkg-deb is missing; on Debian/Ubuntu run `apt-get download opencv-doc` and "
            f"unpack {', '.join(OPENCV_DOC_FILES)} from {OPENCV_DOC_DATA} into {cache_dir}"
        )
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir.parent, prefix=".opencv-doc.") as scratch:
        work = Path(scratch)
        deb = _apt_download("opencv-doc", work)
        staging = work / "files"
        staging.mkdir()
        _extract_from_deb(deb, [f"{OPENCV_DOC_DATA}/{name}" for name in OPENCV_DOC_FILES], staging)
        (staging / "SOURCE").write_text(f"Debian package file {deb.name}\n", encoding="utf-8")
        if cache_dir.exists():
            shutil.rmtree(cache_dir)
        staging.rename(cache_dir)
    return cache_dir


def _apt_download(package: str, directory: Path) -> Path:
    command = ["apt-get", "download", "-q", package]
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True, check=False)
    if result.returncode != 0 and "Unable to locate" in result.stderr:
        # A fresh machine has no package lists yet.
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        result = subprocess.run(command, cwd=directory, capture_output=True, text=True, check=False)
    debs = sorted(directory.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        raise RuntimeError(
            f"`apt-get download {package}` failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-500:]}; the pose tests need its photos"
        )
    return debs[0]


def _extract_from_deb(deb: Path, members: Sequence[str], target: Path) -> None:
    # Only three files of the 270 MB payload are needed: stream the data archive and
    # keep those, instead of unpacking everything with `dpkg-deb -x`.
    wanted = {f"./{member}": Path(member).name for member in members}
    process = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert process.stdout is not None
    found: set[str] = set()
    with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
        for member in archive:
            if member.name in wanted and member.isfile():
                source = archive.extractfile(member)
                assert source is not None
                (target / wanted[member.name]).write_bytes(source.read())
                found.add(member.name)
    if process.wait() != 0 or len(found) != len(wanted):
        raise RuntimeError(f"{deb.name}: could not extract {sorted(set(wanted) - found)}")


def pedestrian_crop(data_dir: Path, which: int = 0, *, rotate: int = 0) -> bytes:
    """PNG of one pedestrian from `vtest.avi`, with margins, scaled 2x (people there are
    ~140 px tall), optionally rotated by `rotate` quarter turns (a standing person turned
    on their side looks like a lying one)."""
    frame_index, x, y, width, height = PEDESTRIANS[which]
    frame = video_frame(data_dir / "vtest.avi", frame_index)
    frame_height, frame_width = frame.shape[:2]
    left, top = max(0, x - width // 2), max(0, y - height // 8)
    right = min(frame_width, x + width + width // 2)
    bottom = min(frame_height, y + height + height // 8)
    crop = Image.fromarray(np.ascontiguousarray(frame[top:bottom, left:right]), "RGB")
    crop = crop.resize((crop.width * 2, crop.height * 2), Image.Resampling.BICUBIC)
    pixels = np.ascontiguousarray(np.rot90(np.asarray(crop), k=rotate))
    return rgb_to_png(pixels)


def grass_crop(data_dir: Path, shift: int = 0) -> bytes:
    """PNG of a patch of empty lawn from `vtest.avi` (no person)."""
    frame_index, x, y, width, height = GRASS
    frame = video_frame(data_dir / "vtest.avi", frame_index)
    x += shift
    return rgb_to_png(np.ascontiguousarray(frame[y : y + height, x : x + width]))
