"""The separate Whisper evaluation of the starter model runs, and never scores a sentence
the build fitted the recognised-transcript weights on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.artifacts.manifest import read_manifest
from services.audio.starter.asr_evaluation import chosen_clips, main
from services.audio.starter.recipe import build_audio_starter
from services.audio.training import sentence_digest
from services.text.training import normalise

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def starter_dir() -> Path:
    return build_audio_starter(REPO / ".mtc" / "models" / "audio").out


def test_evaluation_skips_the_sentences_the_build_fitted_on(starter_dir: Path) -> None:
    manifest = read_manifest(starter_dir)
    assert manifest is not None
    fitted = set(manifest.metrics["asr_weights_fitted_on"]["sentences"])
    clips, _ = chosen_clips(5, fitted)
    assert len(clips) == 60
    assert all(clip.heldout for clip in clips)
    assert not {sentence_digest(normalise(clip.text)) for clip in clips} & fitted
    assert {clip.recipe.delivery for clip in clips} == {"calm", "urgent"}


def test_evaluation_reports_fused_and_transcript_only_figures(
    starter_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "figures.json"
    assert (
        main(["--model", str(starter_dir), "--sentences-per-label", "1", "--json", str(out)]) == 0
    )
    figures = json.loads(out.read_text())
    assert figures["clips"] == 12
    for value in figures["accuracy"].values():
        assert 0 <= value <= 1
    assert set(figures["no_transcript_regular_vs_emergency"]) == {
        "fused (audio alone)",
        "balanced",
        "always the more common kind",
    }
