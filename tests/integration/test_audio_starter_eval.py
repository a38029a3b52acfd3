"""`mtc eval --starter audio` end to end on a small subset: sentences spoken by espeak-ng
into a clip cache, run through the served emergency-call model, every set in the JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.audio.starter.clip_evaluation import CLIP_CACHE
from services.audio.starter.recipe import build_audio_starter
from services.lifecycle.cli import main
from services.text.starter import independent_sets
from services.text.starter.recipes import EMERGENCY_TRANSCRIPT

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PER_LABEL = 2
LABELS = ["regular", "help", "robbery", "sexual", "theft", "violence"]
STAND_IN = """text,label
could you tell me when the library opens on sunday,Regular
I am calling to cancel my dentist appointment for friday,regular
please come quickly my father has collapsed and is not breathing,HELP
there is smoke pouring out of the flat next door,help
two men with a gun just emptied the till at the petrol station,robbery
someone pulled a knife and demanded my phone and wallet,Robbery
a stranger on the bus keeps touching me and will not stop,sexual
my friend says she was assaulted by a man at the party,sexual
my bike was taken from outside the shop while I was inside,theft
somebody stole the parcels from my doorstep this morning,THEFT
my neighbours are fighting and one of them is bleeding,violence
a group of lads is kicking a man on the ground outside the pub,violence
"""
"""A stand-in for the independent set (two sentences per label, labels in mixed case as an
outside author might write them): this test must not read the real one."""


@pytest.fixture(scope="module")
def starter_dir() -> Path:
    # `make models` builds it; rebuilt here only when missing or out of date.
    return build_audio_starter(REPO / ".mtc" / "models" / "audio").out


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clip-cache")


def run_eval(starter_dir: Path, cache_dir: Path, out: Path) -> dict[str, Any]:
    argv = ["eval", "--starter", "audio", "--model", str(starter_dir), "--limit", str(PER_LABEL)]
    assert main([*argv, "--cache-dir", str(cache_dir), "--json-out", str(out)]) == 0
    document: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return document


def check_spoken_set(figures: dict[str, Any], sentences: int) -> None:
    assert figures["sentences"] == sentences
    assert figures["clips"] == 2 * sentences  # one calm and one urgent clip each
    audio = figures["calm_vs_urgent"]
    assert audio["labels"] == ["calm", "urgent"]
    assert [sum(row) for row in audio["confusion_matrix"]] == [sentences, sentences]
    assert audio["accuracy"] > 0.5  # above chance: both deliveries are equally common
    for name in ("fused", "transcript_only"):
        labelled = figures[name]
        assert labelled["labels"] == LABELS
        assert labelled["weighted"]
        # Every sentence counts once, shared between its two clips.
        assert sum(map(sum, labelled["confusion_matrix"])) == pytest.approx(sentences, abs=0.05)
        assert 1 / 6 < labelled["accuracy"] <= 1
    kind = figures["no_transcript"]
    assert kind["labels"] == ["regular", "emergency"]
    assert [sum(row) for row in kind["confusion_matrix"]] == pytest.approx(
        [PER_LABEL, sentences - PER_LABEL], abs=0.05
    )
    assert 0 <= kind["accuracy"] <= 1
    assert 0 <= kind["balanced_accuracy"] <= 1
    assert kind["majority_accuracy"] == pytest.approx(1 - PER_LABEL / sentences)


def test_every_set_is_evaluated_on_the_served_model(
    starter_dir: Path,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "emergency_transcripts.csv").write_text(STAND_IN, encoding="utf-8")
    monkeypatch.setattr(independent_sets, "INDEPENDENT_DIR", tmp_path)

    document = run_eval(starter_dir, cache_dir, tmp_path / "audio.json")

    printed = capsys.readouterr().out
    assert "held-out clips against the build's figures (manifest.json)" in printed
    assert "call mix" in printed
    assert document["starter"] == "audio"
    assert document["sentences_per_label"] == PER_LABEL
    assert document["skipped"] == {}
    sets = document["sets"]
    assert list(sets) == [
        "text held-out",
        "text independent",
        "spoken held-out",
        "spoken independent",
    ]
    heldout_texts = EMERGENCY_TRANSCRIPT.evaluation_sets(independent=False)["held-out transcripts"]
    assert sets["text held-out"]["examples"] == len(heldout_texts)
    assert sets["text independent"]["examples"] == 12
    assert sets["text independent"]["accuracy"] > 1 / 6
    sentences = PER_LABEL * len(LABELS)
    check_spoken_set(sets["spoken held-out"], sentences)
    check_spoken_set(sets["spoken independent"], sentences)
    # The build's figures are cross-fitted on the held-out clips; the fusion never saw the
    # independent ones.
    assert "cross_fitted" in sets["spoken held-out"]
    assert "cross_fitted" not in sets["spoken independent"]
    comparison = document["build_comparison"]
    assert comparison["heldout_audio_accuracy"]["served"] == pytest.approx(
        sets["spoken held-out"]["calm_vs_urgent"]["accuracy"]
    )
    assert 0.8 <= comparison["heldout_audio_accuracy"]["build"] <= 1
    assert "whisper" not in document


def test_a_missing_independent_set_is_skipped_and_clips_come_from_the_cache(
    starter_dir: Path,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(independent_sets, "INDEPENDENT_DIR", tmp_path / "not-written-yet")
    first = run_eval(starter_dir, cache_dir, tmp_path / "first.json")
    clips = sorted((cache_dir / CLIP_CACHE).glob("held-out-*/*/*.wav"))
    written = {path: path.stat().st_mtime_ns for path in clips}

    second = run_eval(starter_dir, cache_dir, tmp_path / "second.json")

    printed = capsys.readouterr().out
    assert "no independent English set at" in printed
    assert list(first["sets"]) == ["text held-out", "spoken held-out"]
    assert "independent" in first["skipped"]
    assert len(clips) == 2 * PER_LABEL * len(LABELS)
    assert {path: path.stat().st_mtime_ns for path in clips} == written  # reused, not redone
    assert second["sets"] == first["sets"]
