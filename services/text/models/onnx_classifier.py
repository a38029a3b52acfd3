"""A text model directory served by ONNX Runtime from its int8 export."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.core.errors import ModelLoadError
from services.core.model import ModelMetadata
from services.text.models.sequence_classifier import SequenceClassifier, TextInput, TextPrediction
from services.text.models.traced_graph import GRAPH_INPUTS
from services.text.onnx_export import EXPORT_COMMAND, ONNX_FILE, SOURCE_DIGEST_KEY, source_digest

logger = logging.getLogger(__name__)


class OnnxSequenceClassifier(SequenceClassifier):
    """`SequenceClassifier` whose forward pass runs `onnx/model.int8.onnx` in ONNX Runtime.

    Tokenizer, labels, name and version, truncation and `token_counts` are the parent's, so
    responses have the same shape; scores differ from PyTorch's by the int8 rounding. The
    export quantises activations per call over the whole padded batch, so a text's scores
    move slightly with the texts batched beside it (`MTC_MAX_BATCH_SIZE=1` avoids that).
    """

    runtime = "onnx-int8"
    _session: Any = None
    _input_names: Sequence[str] = ()

    def _load(self, model_dir: Path) -> ModelMetadata:
        onnx_file = model_dir / ONNX_FILE
        if not onnx_file.is_file():
            raise ModelLoadError(
                f"{model_dir}: no {ONNX_FILE.as_posix()} for MTC_RUNTIME=onnx; create it with "
                f"`{EXPORT_COMMAND} {model_dir}` (or serve with MTC_RUNTIME=torch)"
            )
        # The parent reads tokenizer, config, labels and manifest; the PyTorch network it
        # also loads is dropped at once, the session below replaces it.
        metadata = super()._load(model_dir)
        self._model = None
        self._session = self._open_session(onnx_file, model_dir)
        self._input_names = [entry.name for entry in self._session.get_inputs()]
        produced = set(self._tokenizer.model_input_names) & set(GRAPH_INPUTS)
        if not set(self._input_names) <= produced:
            raise ModelLoadError(
                f"{onnx_file}: takes inputs {self._input_names} but the tokenizer produces "
                f"{sorted(produced)}; re-export with `{EXPORT_COMMAND} {model_dir} --force`"
            )
        return metadata

    def _open_session(self, onnx_file: Path, model_dir: Path) -> Any:
        import onnxruntime  # type: ignore[import-untyped]

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self._torch_threads:
            options.intra_op_num_threads = self._torch_threads
        # Concurrency comes from the inference workers, one session run each; a second
        # pool inside the session would only compete with them for the same cores.
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(
                str(onnx_file), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's errors share no narrower base class
            raise ModelLoadError(f"{onnx_file}: ONNX Runtime cannot load it: {exc}") from exc
        recorded = session.get_modelmeta().custom_metadata_map.get(SOURCE_DIGEST_KEY)
        if recorded is None:
            logger.warning("%s does not say which weights it came from; not checked", onnx_file)
        elif recorded != source_digest(model_dir):
            # Serving it would answer with the old model under the new model's version.
            raise ModelLoadError(
                f"{onnx_file} was exported from other weights than {model_dir} holds now; "
                f"re-export with `{EXPORT_COMMAND} {model_dir} --force`"
            )
        output = next((out for out in session.get_outputs() if out.name == "logits"), None)
        width = output.shape[-1] if output is not None else None
        if output is None or (isinstance(width, int) and width != len(self._labels)):
            raise ModelLoadError(
                f"{onnx_file}: expected a `logits` output with {len(self._labels)} columns; "
                f"re-export with `{EXPORT_COMMAND} {model_dir} --force`"
            )
        return session

    def predict(self, batch: Sequence[TextInput]) -> list[TextPrediction]:
        """Scores for every label of every text, highest first."""
        encoded, counts = self.encode(batch)
        feeds = {name: encoded[name] for name in self._input_names}
        # InferenceSession.run is thread-safe; only the tokenizer needs a per-thread copy.
        (logits,) = self._session.run(["logits"], feeds)
        logits = np.asarray(logits, dtype=np.float32)
        return self.predictions_from_logits(logits, counts)
