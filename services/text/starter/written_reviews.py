"""Reviews written for this project to teach what critic snippets rarely show (see
data/DATASHEET.md): contrast, negation, irony, faint praise, and products, places and apps;
and plain, sincere reviews, so that a model taught those hard cases still takes sincere praise
and plain complaints at their word."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.text.starter.rotten_tomatoes import LABELS
from services.text.training import LabelledText, read_labelled_csv

WRITTEN_REVIEWS_FILE = Path(__file__).with_name("data") / "written_reviews.csv"
PLAIN_REVIEWS_FILE = Path(__file__).with_name("data") / "plain_reviews.csv"


def load_written_reviews() -> tuple[list[LabelledText], dict[str, Any]]:
    """Every written review of the hard cases, and a description of the data."""
    return _load(WRITTEN_REVIEWS_FILE, "mtc written reviews: hand-written, English")


def load_plain_reviews() -> tuple[list[LabelledText], dict[str, Any]]:
    """Every written plain review, and a description of the data."""
    return _load(PLAIN_REVIEWS_FILE, "mtc plain reviews: hand-written, sincere, English")


def _load(path: Path, corpus: str) -> tuple[list[LabelledText], dict[str, Any]]:
    examples = read_labelled_csv(path, LABELS)
    description = {
        "corpus": f"{corpus}, see DATASHEET.md",
        "source_file": f"services/text/starter/data/{path.name}",
        "licence": "CC0-1.0",
        "rows_read": len(examples),
    }
    return examples, description
