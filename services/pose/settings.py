"""Settings of the pose (image classification) service."""

from __future__ import annotations

from pydantic import Field, model_validator

from services.core.settings import ServiceSettings


class PoseSettings(ServiceSettings):
    """Pose service configuration: the shared `MTC_*` fields plus image limits."""

    task: str = "pose"
    """Task name this service answers for; the route is `POST /v1/{task}/predict`."""

    model_uri: str = "file://.mtc/models/pose"
    """Where the model lives: a MediaPipe landmark classifier directory (`mtc models build`,
    `mtc train pose`) or any Hugging Face image-classification directory."""

    port: int = Field(default=8201, ge=1, le=65535)
    """Port the HTTP server listens on."""

    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest accepted request body in bytes (all images together, base64 included);
    larger -> 413."""

    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Largest accepted image file in bytes; a larger item -> 413 naming it."""

    max_image_pixels: int = Field(default=40_000_000, ge=256)
    """Most pixels (width x height) an image may declare in its header; a larger one -> 413
    before its pixel data is decoded, so a small compressed file cannot expand into
    gigabytes of memory (a decompression bomb)."""

    max_pixels_per_request: int = Field(default=200_000_000, ge=256)
    """Most pixels the images of one request may declare together, read from their headers
    before any is decoded; more -> 413. Each pixel costs decoding time and, while its image
    is decoded, about 5 bytes, so this bounds the work one request buys: the default fits
    `MTC_MAX_IMAGES_PER_REQUEST` (16) photos of 12.5 megapixels (a 4000 x 3000 phone photo
    is 12), or 5 images at `MTC_MAX_IMAGE_PIXELS`."""

    max_concurrent_decodes: int = Field(default=2, ge=1, le=64)
    """Images decoded at the same time across all requests; the others wait their turn (at
    most `MTC_REQUEST_TIMEOUT_SECONDS`, then 504). One decode holds up to about 5 bytes per
    pixel of `MTC_MAX_IMAGE_PIXELS` (210 MB at the default: the decoded image, then a
    half-size copy while it is scaled down), so this number times that bounds the memory
    decoding can take."""

    min_image_side: int = Field(default=16, ge=1)
    """Smallest accepted width and height in pixels; a smaller image -> 400 naming it."""

    max_images_per_request: int = Field(default=16, ge=1)
    """Most images accepted in one request; more -> 413, zero -> 422."""

    decode_max_side: int = Field(default=1280, ge=64)
    """Images are scaled down (aspect kept) so their longer side is at most this many pixels
    before they are queued: the models look at 256 (MediaPipe) or ~224 (ViT) pixels, so a
    full-resolution copy would only cost memory while it waits."""

    @model_validator(mode="after")
    def _request_fits_queue(self) -> PoseSettings:
        if self.max_images_per_request > min(self.max_queued_items, self.max_items_per_request):
            raise ValueError(
                "max_images_per_request must not exceed max_queued_items or max_items_per_request"
            )
        if self.max_image_pixels < self.min_image_side**2:
            raise ValueError("max_image_pixels must allow at least min_image_side squared")
        if self.max_pixels_per_request < self.max_image_pixels:
            raise ValueError("max_pixels_per_request must allow one image of max_image_pixels")
        return self
