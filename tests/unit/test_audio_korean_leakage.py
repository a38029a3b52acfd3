"""The independently written Korean evaluation set stays apart from the Korean training
transcripts: no training row (held-out part included) nearly repeats one of its rows.

A failure names the training row and the evaluation file's line, never the evaluation text,
so whoever fixes it rewrites or drops the training row without reading the evaluation set.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

import pytest

from services.audio.starter.korean_transcripts import (
    INDEPENDENT_FILE,
    load_independent_set,
    load_transcripts,
)

MIN_CHARACTER_RATIO = 0.9
_NOT_A_LETTER_OR_DIGIT = re.compile(r"[\W_]+")


def comparable_text(text: str) -> str:
    """Case folded, with everything but letters (Hangul included) and digits removed:
    Korean is written with and without spaces between the same words."""
    return _NOT_A_LETTER_OR_DIGIT.sub("", text.casefold())


def near_duplicates(training: list[str], evaluation: list[str]) -> list[tuple[int, int, float]]:
    """(training index, evaluation index, difflib ratio) of every pair at or above
    MIN_CHARACTER_RATIO, compared as `comparable_text`."""
    train_texts = [comparable_text(text) for text in training]
    pairs = []
    for evaluation_index, raw in enumerate(evaluation):
        matcher = SequenceMatcher(None, autojunk=False)
        matcher.set_seq2(comparable_text(raw))
        for training_index, text in enumerate(train_texts):
            matcher.set_seq1(text)
            if matcher.real_quick_ratio() < MIN_CHARACTER_RATIO:
                continue
            if matcher.quick_ratio() < MIN_CHARACTER_RATIO:
                continue
            ratio = matcher.ratio()
            if ratio >= MIN_CHARACTER_RATIO:
                pairs.append((training_index, evaluation_index, ratio))
    return pairs


def test_comparison_ignores_spacing_and_punctuation_but_keeps_hangul() -> None:
    assert comparable_text("살려 주세요!  여기 3층이에요.") == "살려주세요여기3층이에요"


def test_a_copy_with_one_changed_word_is_found() -> None:
    training = ["지하철에서 내리고 보니까 가방 지퍼가 열려 있고 지갑이 없어요"]
    evaluation = ["지하철에서 내리고 보니 가방 지퍼가 열려 있고 지갑이 없어요!"]

    assert [(t, e) for t, e, _ in near_duplicates(training, evaluation)] == [(0, 0)]


def test_sentences_on_the_same_topic_are_not_flagged() -> None:
    training = ["자전거를 도둑맞았어요, 아파트 앞에 묶어뒀는데요"]
    evaluation = ["학교 앞에 세워둔 제 자전거가 없어졌어요"]

    assert near_duplicates(training, evaluation) == []


def test_no_training_row_nearly_repeats_an_independent_row() -> None:
    if not INDEPENDENT_FILE.is_file():
        pytest.fail(f"{INDEPENDENT_FILE} is missing: the independent Korean set must be committed")
    training = [example.text for example in load_transcripts()]
    evaluation = [example.text for example in load_independent_set()]

    leaks = [
        f"training row {training[t]!r} nearly repeats {INDEPENDENT_FILE.name} line {e + 2} "
        f"(character ratio {ratio:.2f})"
        for t, e, ratio in near_duplicates(training, evaluation)
    ]
    assert not leaks, "Korean training rows leak into the independent set:\n" + "\n".join(leaks)
