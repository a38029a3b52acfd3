"""`mtc eval --starter audio`'s pure parts: which clips are spoken and how, the clip cache,
and the figures computed from the served model's answers. Nothing here runs espeak-ng or
loads a model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from services.audio.fusion import FusionRule
from services.audio.starter import clip_evaluation, synthesis
from services.audio.starter.clip_evaluation import (
    AudioStarterReport,
    BranchScores,
    clip_directory,
    ensure_clips,
    figures,
    first_sentences,
    heldout_sentences,
    independent_sentences,
    labelled_clips,
    plan_heldout,
    score_spoken_set,
)
from services.audio.starter.synthesis import HELDOUT_POOL, SpokenClip
from services.audio.training import LabelledClip
from services.lifecycle.cli import main
from services.text.starter import independent_sets
from services.text.starter.recipes import EMERGENCY_TRANSCRIPT
from services.text.training import LabelledText, is_heldout, normalise

LABELS = ("regular", "help", "robbery", "sexual", "theft", "violence")
FUSION = FusionRule(
    labels=LABELS,
    ordinary_labels=("regular",),
    prior=(1 / 6,) * 6,
    calm_when_emergency=0.2,
    urgent_when_ordinary=0.25,
    audio_weight=1.0,
    text_weight=1.0,
    asr_audio_weight=1.0,
    asr_text_weight=1.0,
)


def test_figures_weight_the_clips_and_say_so() -> None:
    predicted, gold = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])

    plain = figures(predicted, gold, np.ones(4), ("a", "b"))
    weighted = figures(predicted, gold, np.array([0.2, 0.8, 0.9, 0.1]), ("a", "b"))

    assert plain.accuracy == pytest.approx(0.75)
    assert plain.confusion_matrix == [[2.0, 1.0], [0.0, 1.0]]
    assert not plain.weighted
    assert weighted.accuracy == pytest.approx(0.55)
    assert weighted.weighted
    assert weighted.to_json()["confusion_matrix"] == [[0.3, 0.9], [0.0, 0.8]]
    assert weighted.matrix_table().splitlines()[1].split() == ["a", "0.3", "0.9"]


def _one_hot(indices: Sequence[int], width: int) -> np.ndarray:
    return np.eye(width)[list(indices)] * 0.9 + 0.1 / width


def test_a_spoken_set_is_scored_per_question() -> None:
    # Two sentences, each spoken calm then urgent: an ordinary call and a robbery.
    clips = labelled_clips(
        [
            _spoken("I'd like a table for two", "regular", "calm"),
            _spoken("I'd like a table for two", "regular", "urgent"),
            _spoken("they took my wallet at knifepoint", "robbery", "calm"),
            _spoken("they took my wallet at knifepoint", "robbery", "urgent"),
        ],
        Path("/nowhere"),
    )
    scores = BranchScores(
        urgency=_one_hot([0, 1, 1, 1], 2),  # the calm robbery sounds urgent
        text=_one_hot([0, 0, 2, 2], 6),
        fused=_one_hot([0, 2, 2, 2], 6),  # the urgent ordinary call fused to robbery
        no_transcript=_one_hot([0, 1, 1, 1], 6),
    )

    report = score_spoken_set(clips, scores, FUSION, cross_fit=False)

    assert (report.clips, report.sentences) == (4, 2)
    assert report.calm_vs_urgent.accuracy == pytest.approx(0.75)
    assert report.calm_vs_urgent.confusion_matrix == [[1.0, 1.0], [0.0, 2.0]]
    # Call mix: the ordinary sentence is 0.9 calm + 0.1 urgent, the robbery 0.2 + 0.8.
    assert report.transcript_only.accuracy == pytest.approx(1.0)
    assert report.fused.accuracy == pytest.approx((0.9 + 1.0) / 2)
    assert sum(map(sum, report.fused.confusion_matrix)) == pytest.approx(2.0)
    assert report.no_transcript.labels == ("regular", "emergency")
    np.testing.assert_allclose(report.no_transcript.confusion_matrix, [[0.9, 0.1], [0.0, 1.0]])
    assert report.majority_accuracy == pytest.approx(0.5)
    assert report.fused_regular_vs_emergency == pytest.approx(0.95)
    assert report.cross_fitted is None
    assert json.loads(json.dumps(report.to_json()))["no_transcript"]["majority_accuracy"] == 0.5


def _two_answered_clips() -> tuple[list[LabelledClip], BranchScores]:
    """A calm ordinary call and an urgent robbery, each answered right by every branch."""
    clips = labelled_clips(
        [
            _spoken("I'd like a table for two", "regular", "calm"),
            _spoken("they took my wallet at knifepoint", "robbery", "urgent"),
        ],
        Path("/nowhere"),
    )
    scores = BranchScores(
        urgency=_one_hot([0, 1], 2),
        text=_one_hot([0, 2], 6),
        fused=_one_hot([0, 2], 6),
        no_transcript=_one_hot([0, 1], 6),
    )
    return clips, scores


def test_too_small_a_set_to_cross_fit_falls_back_to_the_served_fusion() -> None:
    clips, scores = _two_answered_clips()

    report = score_spoken_set(clips, scores, FUSION, cross_fit=True)

    assert report.cross_fitted is not None
    assert report.cross_fitted["heldout_figures"].startswith("in-sample")
    assert report.cross_fitted["heldout_accuracy"] == pytest.approx(report.fused.accuracy)


def _spoken(text: str, label: str, delivery: str) -> SpokenClip:
    (clip,) = [
        c for c in synthesis.plan_set([(text, label)], variants=2) if c.recipe.delivery == delivery
    ]
    return clip


def test_heldout_clips_are_planned_as_the_build_plans_them() -> None:
    sentences = heldout_sentences()
    planned = plan_heldout(sentences)

    # The same sentences as the transcript classifier's held-out split.
    text_split = EMERGENCY_TRANSCRIPT.evaluation_sets(independent=False)["held-out transcripts"]
    assert sorted(normalise(e.text) for e in sentences) == [e.text for e in text_split]
    assert all(is_heldout(normalise(example.text)) for example in sentences)
    assert len(planned) == 2 * len(sentences)
    assert all(clip.heldout for clip in planned)
    assert planned == synthesis.plan_set(((e.text, e.label) for e in sentences), variants=2)


def test_independent_sentences_are_all_spoken_in_heldout_voices() -> None:
    sentences = [
        LabelledText(f"sentence number {index} about a call", "help") for index in range(40)
    ]
    assert {is_heldout(normalise(e.text)) for e in sentences} == {True, False}

    planned = plan_heldout(sentences, all_heldout=True)
    usual = synthesis.plan_set(((e.text, e.label) for e in sentences), variants=2)

    assert [clip.file for clip in planned] == [clip.file for clip in usual]
    heldout_voices = set(HELDOUT_POOL.voices())
    for clip, plain in zip(planned, usual, strict=True):
        assert clip.heldout
        assert clip.recipe.delivery == plain.recipe.delivery
        assert clip.recipe.speech.voice in heldout_voices
        assert any(low <= clip.recipe.snr_db <= high for low, high in HELDOUT_POOL.snr_bands_db)
        if plain.heldout:
            assert clip == plain


def test_first_sentences_per_label_keep_both_deliveries_and_a_fixed_order() -> None:
    planned = plan_heldout(heldout_sentences())

    chosen = first_sentences(planned, 2)

    assert first_sentences(planned, None) == planned
    assert first_sentences(list(reversed(planned)), 2) == list(reversed(chosen))
    by_label: dict[str, set[str]] = {}
    for clip in chosen:
        by_label.setdefault(clip.label, set()).add(clip.text)
    assert sorted(by_label) == sorted(LABELS)
    assert all(len(texts) == 2 for texts in by_label.values())
    assert len(chosen) == 2 * 2 * len(LABELS)


def test_the_clip_folder_changes_with_what_the_clips_are_made_of(tmp_path: Path) -> None:
    planned = plan_heldout(heldout_sentences())

    folder = clip_directory(tmp_path, "held-out", planned)

    assert folder.parent == tmp_path / clip_evaluation.CLIP_CACHE
    assert folder.name.startswith("held-out-")
    assert clip_directory(tmp_path, "held-out", planned) == folder
    assert clip_directory(tmp_path, "held-out", planned[:-2]) != folder


def test_only_missing_clips_are_synthesised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planned = plan_heldout(heldout_sentences())
    calls: list[list[str]] = []

    def fake_synthesis(
        clips: Sequence[SpokenClip], out_dir: Path, *, whole_set: Sequence[SpokenClip]
    ) -> list[SpokenClip]:
        assert whole_set is planned  # so a clip sounds as it does within the whole set
        calls.append([clip.file for clip in clips])
        for clip in clips:
            (out_dir / clip.file).parent.mkdir(parents=True, exist_ok=True)
            (out_dir / clip.file).write_bytes(b"RIFF")
        return list(clips)

    monkeypatch.setattr(synthesis, "synthesise_clips", fake_synthesis)
    folder = tmp_path / "clips"

    assert ensure_clips(planned[:4], planned, folder) == 4
    assert ensure_clips(planned[:6], planned, folder) == 2
    assert ensure_clips(planned[:6], planned, folder) == 0
    assert calls == [[c.file for c in planned[:4]], [c.file for c in planned[4:6]]]
    assert all((folder / clip.file).is_file() for clip in planned[:6])
    assert [path.name for path in tmp_path.iterdir()] == ["clips"]  # no staging left


def test_a_missing_independent_set_is_none_and_duplicates_count_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(independent_sets, "INDEPENDENT_DIR", tmp_path)
    assert independent_sentences() is None

    # A stand-in: the real set is read only by the leakage test and `mtc eval`.
    (tmp_path / "emergency_transcripts.csv").write_text(
        "text,label\nmy car was stolen,Theft\nmy  car was stolen,theft\nhello there,REGULAR\n",
        encoding="utf-8",
    )
    assert independent_sentences() == [
        LabelledText("my car was stolen", "theft"),
        LabelledText("hello there", "regular"),
    ]


def test_the_report_compares_the_heldout_figures_with_the_build() -> None:
    clips, scores = _two_answered_clips()
    spoken = score_spoken_set(clips, scores, FUSION, cross_fit=True)
    report = AudioStarterReport(
        model="m",
        identity="mtc-emergency-call 9",
        text={},
        spoken={"held-out": spoken},
        build_metrics={"heldout_accuracy": 0.5, "heldout_audio_accuracy": 0.25},
        build_text_accuracy=None,
        skipped={"independent": "not written yet"},
    )

    comparison = report.build_comparison()
    document = report.to_json()
    table = report.table()

    assert comparison["heldout_accuracy"] == {"served": 1.0, "cross_fitted": 1.0, "build": 0.5}
    assert comparison["heldout_audio_accuracy"]["cross_fitted"] is None
    assert set(document["sets"]) == {"spoken held-out"}
    assert document["skipped"] == {"independent": "not written yet"}
    assert "80%" in document["weighting"]["rule"]
    assert "skipped   independent: not written yet" in table
    assert "calm vs urgent, audio branch alone            1.0000             -  0.2500" in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--starter", "sentiment", "--limit", "2"], "need --starter audio"),
        (["--starter", "audio", "--runtime", "onnx"], "torch only"),
        (["--starter", "audio", "--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_eval_refuses_audio_options_that_cannot_apply(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["eval", *argv])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
