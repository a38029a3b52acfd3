"""Find training texts that nearly repeat evaluation texts, so that an evaluation score
measures generalisation rather than memory of a reworded copy."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

MIN_CHARACTER_RATIO = 0.9
"""difflib ratio (2 * matching characters / total characters) at or above which two
normalised texts count as near-duplicates."""
MIN_TOKEN_JACCARD = 0.9
"""Share of distinct words two texts have in common at or above which they count as
near-duplicates (catches reordered copies the character ratio misses)."""

_LINK_OR_HANDLE = re.compile(r"https?://\S+|@\w+")
_NOT_ALPHANUMERIC = re.compile(r"[^0-9a-z]+")


@dataclass(frozen=True)
class NearDuplicate:
    """A training text and an evaluation text that are nearly the same."""

    training_index: int
    evaluation_index: int
    character_ratio: float
    token_jaccard: float


def comparable_text(text: str) -> str:
    """Lower case, links and @handles removed, punctuation and spacing collapsed."""
    without_links = _LINK_OR_HANDLE.sub(" ", text.casefold())
    return " ".join(_NOT_ALPHANUMERIC.sub(" ", without_links).split())


def find_near_duplicates(
    training: Sequence[str],
    evaluation: Sequence[str],
    *,
    min_character_ratio: float = MIN_CHARACTER_RATIO,
    min_token_jaccard: float = MIN_TOKEN_JACCARD,
) -> list[NearDuplicate]:
    """Every (training, evaluation) pair whose comparable texts reach either threshold."""
    train_texts = [comparable_text(text) for text in training]
    train_tokens = [frozenset(text.split()) for text in train_texts]
    by_length = sorted(range(len(train_texts)), key=lambda index: len(train_texts[index]))
    lengths = [len(train_texts[index]) for index in by_length]
    by_token_count = sorted(range(len(train_tokens)), key=lambda index: len(train_tokens[index]))
    token_counts = [len(train_tokens[index]) for index in by_token_count]

    found: dict[tuple[int, int], NearDuplicate] = {}
    for evaluation_index, raw in enumerate(evaluation):
        text = comparable_text(raw)
        tokens = frozenset(text.split())
        if not text:
            continue
        # ratio >= r needs 2 * min(len) / (sum of lengths) >= r: a window of lengths.
        low = len(text) * min_character_ratio / (2 - min_character_ratio)
        high = len(text) * (2 - min_character_ratio) / min_character_ratio
        matcher = SequenceMatcher(None, autojunk=False)
        matcher.set_seq2(text)
        for position in range(bisect.bisect_left(lengths, low), bisect.bisect_right(lengths, high)):
            training_index = by_length[position]
            matcher.set_seq1(train_texts[training_index])
            if matcher.quick_ratio() < min_character_ratio:
                continue
            ratio = matcher.ratio()
            if ratio >= min_character_ratio:
                jaccard = _jaccard(train_tokens[training_index], tokens)
                found[(training_index, evaluation_index)] = NearDuplicate(
                    training_index, evaluation_index, ratio, jaccard
                )
        # Jaccard >= j needs the smaller word set to be at least j times the larger.
        low_count = len(tokens) * min_token_jaccard
        high_count = len(tokens) / min_token_jaccard
        start = bisect.bisect_left(token_counts, low_count)
        for position in range(start, bisect.bisect_right(token_counts, high_count)):
            training_index = by_token_count[position]
            if (training_index, evaluation_index) in found:
                continue
            jaccard = _jaccard(train_tokens[training_index], tokens)
            if jaccard >= min_token_jaccard:
                ratio = SequenceMatcher(
                    None, train_texts[training_index], text, autojunk=False
                ).ratio()
                found[(training_index, evaluation_index)] = NearDuplicate(
                    training_index, evaluation_index, ratio, jaccard
                )
    return sorted(found.values(), key=lambda pair: (pair.evaluation_index, pair.training_index))


def _jaccard(left: frozenset[str], right: frozenset[str]) -> float:
    union = len(left | right)
    return len(left & right) / union if union else 1.0
