"""`mtc train audio` on a labelled folder of clips, then the result served."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.artifacts.manifest import read_manifest
from services.audio.api import build_app
from services.audio.settings import AudioSettings
from services.audio.starter.synthesis import synthesise_set
from services.lifecycle.cli import main
from tests.support.audio_clips import spoken_wav
from tests.support.models import build_tiny_text_model
from tests.support.service_client import wait_ready

pytestmark = pytest.mark.integration

SENTENCES = [
    *((f"please send help to room {n}, my friend fainted", "help") for n in range(8)),
    *((f"can I move my appointment to the {n}th of May", "regular") for n in range(8)),
]


def test_train_audio_then_serve(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    # Every sentence once calm, once urgent: the audio branch learns the sound, not the words.
    synthesise_set(SENTENCES, clips, variants=2)
    text_model = build_tiny_text_model(tmp_path / "text", labels=("help", "regular"))
    out = tmp_path / "model"

    options = ["--epochs", "1", "--name", "calls", "--version", "7"]
    code = main(
        ["train", "audio", str(clips), "--text-model", str(text_model), "--out", str(out), *options]
    )

    assert code == 0
    manifest = read_manifest(out)
    assert manifest is not None
    assert (manifest.name, manifest.version, manifest.task) == ("calls", "7", "audio")
    assert sorted(manifest.labels) == ["help", "regular"]
    fusion = manifest.config["fusion"]
    assert fusion["audio_weight"] >= 0
    assert fusion["text_weight"] >= 0
    assert manifest.training_data["train_clips"] + manifest.training_data["heldout_clips"] == 32
    assert "heldout_text_accuracy" in manifest.metrics
    assert manifest.metrics["heldout_audio_labels"] == ["calm", "urgent"]
    assert 0 <= manifest.metrics["heldout_no_transcript_emergency_accuracy"] <= 1
    assert fusion["ordinary_labels"] == ["regular"]
    audio_config = json.loads((out / "audio" / "config.json").read_text())
    assert audio_config["labels"] == ["help", "regular"]
    assert audio_config["urgency_labels"] == ["calm", "urgent"]

    settings = AudioSettings(model_uri=str(out), asr_enabled=False)
    with TestClient(build_app(settings)) as client:
        wait_ready(client)
        response = client.post(
            "/v1/audio/predict",
            files={"audio": ("a.wav", spoken_wav("my friend fainted"))},
            data={"transcript": "my friend fainted"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {s["label"] for s in body["predictions"][0]} == {"help", "regular"}
    assert {s["label"] for s in body["clips"][0]["audio"]} == {"calm", "urgent"}


def test_without_an_urgency_column_the_labels_teach_calm_and_urgent(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    synthesise_set(SENTENCES, clips, variants=2)
    table = clips / "transcripts.csv"
    with table.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with table.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "text"])
        writer.writerows([row["file"], row["text"]] for row in rows)
    text_model = build_tiny_text_model(tmp_path / "text", labels=("help", "regular"))
    out = tmp_path / "model"
    arguments = ["train", "audio", str(clips), "--text-model", str(text_model), "--out", str(out)]

    assert main([*arguments, "--epochs", "1"]) == 0
    manifest = read_manifest(out)
    assert manifest is not None
    # `regular` clips were calm, `help` clips urgent, whatever they sounded like.
    assert set(manifest.metrics["heldout_audio_recall"]) <= {"calm", "urgent"}


def test_train_audio_refuses_a_folder_without_clips(tmp_path: Path) -> None:
    (tmp_path / "clips" / "help").mkdir(parents=True)
    text_model = build_tiny_text_model(tmp_path / "text", labels=("help",))
    out = tmp_path / "model"
    code = main(
        [
            "train",
            "audio",
            str(tmp_path / "clips"),
            "--text-model",
            str(text_model),
            "--out",
            str(out),
        ]
    )
    assert code != 0
    assert not out.exists()
