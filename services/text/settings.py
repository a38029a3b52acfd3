"""Settings of the text classification service."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from services.core.cpu_quota import available_cpus
from services.core.settings import ServiceSettings


class TextSettings(ServiceSettings):
    """Text service configuration: the shared `MTC_*` fields plus text limits."""

    max_text_chars: int = Field(default=10_000, ge=1)
    """Longest accepted text in characters; a longer item -> 413 naming its index."""

    max_tokens: int | None = Field(default=None, ge=8)
    """Cap on tokens per text fed to the model (default: the model's own maximum);
    longer texts are truncated and reported in the response's `truncated` list."""

    inference_workers: int = Field(default_factory=available_cpus, ge=1, le=64)
    """Forward passes that may run at the same time (each in its own thread); default: one
    per CPU of the container's limit (cgroup `cpu.max`), else of the machine. With
    `torch_threads` unset each then runs single-threaded: two single-threaded workers
    used half the CPU time per text of one two-threaded worker (docs/performance.md)."""

    runtime: Literal["torch", "onnx"] = "torch"
    """`torch` serves the safetensors weights; `onnx` serves `onnx/model.int8.onnx`, written
    by `mtc models build` / `mtc export onnx` (fused graph, int8 where it keeps scores within
    0.02 of torch's; about 1.6-2.5x faster per text on CPU)."""

    @model_validator(mode="after")
    def _request_fits_queue(self) -> TextSettings:
        if self.max_items_per_request > self.max_queued_items:
            raise ValueError("max_items_per_request must not exceed max_queued_items")
        return self
