"""Turn uploaded bytes into validated RGB images, or a domain error naming the bad item.

Everything a client can get wrong about an image is caught here, in the API layer, before
anything is queued: the model only ever sees decoded, right-side-up, bounded RGB arrays.
The format is read from the file's magic bytes, never from its name or declared type, and
the pixel count is checked from the header before any pixel data is decoded
(`read_header`), so a request's images can be checked together before any is decoded.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from services.core.errors import InvalidInput, ItemTooLarge, MtcError, UnsupportedMediaType

_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION: Final = 0x0112


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """One uploaded image, decoded: what the pose models receive as an item.

    Compared by identity (`eq=False`): equality of images is what `sha256` is for.
    """

    pixels: npt.NDArray[np.uint8]
    """RGB pixels, shape (height, width, 3), EXIF orientation applied, possibly scaled down."""
    sha256: str
    """Hex sha256 of the original file bytes: the prediction cache key."""
    format: str
    """`JPEG`, `PNG` or `WEBP`, as read from the magic bytes."""
    width: int
    """Width of the upright image as uploaded, before any scaling down."""
    height: int
    """Height of the upright image as uploaded, before any scaling down."""


@dataclass(frozen=True)
class ImageLimits:
    """The per-image limits of `PoseSettings`, with the variable names used in messages."""

    max_bytes: int
    max_pixels: int
    min_side: int
    max_side: int
    """Decoded images are scaled down to at most this many pixels on their longer side."""


def guard_decompression_bombs(max_pixels: int) -> None:
    """Set Pillow's process-wide pixel guard to our limit, as a second line of defence.

    `decode_image` refuses oversized headers itself; Pillow's guard also covers any other
    code path in the process that opens images.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    # Pillow only warns between 1x and 2x its limit; `decode_image` refuses those images
    # itself right after reading the header, so the warning would be noise.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def sniff_format(data: bytes) -> str | None:
    """The image format named by the first bytes of a file, or None if not one we accept."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


@dataclass(frozen=True)
class ImageHeader:
    """What an image file declares before any of its pixels is decoded."""

    format: str
    """`JPEG`, `PNG` or `WEBP`, as read from the magic bytes."""
    width: int
    """Width as stored (before any EXIF rotation)."""
    height: int
    """Height as stored (before any EXIF rotation)."""

    @property
    def pixels(self) -> int:
        """Width x height: what decoding the image costs, about 4 bytes each."""
        return self.width * self.height


def read_header(data: bytes, *, label: str, limits: ImageLimits) -> ImageHeader:
    """Validate one image from its header alone; raises as `decode_image` does."""
    image_format, image = _open_checked(data, label=label, limits=limits)
    with image:
        width, height = image.size
    return ImageHeader(format=image_format, width=width, height=height)


def decode_image(data: bytes, *, label: str, limits: ImageLimits) -> DecodedImage:
    """Validate and decode one image; `label` (e.g. `image[2] (cat.jpg)`) names it in errors.

    Raises `ItemTooLarge` (413) for too many bytes or pixels, `UnsupportedMediaType` (415)
    for anything that is not a JPEG, PNG or WebP file, and `InvalidInput` (400) for a
    truncated or corrupt file or one smaller than the minimum size.
    """
    image_format, image = _open_checked(data, label=label, limits=limits)
    with image:
        width, height = image.size
        try:
            # EXIF orientations 5-8 are rotations by 90 degrees (some mirrored).
            if image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
            pixels = _decode_rgb(image, limits.max_side)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is this item's fault
            problem = "truncated" if "truncated" in str(exc).lower() else "corrupt"
            raise InvalidInput(f"{label}: {problem} {image_format} ({exc})") from None
    return DecodedImage(
        pixels=pixels,
        sha256=hashlib.sha256(data).hexdigest(),
        format=image_format,
        width=width,
        height=height,
    )


def _open_checked(data: bytes, *, label: str, limits: ImageLimits) -> tuple[str, Image.Image]:
    """The format and the lazily opened image (header read, no pixel decoded), once the
    byte, type, pixel and size checks have passed."""
    if len(data) > limits.max_bytes:
        # Callers may read only one byte past the limit, so the true size is not known.
        raise ItemTooLarge(
            f"{label}: larger than the limit of {limits.max_bytes} bytes (MTC_MAX_IMAGE_BYTES)"
        )
    image_format = sniff_format(data)
    if image_format is None:
        kind = "an empty file" if not data else "not a JPEG, PNG or WebP image"
        raise UnsupportedMediaType(
            f"{label}: {kind}; send JPEG, PNG or WebP files (the type is read from the "
            "file's content, not its name)"
        )
    try:
        # Lazy: reads the header only, so the size check below precedes any decoding.
        image = Image.open(io.BytesIO(data), formats=[image_format])
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (see `guard_decompression_bombs`) fired while reading the header.
        raise ItemTooLarge(
            f"{label}: too many pixels; the limit is {limits.max_pixels} "
            f"(MTC_MAX_IMAGE_PIXELS): {exc}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt headers
        raise InvalidInput(f"{label}: corrupt {image_format} header ({exc})") from None
    width, height = image.size
    try:
        if width * height > limits.max_pixels:
            raise ItemTooLarge(
                f"{label}: {width}x{height} is {width * height} pixels; the limit is "
                f"{limits.max_pixels} (MTC_MAX_IMAGE_PIXELS)"
            )
        if min(width, height) < limits.min_side:
            raise InvalidInput(
                f"{label}: {width}x{height} is too small; both sides must be at least "
                f"{limits.min_side} pixels (MTC_MIN_IMAGE_SIDE)"
            )
    except MtcError:
        image.close()
        raise
    return image_format, image


def _decode_rgb(image: Image.Image, max_side: int) -> npt.NDArray[np.uint8]:
    if image.format == "JPEG":
        # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: far less work and memory.
        image.draft("RGB", (max_side, max_side))
    image.load()
    # Scaled down in place before turning upright: a transposed (or, when upright, copied)
    # full-size image would be a second 4 bytes per pixel while the first is still held.
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    ImageOps.exif_transpose(image, in_place=True)
    return np.asarray(_to_rgb(image), dtype=np.uint8).copy()


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become white rather than whatever colour hides under alpha 0.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
