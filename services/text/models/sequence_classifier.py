"""Any Hugging Face sequence-classification model directory, served with PyTorch."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from services.core.errors import ModelLoadError
from services.core.manifest import model_identity
from services.core.model import (
    ClassifierModel,
    LabelScore,
    ModelMetadata,
    decode_scores,
    encode_scores,
    rank_scores,
)

# Position-embedding tables cap what the model can read; tokenizers sometimes report a
# sentinel (1e30) instead of a real maximum.
_FALLBACK_MAX_TOKENS = 512


class TextPrediction(list[LabelScore]):
    """The ranked scores of one text, with its token count before truncation: a cached
    prediction then tells whether its text was truncated without tokenizing it again."""

    def __init__(self, scores: Iterable[LabelScore], tokens: int | None) -> None:
        super().__init__(scores)
        self.tokens = tokens
        """Tokens of the whole text, special tokens included; None when unknown (a cache
        entry written before token counts were kept)."""


class SequenceClassifier(ClassifierModel[str]):
    """A `save_pretrained` directory: `config.json` with `id2label`, weights, tokenizer.

    Texts longer than the model's maximum are truncated (see `token_counts`). Softmax
    scores for single-label models, independent sigmoids for multi-label ones.
    """

    runtime = "torch"

    def __init__(
        self,
        *,
        max_tokens: int | None = None,
        torch_threads: int | None = None,
        limits: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
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
            model = AutoModelForSequenceClassification.from_pretrained(
                model_dir, local_files_only=True
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
            encodings = self._counting_tokenizer.encode_batch(list(texts), add_special_tokens=True)
            return [len(encoding.ids) for encoding in encodings]
        encoded = self._thread_tokenizer()(
            list(texts), add_special_tokens=True, truncation=False, verbose=False
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def cache_key(self, item: str) -> bytes:
        """The exact text: any change to it may change the tokens."""
        return item.encode("utf-8", errors="surrogatepass")

    def cost(self, item: str) -> int:
        """Token count, capped at what the model reads."""
        return min(self.token_counts([item])[0], self.max_tokens)

    def costs(self, items: Sequence[str]) -> list[int]:
        """`cost` of each item, tokenized together."""
        return [min(count, self.max_tokens) for count in self.token_counts(items)]

    def with_token_counts(
        self, batch: Sequence[str], ranked: list[list[LabelScore]]
    ) -> list[list[LabelScore]]:
        """`ranked` (one list per text of `batch`) as `TextPrediction`s."""
        counts = self.token_counts(batch)
        return [TextPrediction(scores, count) for scores, count in zip(ranked, counts, strict=True)]

    def encode_prediction(self, prediction: Sequence[LabelScore]) -> bytes:
        """Cache entries keep the token count beside the scores."""
        tokens = getattr(prediction, "tokens", None)
        if tokens is None:
            return encode_scores(prediction)
        scores = [[s.label, s.score] for s in prediction]
        return json.dumps({"scores": scores, "tokens": tokens}, separators=(",", ":")).encode()

    def decode_prediction(self, raw: bytes) -> list[LabelScore]:
        """Inverse of `encode_prediction`; a bare score list has no token count."""
        document = json.loads(raw)
        if isinstance(document, dict):
            scores = [LabelScore(str(label), float(score)) for label, score in document["scores"]]
            return TextPrediction(scores, int(document["tokens"]))
        return TextPrediction(decode_scores(raw), None)  # written by an earlier release

    def encode(self, batch: Sequence[str], *, tensors: str) -> Any:
        """Token ids and masks of a batch, padded to its longest text, truncated at the limit;
        `tensors` is `pt` (PyTorch) or `np` (NumPy)."""
        return self._thread_tokenizer()(
            list(batch),
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors=tensors,
        )

    def predict(self, batch: Sequence[str]) -> list[list[LabelScore]]:
        """Scores for every label of every text, highest first."""
        import torch

        encoded = self.encode(batch, tensors="pt")
        with torch.inference_mode():
            logits = self._model(**encoded).logits.float()
        probabilities = torch.sigmoid(logits) if self._multi_label else logits.softmax(dim=-1)
        return self.with_token_counts(batch, rank_scores(self._labels, probabilities.tolist()))


def _counting_backend(tokenizer: Any) -> Any:
    """A copy of a fast tokenizer's Rust backend that never truncates or pads, or None for
    a slow tokenizer. Nothing changes its settings after this, so threads may share it."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    backend.no_truncation()
    backend.no_padding()
    return backend
