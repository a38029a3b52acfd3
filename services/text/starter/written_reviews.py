"""Reviews written for this project to teach what critic snippets rarely show (see
data/DATASHEET.md): contrast, negation, irony, faint praise, and products, places and apps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.text.starter.rotten_tomatoes import LABELS
from services.text.training import LabelledText, read_labelled_csv

WRITTEN_REVIEWS_FILE = Path(__file__).with_name("data") / "written_reviews.csv"


def load_written_reviews() -> tuple[list[LabelledText], dict[str, Any]]:
    """Every written review, and a description of the data."""
    examples = read_labelled_csv(WRITTEN_REVIEWS_FILE, LABELS)
    description = {
        "corpus": "mtc written reviews: hand-written, English, see DATASHEET.md",
        "source_file": "services/text/starter/data/written_reviews.csv",
        "licence": "CC0-1.0",
        "rows_read": len(examples),
    }
    return examples, description
