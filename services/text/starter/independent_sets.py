"""Evaluation sets written apart from the training data, by another author from a brief that
asks for the hard cases, and for sentiment a second set of plain, sincere reviews (see
data/independent/PROVENANCE.md). No model trains on them, and a test keeps training rows from
near-duplicating them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from services.text.training import DataError, LabelledText, read_labelled_csv

INDEPENDENT_DIR = Path(__file__).with_name("data") / "independent"
INDEPENDENT_FILES: dict[str, str] = {
    "sentiment": "sentiment_reviews.csv",
    "disaster": "disaster_tweets.csv",
    "emergency-transcript": "emergency_transcripts.csv",
}

# Sets beside a task's main one, by task: the name `mtc eval` gives it -> its file. Plain
# reviews: a model taught the hard cases must still get ordinary, sincere ones right.
FURTHER_INDEPENDENT_FILES: dict[str, dict[str, str]] = {
    "sentiment": {"independent-plain": "sentiment_plain_reviews.csv"},
}


def independent_set_path(task: str) -> Path:
    """Where the independent evaluation set of `task` lives."""
    if task not in INDEPENDENT_FILES:
        raise DataError(f"no independent evaluation set is defined for {task!r}")
    return INDEPENDENT_DIR / INDEPENDENT_FILES[task]


def load_independent_set(task: str, labels: Sequence[str]) -> list[LabelledText]:
    """The set's rows, labels matched to the model's case-insensitively (the author wrote them
    apart from the code, so `positive` and `POSITIVE` both count)."""
    return read_independent_csv(independent_set_path(task), list(labels))


def further_independent_sets(task: str, labels: Sequence[str]) -> dict[str, list[LabelledText]]:
    """The task's further independent sets, by name (none for most tasks)."""
    files = FURTHER_INDEPENDENT_FILES.get(task, {})
    return {
        name: read_independent_csv(INDEPENDENT_DIR / file, list(labels))
        for name, file in files.items()
    }


def read_independent_csv(path: Path, labels: Sequence[str]) -> list[LabelledText]:
    """The rows of an independently written set, each label matched to one of `labels`
    case-insensitively; an unknown label is refused, naming `labels` as given."""
    by_folded = {label.casefold(): label for label in labels}
    examples: list[LabelledText] = []
    for line, example in enumerate(read_labelled_csv(path), start=2):
        label = by_folded.get(example.label.casefold())
        if label is None:
            raise DataError(f"{path}:{line}: label {example.label!r} is not one of {labels}")
        examples.append(LabelledText(example.text, label))
    return examples
