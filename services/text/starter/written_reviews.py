"""Reviews written for this project to teach what critic snippets rarely show (see
data/DATASHEET.md): contrast, negation, irony, faint praise, and products, places and apps;
and plain, sincere reviews, so that a model taught those hard cases still takes sincere praise
and plain complaints at their word."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.text.starter import load_written_set
from services.text.starter.rotten_tomatoes import LABELS
from services.text.training import LabelledText

WRITTEN_REVIEWS_FILE = Path(__file__).with_name("data") / "written_reviews.csv"
PLAIN_REVIEWS_FILE = Path(__file__).with_name("data") / "plain_reviews.csv"


def load_written_reviews() -> tuple[list[LabelledText], dict[str, Any]]:
    """Every written review of the hard cases, and a description of the data."""
    corpus = "mtc written reviews: hand-written, English, see DATASHEET.md"
    return load_written_set(WRITTEN_REVIEWS_FILE, LABELS, corpus)


def load_plain_reviews() -> tuple[list[LabelledText], dict[str, Any]]:
    """Every written plain review, and a description of the data."""
    corpus = "mtc plain reviews: hand-written, sincere, English, see DATASHEET.md"
    return load_written_set(PLAIN_REVIEWS_FILE, LABELS, corpus)
