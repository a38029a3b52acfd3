"""The near-duplicate finder that guards evaluation sets against leaked training rows."""

from __future__ import annotations

from tests.support.near_duplicates import comparable_text, find_near_duplicates


def test_comparison_ignores_case_punctuation_links_and_handles() -> None:
    assert comparable_text("RT @news_desk: Flood WARNING!!  http://t.co/abc") == "rt flood warning"


def test_a_reworded_copy_is_found() -> None:
    training = ["the soup was cold and the waiter was rude", "a fine day for a picnic"]
    evaluation = ["The soup was cold, and the waiter was rude!!"]

    pairs = find_near_duplicates(training, evaluation)

    assert [(p.training_index, p.evaluation_index) for p in pairs] == [(0, 0)]
    assert pairs[0].character_ratio == 1.0


def test_a_copy_with_a_changed_word_is_found() -> None:
    pairs = find_near_duplicates(
        ["drowning in emails after one day off"], ["drowning in emails after a day off"]
    )

    assert len(pairs) == 1
    assert pairs[0].character_ratio >= 0.9


def test_a_reordered_copy_is_found_by_its_words() -> None:
    pairs = find_near_duplicates(
        ["slow at first but it won me over in the end, a lovely film"],
        ["a lovely film in the end, it won me over but slow at first"],
    )

    assert len(pairs) == 1
    assert pairs[0].token_jaccard == 1.0


def test_texts_that_share_a_topic_but_not_their_words_are_not_flagged() -> None:
    training = ["this mixtape is fire, no skips", "wildfire forces thousands to evacuate"]
    evaluation = ["the new album is a bomb", "smoke over the ridge, we are leaving now"]

    assert find_near_duplicates(training, evaluation) == []
