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
        return self
