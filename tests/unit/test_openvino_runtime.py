"""MTC_RUNTIME=openvino: the same answers as PyTorch within 0.02, through the service too."""

from __future__ import annotations

import asyncio
import builtins
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.text.api import build_app
from services.text.models.openvino_classifier import OpenVinoSequenceClassifier
from services.text.models.sequence_classifier import SequenceClassifier
from tests.support.models import TINY_LABELS
from tests.support.service_client import wait_ready
from tests.unit.test_onnx_runtime import (
    SENTENCES,
    make_input_sensitive,
    parity_failures,
    ranking,
)
from tests.unit.test_text_api import URL, settings_for


@pytest.fixture(scope="module")
def sensitive_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_dir = tmp_path_factory.mktemp("openvino") / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    make_input_sensitive(model_dir)
    return model_dir


def loaded(model: SequenceClassifier, model_dir: Path) -> SequenceClassifier:
    asyncio.run(model.start(model_dir))
    return model


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_openvino_scores_match_pytorch(sensitive_dir: Path, precision: Any) -> None:
    expected = loaded(SequenceClassifier(), sensitive_dir).predict(SENTENCES)
    # Premise: the labels differ between sentences, so a wrong path shows.
    assert {ranking(p)[0] for p in expected} == set(TINY_LABELS)
    model = loaded(OpenVinoSequenceClassifier(precision=precision), sensitive_dir)
    assert model.runtime.startswith("openvino")
    alone = [model.predict([text])[0] for text in SENTENCES]
    together = model.predict(SENTENCES)  # padded: exercises the attention mask
    assert parity_failures(expected, alone) == []
    assert parity_failures(expected, together) == []
    assert [p.tokens for p in together] == [p.tokens for p in expected]


def test_the_service_serves_with_openvino(sensitive_dir: Path) -> None:
    settings = settings_for(sensitive_dir, runtime="openvino", inference_workers=2)
    with TestClient(build_app(settings)) as client:
        wait_ready(client)
        answer = client.post(URL, json={"text": SENTENCES})
        models = client.get("/v1/models").json()["models"]
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == len(SENTENCES)
    assert models[0]["runtime"].startswith("openvino")


def test_without_openvino_the_model_is_served_by_torch_and_the_log_says_why(
    sensitive_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_import = builtins.__import__

    def no_openvino(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with caplog.at_level(logging.WARNING):
        model = loaded(OpenVinoSequenceClassifier(), sensitive_dir)
    assert model.runtime == "torch"
    assert "OpenVINO is not installed; serving it with PyTorch (float32)" in caplog.text
    expected = loaded(SequenceClassifier(), sensitive_dir).predict(SENTENCES)
    assert parity_failures(expected, model.predict(SENTENCES)) == []


def test_a_conversion_that_disagrees_is_not_used(
    sensitive_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(OpenVinoSequenceClassifier, "_check", lambda self, model: 1.0)
    with caplog.at_level(logging.WARNING):
        model = loaded(OpenVinoSequenceClassifier(), sensitive_dir)
    assert model.runtime == "torch"
    assert "logits differ from PyTorch's by 1" in caplog.text
    assert len(model.predict(SENTENCES)) == len(SENTENCES)


def test_models_converted_at_once_both_run_on_openvino(sensitive_dir: Path) -> None:
    """Two apps in one process (as the shared-cache tests run them) load together; both
    conversions must succeed, else one replica would serve torch and miss the other's cache."""

    async def load_together() -> list[OpenVinoSequenceClassifier]:
        models = [OpenVinoSequenceClassifier(), OpenVinoSequenceClassifier()]
        await asyncio.gather(*(model.start(sensitive_dir) for model in models))
        return models

    for _ in range(3):
        assert [m.runtime.startswith("openvino") for m in asyncio.run(load_together())] == [
            True,
            True,
        ]
