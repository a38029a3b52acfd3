"""Offline starter text models (sentiment, disaster), built from registry packages only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.text.training import LabelledText, read_labelled_csv


def load_written_set(
    path: Path, labels: Sequence[str], corpus: str
) -> tuple[list[LabelledText], dict[str, Any]]:
    """The rows of a set written for this project (in `data/`, CC0), and a description."""
    examples = read_labelled_csv(path, labels)
    description = {
        "corpus": corpus,
        "source_file": f"services/text/starter/data/{path.name}",
        "licence": "CC0-1.0",
        "rows_read": len(examples),
    }
    return examples, description
