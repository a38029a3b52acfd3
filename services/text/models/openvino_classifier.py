"""A text model directory served by OpenVINO, converted from its PyTorch weights at load."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from services.core.errors import ModelLoadError
from services.core.model import ModelMetadata
from services.text.models.sequence_classifier import SequenceClassifier, TextInput, TextPrediction
from services.text.models.traced_graph import CHECK_TEXTS, LOGIT_TOLERANCE, trace_batch

logger = logging.getLogger(__name__)

_CONVERTING = threading.Lock()
"""One conversion at a time per process: two models traced at once (two apps in a process,
as in tests) get each other's TorchScript names, the trace's own check fails, and both
would fall back to torch."""

OpenVinoPrecision = Literal["float32", "bfloat16"]

_INFERENCE_PRECISION = {"float32": "f32", "bfloat16": "bf16"}
"""OpenVINO's names for the precisions (`INFERENCE_PRECISION_HINT`)."""


class OpenVinoSequenceClassifier(SequenceClassifier):
    """`SequenceClassifier` whose forward pass runs in OpenVINO's CPU plugin.

    The float32 PyTorch model is converted in memory at load, through OpenVINO's PyTorch
    frontend (not `openvino.convert_model`, which sends usage telemetry unless opted out),
    and compiled for the CPU with dynamic batch size and length. `precision="bfloat16"`
    computes in bfloat16 on CPUs with AMX or AVX-512 BF16 (OpenVINO falls back to float32
    elsewhere; `runtime` then says `openvino`). Tokenizer, labels, name and version,
    truncation and `token_counts` are the parent's, so responses have the same shape.
    A model OpenVINO cannot convert, or whose converted logits differ from PyTorch's by
    more than the tracing tolerance, is served by the float32 PyTorch network instead,
    with a warning (`runtime` then says `torch`).

    Every inference worker thread gets its own infer request; `streams` (default: one)
    lets that many run at once, each on `torch_threads` threads (default: one).
    """

    runtime = "openvino"
    converts_by_tracing = True

    def __init__(
        self,
        *,
        max_tokens: int | None = None,
        torch_threads: int | None = None,
        limits: dict[str, Any] | None = None,
        precision: OpenVinoPrecision = "bfloat16",
        streams: int = 1,
    ) -> None:
        super().__init__(max_tokens=max_tokens, torch_threads=torch_threads, limits=limits)
        self.precision = precision
        self._streams = max(1, streams)
        self._compiled: Any = None
        self._input_names: list[str] = []
        self._requests = threading.local()

    def _load(self, model_dir: Path) -> ModelMetadata:
        # The parent reads tokenizer, config, labels and manifest, and the float32 network
        # the conversion starts from; that network is dropped once it is converted.
        metadata = super()._load(model_dir)
        reason = self._convert()
        if reason is None:
            self._model = None
        else:
            # Keep the float32 PyTorch network the conversion started from, and say so: a
            # model OpenVINO cannot run is still served, slower, rather than not at all.
            logger.warning("%s: %s; serving it with PyTorch (float32) instead", model_dir, reason)
            self._compiled = None
            self.runtime = "torch"
        return metadata

    def _convert(self) -> str | None:
        """Convert and check the loaded network: None when OpenVINO serves it, else why not."""
        try:
            with _CONVERTING:
                self._compiled, self._input_names = self._compile(self._model)
            difference = self._check(self._model)
        except ImportError:
            return "OpenVINO is not installed"
        except Exception as exc:  # noqa: BLE001 - OpenVINO's errors share no base class
            return f"OpenVINO cannot run this model: {exc}"
        tolerance = LOGIT_TOLERANCE[self.precision]
        if not difference <= tolerance:
            return (
                f"OpenVINO's logits differ from PyTorch's by {difference:.3g} "
                f"(over {tolerance:.3g})"
            )
        return None

    def _compile(self, model: Any) -> tuple[Any, list[str]]:
        """`model` converted and compiled for the CPU, and the inputs it takes."""
        import openvino  # type: ignore[import-untyped]
        import torch
        from openvino.frontend import FrontEndManager  # type: ignore[import-untyped]
        from openvino.frontend.pytorch.ts_decoder import (  # type: ignore[import-untyped]
            TorchScriptPythonDecoder,
        )

        example, names = trace_batch(model, self._tokenizer)
        with torch.no_grad():
            decoder = TorchScriptPythonDecoder(
                model, example_input={name: example[name] for name in names}
            )
        frontend = FrontEndManager().load_by_framework("pytorch")
        converted = frontend.convert(frontend.load(decoder))
        threads = self._torch_threads or 1
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "THROUGHPUT" if self._streams > 1 else "LATENCY",
            "NUM_STREAMS": self._streams,
            "INFERENCE_NUM_THREADS": self._streams * threads,
            "INFERENCE_PRECISION_HINT": _INFERENCE_PRECISION[self.precision],
            # The inference workers are the only concurrency; pinning their threads to
            # cores only hurts on a shared machine or under a CPU quota.
            "ENABLE_CPU_PINNING": False,
        }
        compiled = openvino.Core().compile_model(converted, "CPU", config)
        computed = compiled.get_property("INFERENCE_PRECISION_HINT")
        self.runtime = "openvino-bf16" if computed == openvino.Type.bf16 else "openvino"
        return compiled, [names[index] for index in _input_order(converted, names)]

    def _check(self, model: Any) -> float:
        """Largest logit difference to `model` on other shapes than the conversion's."""
        import torch

        check = self._tokenizer(list(CHECK_TEXTS), padding=True, return_tensors="pt")
        with torch.inference_mode():
            expected = model(**{name: check[name] for name in self._input_names}).logits
        actual = self._logits({name: check[name].numpy() for name in self._input_names})
        return float(np.abs(actual - expected.float().numpy()).max())

    def _logits(self, arrays: dict[str, Any]) -> Any:
        """float32 logits of a batch of int64 input arrays, on this thread's request."""
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._compiled.create_infer_request()
            self._requests.request = request
        request.infer([arrays[name] for name in self._input_names])
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)

    def predict(self, batch: Sequence[TextInput]) -> list[TextPrediction]:
        """Scores for every label of every text, highest first."""
        if self._compiled is None:
            return super().predict(batch)
        arrays, counts = self.encode(batch)
        logits = self._logits(arrays)
        return self.predictions_from_logits(logits, counts)


def _input_order(converted: Any, names: Sequence[str]) -> list[int]:
    """Index into `names` of each input of the converted model, in its order."""
    order = []
    for port in converted.inputs:
        found = port.get_names() & set(names)
        if len(found) != 1:
            raise ModelLoadError(f"the converted model has an unexpected input {port}")
        order.append(names.index(found.pop()))
    return order
