"""Any Hugging Face sequence-classification model directory, served with PyTorch."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np

from services.artifacts.manifest import model_identity
from services.core.errors import ModelLoadError
from services.core.model import (
    ClassifierModel,
    ModelMetadata,
    Prediction,
    rank_scores,
    scores_from_document,
)
from services.text.models.traced_graph import TracedLogits, trace_logits

# Position-embedding tables cap what the model can read; tokenizers sometimes report a
# sentinel (1e30) instead of a real maximum.
_FALLBACK_MAX_TOKENS = 512

# transformers sets torch's process-wide default dtype while it builds a model with a
# `dtype`: two models loading at once in one process (two apps, or the audio service's
# transcript model beside another) could build each other's layers in the wrong dtype.
_LOADING = threading.Lock()

TorchDtype = Literal["float32", "bfloat16"]
TorchGraph = Literal["traced", "eager"]


@dataclass(frozen=True, slots=True)
class TextPrediction(Prediction):
    """The ranked scores of one text, with its token count before truncation: a cached
    prediction then tells whether its text was truncated without tokenizing it again."""

    tokens: int
    """Tokens of the whole text, special tokens included."""

    def to_document(self) -> dict[str, Any]:
        """Scores and token count."""
        return {**Prediction.to_document(self), "tokens": self.tokens}

    @classmethod
    def from_document(cls, document: Any) -> Self:
        """Inverse of `to_document`."""
        if not isinstance(document, dict):
            raise TypeError("a cached text prediction is a JSON object")
        return cls(scores_from_document(document["scores"]), int(document["tokens"]))


class TextItem:
    """One text on its way through the batching queue, carrying its tokens: the text is
    tokenized once, when its batching cost is counted, and the model reads that encoding
    instead of tokenizing it again. Identity, not equality: two items may hold one text."""

    __slots__ = ("encoding", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.encoding: Any = None
        """The untruncated Rust encoding, once counted (fast tokenizers only)."""


TextInput = str | TextItem
"""What the model accepts: plain texts (evaluation, scripts) or queued `TextItem`s."""


def text_of(item: TextInput) -> str:
    """The text of an item."""
    return item.text if isinstance(item, TextItem) else item


class SequenceClassifier(ClassifierModel[TextInput, TextPrediction]):
    """A `save_pretrained` directory: `config.json` with `id2label`, weights, tokenizer.

    Texts longer than the model's maximum are truncated (see `token_counts`). Softmax
    scores for single-label models, independent sigmoids for multi-label ones. With
    `dtype="bfloat16"` the weights are converted once at load: on CPUs with AMX or
    AVX-512 BF16 a batch costs about half the float32 time, and scores move by about 0.01.
    With `graph="traced"` the forward pass runs as one TorchScript graph when it reproduces
    the model (`services.text.models.traced_graph`), else eagerly.
    """

    runtime = "torch"
    output_type = TextPrediction
    converts_by_tracing = False
    """Whether a subclass traces the loaded network to convert it (it then needs the plain
    attention, like `graph="traced"`)."""

    def __init__(
        self,
        *,
        max_tokens: int | None = None,
        torch_threads: int | None = None,
        limits: dict[str, Any] | None = None,
        dtype: TorchDtype = "float32",
        graph: TorchGraph = "eager",
    ) -> None:
        super().__init__()
        self.dtype = dtype
        self.graph = graph
        self._traced: TracedLogits | None = None
        """The traced forward pass, when in use."""
        if dtype == "bfloat16":
            self.runtime = "torch-bf16"
        self._max_tokens_cap = max_tokens
        self._torch_threads = torch_threads
        self._limits = dict(limits or {})
        self._tokenizer: Any = None
        self._counting_tokenizer: Any = None
        self._model: Any = None
        self._labels: list[str] = []
        self._multi_label = False
        self._per_thread = threading.local()
        self.max_tokens = _FALLBACK_MAX_TOKENS

    async def load(self, model_dir: Path) -> ModelMetadata:
        """Load tokenizer and weights from `model_dir` (in a thread: it is slow)."""
        return await asyncio.to_thread(self._load, model_dir)

    def _load(self, model_dir: Path) -> ModelMetadata:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if self._torch_threads:
            torch.set_num_threads(self._torch_threads)
        if not (model_dir / "config.json").is_file():
            raise ModelLoadError(f"{model_dir}: no config.json; not a Hugging Face model directory")
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            # Tracing needs the plain attention: the SDPA path takes Python branches on
            # the mask's values, which a trace would freeze.
            traced = self.graph == "traced" or self.converts_by_tracing
            attention = {"attn_implementation": "eager"} if traced else {}
            with _LOADING:
                model = AutoModelForSequenceClassification.from_pretrained(
                    model_dir, local_files_only=True, dtype=getattr(torch, self.dtype), **attention
                )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{model_dir}: cannot load model: {exc}") from exc
        model.eval()
        config = model.config
        labels = [str(config.id2label[index]) for index in range(config.num_labels)]
        limit = min(
            int(getattr(config, "max_position_embeddings", _FALLBACK_MAX_TOKENS)),
            int(min(tokenizer.model_max_length, 1_000_000)),
        )
        if self._max_tokens_cap is not None:
            limit = min(limit, self._max_tokens_cap)

        name, version = model_identity(model_dir, labels)

        self._tokenizer = tokenizer
        self._counting_tokenizer = _counting_backend(tokenizer)
        self._model = model
        if self.graph == "traced":
            self._traced = trace_logits(model, tokenizer, self.dtype)
        self._labels = labels
        self._multi_label = config.problem_type == "multi_label_classification"
        self.max_tokens = limit
        return ModelMetadata(
            name=name,
            version=version,
            labels=labels,
            limits={**self._limits, "max_tokens": limit},
        )

    def _thread_tokenizer(self) -> Any:
        # Fast tokenizers keep padding/truncation state and refuse concurrent use
        # ("Already borrowed"), so each worker thread gets its own copy.
        tokenizer = getattr(self._per_thread, "tokenizer", None)
        if tokenizer is None:
            tokenizer = copy.deepcopy(self._tokenizer)
            self._per_thread.tokenizer = tokenizer
        return tokenizer

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, before truncation."""
        if self._counting_tokenizer is not None:
            # The Rust tokenizer directly: the Python wrapper costs several times the
            # tokenization itself for short texts, and counting runs on every request.
            return [len(encoding.ids) for encoding in self._untruncated_encodings(texts)]
        encoded = self._thread_tokenizer()(
            list(texts), add_special_tokens=True, truncation=False, verbose=False
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def cache_key(self, item: TextInput) -> bytes:
        """The exact text: any change to it may change the tokens."""
        return text_of(item).encode("utf-8", errors="surrogatepass")

    def cost(self, item: TextInput) -> int:
        """Token count, capped at what the model reads."""
        return self.costs([item])[0]

    def costs(self, items: Sequence[TextInput]) -> list[int]:
        """`cost` of each item, tokenized together; a `TextItem` keeps its encoding for
        `predict`, so counting is its only tokenization."""
        if self._counting_tokenizer is None:
            counts = self.token_counts([text_of(item) for item in items])
            return [min(count, self.max_tokens) for count in counts]
        encodings = self._untruncated_encodings(items)
        for item, encoding in zip(items, encodings, strict=True):
            if isinstance(item, TextItem):
                item.encoding = encoding
        return [min(len(encoding.ids), self.max_tokens) for encoding in encodings]

    def _untruncated_encodings(self, items: Sequence[TextInput]) -> list[Any]:
        """Each item's Rust encoding: the one it carries, else one pass over the others."""
        known = [item.encoding if isinstance(item, TextItem) else None for item in items]
        unknown = [index for index, encoding in enumerate(known) if encoding is None]
        if unknown:
            fresh = self._counting_tokenizer.encode_batch(
                [text_of(items[index]) for index in unknown], add_special_tokens=True
            )
            for index, encoding in zip(unknown, fresh, strict=True):
                known[index] = encoding
        return known

    def _predictions(self, probabilities: Any, counts: Sequence[int]) -> list[TextPrediction]:
        """Probabilities (texts, labels) ranked per text, with the texts' token counts."""
        ranked = rank_scores(self._labels, probabilities.tolist())
        return [TextPrediction(scores, count) for scores, count in zip(ranked, counts, strict=True)]

    def predictions_from_logits(self, logits: Any, counts: Sequence[int]) -> list[TextPrediction]:
        """Float32 logits (texts, labels) from a runtime outside torch as predictions: softmax,
        or independent sigmoids for a multi-label model."""
        if self._multi_label:
            # tanh form of the sigmoid: no overflow for large negative logits.
            probabilities = 0.5 * (1.0 + np.tanh(0.5 * logits))
        else:
            exponentials = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probabilities = exponentials / exponentials.sum(axis=-1, keepdims=True)
        return self._predictions(probabilities, counts)

    def encode(self, batch: Sequence[TextInput]) -> tuple[dict[str, Any], list[int]]:
        """The model inputs of a batch as int64 NumPy arrays, padded to its longest text and
        truncated at the limit, and each text's token count before truncation.

        With a fast tokenizer the Rust encodings are padded here as the tokenizer would pad
        them (the Python wrapper costs more than the tokenization itself); a `TextItem`
        brings the encoding made when its cost was counted, so it is not tokenized again.
        Only a text longer than the model reads is tokenized a second time, with
        truncation, because the tokenizer's truncation also places the closing special
        tokens.
        """
        if self._counting_tokenizer is None:
            texts = [text_of(item) for item in batch]
            counts = self.token_counts(texts)
            encoded = self._thread_tokenizer()(
                texts,
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="np",
            )
            return {name: np.asarray(encoded[name], dtype=np.int64) for name in encoded}, counts
        encodings = self._untruncated_encodings(batch)
        counts = [len(encoding.ids) for encoding in encodings]
        too_long = [index for index, count in enumerate(counts) if count > self.max_tokens]
        if too_long:
            truncated = self._thread_tokenizer()(
                [text_of(batch[index]) for index in too_long],
                truncation=True,
                max_length=self.max_tokens,
            ).encodings
            for index, encoding in zip(too_long, truncated, strict=True):
                encodings[index] = encoding
        return self._padded(encodings), counts

    def _padded(self, encodings: Sequence[Any]) -> dict[str, Any]:
        """Untruncated Rust encodings as the padded arrays the tokenizer would return."""
        tokenizer = self._tokenizer
        longest = max(len(encoding.ids) for encoding in encodings)
        shape = (len(encodings), longest)
        ids = np.full(shape, tokenizer.pad_token_id or 0, dtype=np.int64)
        mask = np.zeros(shape, dtype=np.int64)
        types = np.full(shape, tokenizer.pad_token_type_id, dtype=np.int64)
        left = tokenizer.padding_side == "left"
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            start = longest - length if left else 0
            ids[row, start : start + length] = encoding.ids
            mask[row, start : start + length] = encoding.attention_mask
            types[row, start : start + length] = encoding.type_ids
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: arrays[name] for name in tokenizer.model_input_names if name in arrays}

    def predict(self, batch: Sequence[TextInput]) -> list[TextPrediction]:
        """Scores for every label of every text, highest first, and its token count."""
        import torch

        arrays, counts = self.encode(batch)
        encoded = {name: torch.from_numpy(array) for name, array in arrays.items()}
        with torch.inference_mode():
            if self._traced is not None:
                logits = self._traced(encoded).float()
            else:
                logits = self._model(**encoded).logits.float()
        probabilities = torch.sigmoid(logits) if self._multi_label else logits.softmax(dim=-1)
        return self._predictions(probabilities, counts)


def _counting_backend(tokenizer: Any) -> Any:
    """A copy of a fast tokenizer's Rust backend that never truncates or pads, or None for
    a slow tokenizer. Nothing changes its settings after this, so threads may share it."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    backend.no_truncation()
    backend.no_padding()
    return backend
