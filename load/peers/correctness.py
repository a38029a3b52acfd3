"""Does a served classifier answer like the model it serves? Fixed sentences with known
labels, and label agreement with plain transformers in float32 on the same model directory.

A fast server that answers wrongly (a dtype that flips labels, a runtime that pads into
the attention, an adapter that reads the wrong output) must not win the benchmark, so
`python -m load.bench` checks every system it measures, mtc included, the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from load.peers.systems import Wire

AGREEMENT_REVIEWS = 200
MIN_AGREEMENT = 0.98
"""Below this share of labels equal to float32 transformers', a system is flagged."""

FIXED_SENTENCES: tuple[tuple[str, str], ...] = (
    (
        "A wonderful, moving film with brilliant performances; I loved every minute of it.",
        "POSITIVE",
    ),
    ("One of the best movies of the decade, funny and heartfelt.", "POSITIVE"),
    ("A dull, tedious mess: the worst film I have seen this year.", "NEGATIVE"),
    ("The plot is a predictable, lifeless waste of a talented cast.", "NEGATIVE"),
)
"""Sentences the sentiment starter labels with a probability above 0.99 in float32."""


@dataclass(frozen=True)
class Correctness:
    """What one system answered to the fixed sentences and the agreement reviews."""

    fixed_right: int
    fixed_total: int
    agreeing: int
    reviews: int
    failed_requests: int

    @property
    def agreement(self) -> float:
        """Share of reviews labelled as plain transformers float32 labels them."""
        return self.agreeing / self.reviews if self.reviews else 0.0

    @property
    def ok(self) -> bool:
        """Every fixed sentence right and agreement at or above `MIN_AGREEMENT`."""
        return self.fixed_right == self.fixed_total and self.agreement >= MIN_AGREEMENT


def agreeing_labels(labels: Sequence[str | None], reference: Sequence[str]) -> int:
    """How many labels equal the reference's at the same position (None: no answer)."""
    if len(labels) != len(reference):
        raise ValueError(f"{len(labels)} labels for {len(reference)} reference labels")
    return sum(label == expected for label, expected in zip(labels, reference, strict=True))


def reference_labels(model_dir: Path, texts: Sequence[str]) -> list[str]:
    """The labels plain transformers gives `texts` in float32, one text at a time (no
    padding), in mtc's virtualenv."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForSequenceClassification.from_pretrained(
        model_dir, dtype=torch.float32
    ).eval()
    labels: list[str] = []
    with torch.inference_mode():
        for text in texts:
            logits = model(**tokenizer([text], truncation=True, return_tensors="pt")).logits
            labels.append(str(model.config.id2label[int(logits[0].argmax())]))
    return labels


def served_label(client: httpx.Client, base_url: str, wire: Wire, text: str) -> str | None:
    """The top label a server gives one text, or None when it does not answer 200."""
    try:
        response = client.post(base_url + wire.path, json=wire.request(text))
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return wire.top_label(response.json())


def check_server(
    base_url: str,
    wire: Wire,
    reviews: Sequence[str],
    reference: Sequence[str],
    *,
    transport: httpx.BaseTransport | None = None,
) -> Correctness:
    """Ask the server for each fixed sentence and each review, one request at a time."""
    with httpx.Client(timeout=60.0, transport=transport) as client:
        fixed = [served_label(client, base_url, wire, text) for text, _ in FIXED_SENTENCES]
        labels = [served_label(client, base_url, wire, text) for text in reviews]
    return Correctness(
        fixed_right=agreeing_labels(fixed, [label for _, label in FIXED_SENTENCES]),
        fixed_total=len(FIXED_SENTENCES),
        agreeing=agreeing_labels(labels, reference),
        reviews=len(reviews),
        failed_requests=sum(label is None for label in [*fixed, *labels]),
    )
