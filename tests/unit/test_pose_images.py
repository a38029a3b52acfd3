"""Image validation and decoding: what reaches the pose models, and what never does."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from PIL import Image

from services.core.errors import InvalidInput, ItemTooLarge, UnsupportedMediaType
from services.pose.images import (
    ImageLimits,
    decode_image,
    guard_decompression_bombs,
    read_header,
    sniff_format,
)
from tests.support.pose_images import black_rgb_png, image_bytes, png_claiming, truncated_jpeg
from tests.support.process_memory import peak_growth

LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=40_000_000, min_side=16, max_side=1280)
MAX_DECODE_BYTES_PER_PIXEL = 7
"""Peak memory of one decode per pixel of the image: measured 5.2 (9.2 to 9.6 when the
upright copy was made at full size)."""


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_each_format_decodes_to_rgb(image_format: str) -> None:
    data = image_bytes((64, 48), image_format=image_format)
    assert sniff_format(data) == image_format
    image = decode_image(data, label="image[0]", limits=LIMITS)
    assert image.pixels.shape == (48, 64, 3)
    assert image.pixels.dtype.name == "uint8"
    assert (image.width, image.height, image.format) == (64, 48, image_format)
    assert image.sha256 == hashlib.sha256(data).hexdigest()


def test_exif_orientation_is_applied() -> None:
    # Orientation 6: stored 64 wide x 32 high, displayed rotated a quarter turn.
    data = image_bytes((64, 32), image_format="JPEG", exif_orientation=6)
    image = decode_image(data, label="image[0]", limits=LIMITS)
    assert image.pixels.shape == (64, 32, 3)
    assert (image.width, image.height) == (32, 64)


def test_transparent_and_grey_images_become_rgb() -> None:
    for mode in ("RGBA", "L", "P", "LA"):
        image = decode_image(image_bytes(mode=mode), label="image[0]", limits=LIMITS)
        assert image.pixels.shape == (48, 64, 3), mode


def test_large_images_are_scaled_down_for_the_model() -> None:
    data = image_bytes((2000, 1000), image_format="JPEG")
    image = decode_image(data, label="image[0]", limits=LIMITS)
    assert max(image.pixels.shape[:2]) <= LIMITS.max_side
    assert (image.width, image.height) == (2000, 1000)


def test_the_type_comes_from_the_content_not_the_name() -> None:
    with pytest.raises(UnsupportedMediaType, match=r"image\[3\] \(notes.jpg\): not a JPEG"):
        decode_image(b"just some text\n", label="image[3] (notes.jpg)", limits=LIMITS)
    with pytest.raises(UnsupportedMediaType, match="empty file"):
        decode_image(b"", label="image[0]", limits=LIMITS)
    gif = b"GIF89a" + b"\x00" * 64
    with pytest.raises(UnsupportedMediaType):
        decode_image(gif, label="image[0]", limits=LIMITS)


def test_truncated_jpeg_is_invalid_input_naming_the_item() -> None:
    with pytest.raises(InvalidInput, match=r"image\[2\] \(cut.jpg\): truncated JPEG"):
        decode_image(truncated_jpeg(), label="image[2] (cut.jpg)", limits=LIMITS)


def test_corrupt_header_is_invalid_input() -> None:
    data = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
    with pytest.raises(InvalidInput, match=r"image\[0\]: corrupt PNG"):
        decode_image(data, label="image[0]", limits=LIMITS)


def test_tiny_images_are_refused() -> None:
    with pytest.raises(InvalidInput, match="1x1 is too small"):
        decode_image(image_bytes((1, 1)), label="image[0]", limits=LIMITS)
    with pytest.raises(InvalidInput, match="at least 16"):
        decode_image(image_bytes((100, 15)), label="image[0]", limits=LIMITS)


def test_too_many_bytes_is_refused_before_anything_else() -> None:
    small = ImageLimits(max_bytes=2000, max_pixels=40_000_000, min_side=16, max_side=1280)
    with pytest.raises(ItemTooLarge, match="MTC_MAX_IMAGE_BYTES"):
        decode_image(b"x" * 2001, label="image[0]", limits=small)


def test_decompression_bomb_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    guard_decompression_bombs(LIMITS.max_pixels)
    assert LIMITS.max_pixels == Image.MAX_IMAGE_PIXELS
    bomb = png_claiming(20_000, 20_000)
    assert len(bomb) < 200_000
    started = time.perf_counter()
    with pytest.raises(ItemTooLarge, match=r"image\[0\]: .*400000000 pixels"):
        decode_image(bomb, label="image[0]", limits=LIMITS)
    # Just over the limit: refused by our own header check (Pillow only warns there).
    with pytest.raises(ItemTooLarge, match="8000x6000 is 48000000 pixels"):
        decode_image(png_claiming(8000, 6000), label="image[0]", limits=LIMITS)
    assert time.perf_counter() - started < 1.0  # the 400 MP of pixel data were never decoded


def test_read_header_checks_an_image_without_decoding_it() -> None:
    started = time.perf_counter()
    header = read_header(png_claiming(6000, 6000), label="image[0]", limits=LIMITS)
    assert time.perf_counter() - started < 0.2  # 36 megapixels were not decoded
    assert (header.format, header.width, header.height, header.pixels) == (
        "PNG",
        6000,
        6000,
        36_000_000,
    )
    with pytest.raises(ItemTooLarge, match="MTC_MAX_IMAGE_PIXELS"):
        read_header(png_claiming(8000, 6000), label="image[0]", limits=LIMITS)
    with pytest.raises(InvalidInput, match="at least 16"):
        read_header(image_bytes((100, 15)), label="image[0]", limits=LIMITS)
    with pytest.raises(UnsupportedMediaType):
        read_header(b"GIF89a" + b"\x00" * 64, label="image[0]", limits=LIMITS)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotation_applied_after_scaling_down_gives_the_upright_image(
    orientation: int,
) -> None:
    # Stored 2000 wide x 1000 high; orientations 6 and 8 display it 1000 x 2000.
    data = image_bytes((2000, 1000), image_format="JPEG", exif_orientation=orientation)
    image = decode_image(data, label="image[0]", limits=LIMITS)
    upright = (1000, 2000) if orientation in (6, 8) else (2000, 1000)
    assert (image.width, image.height) == upright
    assert image.pixels.shape[:2] == (upright[1] * 1280 // 2000, upright[0] * 1280 // 2000)


def test_a_decode_holds_one_full_size_image_at_its_peak() -> None:
    """A 40-megapixel PNG is 160 MB once decoded (Pillow keeps RGB in 4 bytes a pixel)
    and 40 MB more while it is halved on the way down to 1280 pixels; turning it upright
    comes after the scaling, so no second full-size image is made."""
    side = 6324
    data = black_rgb_png(side, side)
    decode_image(data, label="image[0]", limits=LIMITS)  # first-use allocations
    pid = os.getpid()
    with peak_growth([pid]) as peak:
        image = decode_image(data, label="image[0]", limits=LIMITS)
    assert image.pixels.shape == (1280, 1280, 3)
    assert peak.growth[pid] * 1024 * 1024 < MAX_DECODE_BYTES_PER_PIXEL * side * side, peak
