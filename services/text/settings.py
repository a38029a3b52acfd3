"""Settings of the text classification service."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from services.core.settings import ServiceSettings


class TextSettings(ServiceSettings):
    """Text service configuration: the shared `MTC_*` fields plus text limits."""

    max_text_chars: int = Field(default=10_000, ge=1)
    """Longest accepted text in characters; a longer item -> 413 naming its index."""

    max_tokens: int | None = Field(default=None, ge=8)
    """Cap on tokens per text fed to the model (default: the model's own maximum);
    longer texts are truncated and reported in the response's `truncated` list."""

    runtime: Literal["torch", "onnx"] = "torch"
    """`torch` serves the safetensors weights; `onnx` serves `onnx/model.int8.onnx`, the int8
    export written by `python -m services.text.onnx_export` (sentiment starter: 3-5x faster
    per text on CPU, same held-out accuracy; scores differ from torch's by ~0.004 typically,
    up to ~0.3 for texts near the decision boundary)."""

    @model_validator(mode="after")
    def _request_fits_queue(self) -> TextSettings:
        if self.max_items_per_request > self.max_queued_items:
            raise ValueError("max_items_per_request must not exceed max_queued_items")
        return self
