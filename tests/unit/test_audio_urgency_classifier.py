"""The audio branch's calm/urgent classifier: inference, storage and what it refuses."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from services.audio.features import AcousticFeatureConfig, feature_names
from services.audio.models.urgency import CONFIG_FILE, URGENCY_LABELS, UrgencyClassifier
from services.audio.training import AudioTrainConfig, train_urgency_classifier
from tests.support.audio_clips import tiny_urgency_classifier

WIDTH = len(feature_names(AcousticFeatureConfig()))


def test_probabilities_are_one_row_per_clip_summing_to_one() -> None:
    features = np.random.default_rng(0).normal(size=(5, WIDTH)).astype(np.float32)
    probabilities = tiny_urgency_classifier().probabilities(features)
    assert probabilities.shape == (5, len(URGENCY_LABELS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_saved_and_loaded_it_answers_the_same(tmp_path: Path) -> None:
    classifier = tiny_urgency_classifier(seed=3)
    classifier.save(tmp_path, {"labels": ["regular", "help"]})
    loaded, config = UrgencyClassifier.load(tmp_path)
    assert config["labels"] == ["regular", "help"]
    features = np.random.default_rng(1).normal(size=(3, WIDTH)).astype(np.float32)
    np.testing.assert_array_equal(
        loaded.probabilities(features), classifier.probabilities(features)
    )


def test_a_directory_measuring_other_features_is_refused(tmp_path: Path) -> None:
    tiny_urgency_classifier().save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["feature_names"] = config["feature_names"][:-1]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="feature names"):
        UrgencyClassifier.load(tmp_path)


def test_layers_that_do_not_chain_are_refused() -> None:
    classifier = tiny_urgency_classifier()
    (first, second) = classifier.layers
    with pytest.raises(ValueError, match="do not chain"):
        replace(classifier, layers=(second, first))
    with pytest.raises(ValueError, match="one per feature"):
        replace(classifier, feature_mean=classifier.feature_mean[:-1])


def test_training_learns_a_separable_cue_and_is_reproducible() -> None:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(200, WIDTH)).astype(np.float32)
    targets = (features[:, 5] > 0).astype(int).tolist()
    config = AudioTrainConfig(epochs=20, hidden_units=8)
    first = train_urgency_classifier(features, targets, config)
    second = train_urgency_classifier(features, targets, config)
    said = first.probabilities(features).argmax(axis=1)
    assert np.mean(said == np.array(targets)) > 0.9
    for (w1, b1), (w2, b2) in zip(first.layers, second.layers, strict=True):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(b1, b2)


def test_logistic_regression_when_there_are_no_hidden_units() -> None:
    rng = np.random.default_rng(4)
    features = rng.normal(size=(100, WIDTH)).astype(np.float32)
    targets = (features[:, 0] > 0).astype(int).tolist()
    classifier = train_urgency_classifier(features, targets, AudioTrainConfig(hidden_units=0))
    assert len(classifier.layers) == 1
