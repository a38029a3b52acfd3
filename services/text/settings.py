"""Settings of the text classification service."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from services.core.cpu_features import has_native_bfloat16
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

    runtime: Literal["openvino", "torch", "onnx"] = "openvino"
    """`openvino` converts the safetensors weights at load and runs them in OpenVINO's CPU
    plugin, in the precision `torch_dtype` resolves to (a model it cannot run is served by
    float32 torch instead, with a warning); on the benchmark machine it served 1.8x the
    texts per second of `torch` for two thirds of the CPU (docs/performance.md). `torch`
    serves the weights with PyTorch (`torch_dtype`, `torch_graph`); `onnx` serves
    `onnx/model.int8.onnx`, written by `mtc models build` / `mtc export onnx` (int8 where it
    keeps scores within 0.02 of torch's)."""

    torch_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Precision of the weights with `runtime=torch`. `bfloat16` converts them once at
    load: on CPUs that compute in bfloat16 natively (AMX-BF16 or AVX-512 BF16) batched
    texts cost about half as much as in float32, and scores stay within 0.02 of float32's
    (the label is the same for every held-out review of the starter). `auto` picks
    `bfloat16` on such CPUs and `float32` elsewhere, where bfloat16 would be slower."""

    torch_graph: Literal["traced", "eager"] = "traced"
    """How `runtime=torch` runs the forward pass: `traced` as one TorchScript graph, made
    at load and used only if it reproduces the model on new input shapes (else the model
    runs eagerly, with a warning in the log); `eager` module by module in Python, which
    holds the GIL between operators (about 20 % fewer texts per second under load)."""

    @property
    def resolved_torch_dtype(self) -> Literal["float32", "bfloat16"]:
        """`torch_dtype` with `auto` decided for this machine's CPU."""
        if self.torch_dtype == "auto":
            return "bfloat16" if has_native_bfloat16() else "float32"
        return self.torch_dtype

    @model_validator(mode="after")
    def _request_fits_queue(self) -> TextSettings:
        if self.max_items_per_request > self.max_queued_items:
            raise ValueError("max_items_per_request must not exceed max_queued_items")
        return self
