"""The evaluation sets no starter trains on stay apart from the training data: no training
row (of any source, held-out part included) nearly repeats one of their rows.

A failure names the training row and the evaluation file's line, never the evaluation text,
so whoever fixes it rewrites or drops the training row without reading the evaluation set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from services.text.starter import disaster_tweets
from services.text.starter.independent_sets import (
    FURTHER_INDEPENDENT_FILES,
    INDEPENDENT_DIR,
    INDEPENDENT_FILES,
    further_independent_sets,
    independent_set_path,
    load_independent_set,
)
from services.text.starter.recipes import (
    DISASTER,
    EMERGENCY_TRANSCRIPT,
    RECIPES,
    SENTIMENT,
    StarterRecipe,
)
from services.text.training import LabelledText
from tests.support.near_duplicates import find_near_duplicates

EvaluationSet = tuple[StarterRecipe, Path, Callable[[], list[LabelledText]]]
EVALUATION_SETS: dict[str, EvaluationSet] = {
    "sentiment-independent": (
        SENTIMENT,
        independent_set_path("sentiment"),
        lambda: load_independent_set("sentiment", SENTIMENT.labels),
    ),
    "disaster-independent": (
        DISASTER,
        independent_set_path("disaster"),
        lambda: load_independent_set("disaster", DISASTER.labels),
    ),
    "emergency-transcript-independent": (
        EMERGENCY_TRANSCRIPT,
        independent_set_path("emergency-transcript"),
        lambda: load_independent_set("emergency-transcript", EMERGENCY_TRANSCRIPT.labels),
    ),
    "sentiment-independent-plain": (
        SENTIMENT,
        INDEPENDENT_DIR / FURTHER_INDEPENDENT_FILES["sentiment"]["independent-plain"],
        lambda: further_independent_sets("sentiment", SENTIMENT.labels)["independent-plain"],
    ),
    "disaster-traps": (DISASTER, disaster_tweets.TRAPS_FILE, disaster_tweets.load_traps),
}


@pytest.mark.parametrize("set_name", sorted(EVALUATION_SETS))
def test_no_training_row_nearly_repeats_an_evaluation_row(set_name: str) -> None:
    recipe, path, load = EVALUATION_SETS[set_name]
    assert path.is_file(), f"{path} is missing: the {set_name} evaluation set must be committed"
    evaluation = [example.text for example in load()]
    training: list[tuple[str, str]] = [
        (source.name, example.text) for source in recipe.sources for example in source.load()[0]
    ]

    pairs = find_near_duplicates([text for _, text in training], evaluation)

    leaks = [
        f"{training[p.training_index][0]} row {training[p.training_index][1]!r} nearly repeats "
        f"{path.name} line {p.evaluation_index + 2} (character ratio "
        f"{p.character_ratio:.2f}, word overlap {p.token_jaccard:.2f})"
        for p in pairs
    ]
    assert not leaks, "training rows leak into an evaluation set:\n" + "\n".join(leaks)


def test_every_independent_set_is_guarded() -> None:
    declared = {task for task, recipe in RECIPES.items() if recipe.has_independent_set}
    assert declared == set(INDEPENDENT_FILES)
    assert {f"{task}-independent" for task in INDEPENDENT_FILES} <= set(EVALUATION_SETS)
    further = {
        f"{task}-{name}" for task, sets in FURTHER_INDEPENDENT_FILES.items() for name in sets
    }
    assert further <= set(EVALUATION_SETS)


def test_written_training_sets_are_sources_of_their_starters() -> None:
    assert [source.name for source in SENTIMENT.sources] == [
        "rotten-tomatoes",
        "written-reviews",
        "plain-reviews",
    ]
    assert [source.name for source in DISASTER.sources] == [
        "tweets",
        "figurative-and-casual-tweets",
    ]


def test_written_reviews_are_repeated_in_training_and_corpus_rows_are_not() -> None:
    corpus_source, written_source, _ = SENTIMENT.sources
    written = written_source.load()[0][:3]
    corpus = corpus_source.load()[0][:3]

    rows = SENTIMENT.training_rows([*written, *corpus])

    assert written_source.repeats > 1
    assert len(rows) == 3 * written_source.repeats + 3


def test_evaluation_sets_hold_out_each_source_without_reading_the_independent_set() -> None:
    sets = DISASTER.evaluation_sets(independent=False)

    assert list(sets) == [
        "held-out tweets",
        "held-out figurative-and-casual-tweets",
        "held-out all sources",
    ]
    assert len(sets["held-out all sources"]) == len(sets["held-out tweets"]) + len(
        sets["held-out figurative-and-casual-tweets"]
    )
