"""`mtc train audio` on a labelled folder of clips, then the result served."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.audio.api import build_app
from services.audio.settings import AudioSettings
from services.audio.starter.synthesis import synthesise_set
from services.core.manifest import read_manifest
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
    synthesise_set(SENTENCES, clips, variants=1)
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
    assert manifest.training_data["train_clips"] + manifest.training_data["heldout_clips"] == 16
    assert "heldout_text_accuracy" in manifest.metrics
    audio_config = json.loads((out / "audio" / "config.json").read_text())
    assert audio_config["labels"] == ["help", "regular"]

    settings = AudioSettings(model_uri=str(out), asr_enabled=False)
    with TestClient(build_app(settings)) as client:
        wait_ready(client)
        response = client.post(
            "/v1/audio/predict",
            files={"audio": ("a.wav", spoken_wav("my friend fainted"))},
            data={"transcript": "my friend fainted"},
        )
    assert response.status_code == 200, response.text
    assert {s["label"] for s in response.json()["predictions"][0]} == {"help", "regular"}


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
