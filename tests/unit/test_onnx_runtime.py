"""The ONNX Runtime int8 option: export, parity with PyTorch, serving, failure modes."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.artifacts.manifest import read_manifest, sha256_file, verify_model_dir, write_manifest
from services.core.errors import ModelLoadError
from services.core.model import Prediction
from services.text.api import build_app
from services.text.models.onnx_classifier import OnnxSequenceClassifier
from services.text.models.sequence_classifier import SequenceClassifier
from services.text.onnx_export import ONNX_FILE, ExportError, export_onnx_int8, main
from services.text.settings import TextSettings
from tests.support.models import TINY_LABELS
from tests.support.service_client import wait_ready
from tests.unit.test_text_api import URL, settings_for

SENTENCES = [
    "An absolute triumph, moving and beautifully acted.",
    "Terrible acting and a boring plot.",
    "ok",
    "I loved every minute of it.",
    "Two hours of my life I will never get back.",
    "The soundtrack is great; everything else is forgettable.",
    "Not bad at all.",
    "Dull.",
    "café crème brûlée, naïve but délicieux 😀",
    "",
    "A quiet, patient film that rewards attention, with a long winding middle act.",
    "!!!???",
]
# The export's contract: scores within 0.02 of PyTorch's, same ranking. A wiring fault
# (swapped inputs, label order, masking, softmax axis) moves scores by the whole spread.
TOLERANCE = 0.02
MIN_SPREAD = 10 * TOLERANCE


def make_input_sensitive(model_dir: Path) -> None:
    """Rescale the tiny random model in place so that its scores depend on the text.

    At its initial scale the random encoder gives every text almost the same [CLS] vector,
    so every score is ~0.5 and a wrong runtime would pass any tolerance. Weights x5 make
    attention depend on the tokens; the head is then aimed along the direction in which
    these sentences differ most, centred, with a logit gap of standard deviation 1.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.dim() == 2 and not name.startswith("classifier"):
                weight.mul_(5)
        pooled = model.bert(**tokenizer(SENTENCES, padding=True, return_tensors="pt"))
        features = pooled.pooler_output
        centre = features.mean(0)
        direction = torch.linalg.svd(features - centre, full_matrices=False).Vh[0]
        scale = 1 / ((features - centre) @ direction).std()
        model.classifier.weight.copy_(torch.stack([-direction, direction]) * scale / 2)
        offset = centre @ direction * scale / 2
        model.classifier.bias.copy_(torch.stack([offset, -offset]))
    model.save_pretrained(model_dir)


def write_test_manifest(model_dir: Path) -> None:
    write_manifest(
        model_dir,
        name="tiny-sentiment",
        task="sentiment",
        version="3.1.4",
        labels=TINY_LABELS,
        metrics={"heldout_accuracy": 0.5},
        training_data={"corpus": "none: random weights"},
        config={"note": "kept through the export"},
    )


@pytest.fixture(scope="module")
def exported_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An input-sensitive tiny model with a manifest, exported once for the module."""
    model_dir = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    make_input_sensitive(model_dir)
    write_test_manifest(model_dir)
    export_onnx_int8(model_dir)
    return model_dir


def loaded(model: SequenceClassifier, model_dir: Path) -> SequenceClassifier:
    asyncio.run(model.start(model_dir))
    return model


def score_table(predictions: Sequence[Prediction]) -> list[dict[str, float]]:
    return [{entry.label: entry.score for entry in p.scores} for p in predictions]


def ranking(prediction: Prediction) -> list[str]:
    return [entry.label for entry in prediction.scores]


def test_export_is_listed_in_the_manifest_which_still_verifies(
    exported_dir: Path, tiny_model_dir: Path
) -> None:
    manifest = read_manifest(exported_dir)
    assert manifest is not None
    assert manifest.files[ONNX_FILE.as_posix()] == sha256_file(exported_dir / ONNX_FILE)
    verify_model_dir(exported_dir, manifest)
    assert (manifest.name, manifest.task, manifest.version) == (
        "tiny-sentiment",
        "sentiment",
        "3.1.4",
    )
    assert manifest.labels == TINY_LABELS
    assert manifest.metrics == {"heldout_accuracy": 0.5}
    assert manifest.training_data == {"corpus": "none: random weights"}
    assert manifest.config == {"note": "kept through the export"}
    # Nothing but the export was added to the directory.
    original = {path.relative_to(tiny_model_dir) for path in tiny_model_dir.rglob("*")}
    added = {path.relative_to(exported_dir) for path in exported_dir.rglob("*")} - original
    assert added == {Path("manifest.json"), Path("onnx"), ONNX_FILE}


def parity_failures(expected: Sequence[Prediction], got: Sequence[Prediction]) -> list[str]:
    """Why `got` is not within the tolerance of `expected` with the same ranking, if it isn't."""
    failures = []
    for text, want, have in zip(SENTENCES, expected, got, strict=True):
        if ranking(have) != ranking(want):
            failures.append(f"{text!r}: ranking {ranking(have)} != {ranking(want)}")
        want_scores = score_table([want])[0]
        for label, score in score_table([have])[0].items():
            if abs(score - want_scores[label]) > TOLERANCE:
                failures.append(f"{text!r} {label}: {score:.4f} != {want_scores[label]:.4f}")
        if abs(sum(entry.score for entry in have.scores) - 1.0) > 1e-5:
            failures.append(f"{text!r}: scores do not sum to 1")
    return failures


def test_onnx_scores_match_pytorch_on_varied_sentences(exported_dir: Path) -> None:
    reference = loaded(SequenceClassifier(), exported_dir)
    candidate = loaded(OnnxSequenceClassifier(), exported_dir)
    assert candidate.metadata == reference.metadata
    expected = [reference.predict([text])[0] for text in SENTENCES]

    # The premise that lets this test fail: scores spread far wider than the tolerance,
    # both labels win somewhere, and no ranking is decided by less than the tolerance.
    positive = [scores["POSITIVE"] for scores in score_table(expected)]
    assert max(positive) - min(positive) >= MIN_SPREAD, positive
    assert {ranking(scores)[0] for scores in expected} == set(TINY_LABELS)
    assert min(abs(2 * p - 1) for p in positive) > 2 * TOLERANCE, positive

    alone = [candidate.predict([text])[0] for text in SENTENCES]
    together = candidate.predict(SENTENCES)  # padded: exercises the attention mask
    assert parity_failures(expected, alone) == []
    assert parity_failures(expected, together) == []


class _BrokenSession:
    """Wraps an ONNX Runtime session with one wiring fault."""

    def __init__(self, session: Any, fault: str) -> None:
        self._session = session
        self._fault = fault

    def get_inputs(self) -> Any:
        return self._session.get_inputs()

    def run(self, outputs: list[str], feeds: dict[str, Any]) -> Any:
        import numpy as np

        feeds = dict(feeds)
        if self._fault == "mask ignored":
            feeds["attention_mask"] = np.ones_like(feeds["attention_mask"])
        if self._fault == "token types set":
            feeds["token_type_ids"] = np.ones_like(feeds["token_type_ids"])
        (logits,) = self._session.run(outputs, feeds)
        if self._fault == "labels swapped":
            logits = logits[:, ::-1]
        return [logits]


@pytest.mark.parametrize("fault", ["labels swapped", "mask ignored", "token types set"])
def test_parity_check_fails_for_a_broken_runtime(exported_dir: Path, fault: str) -> None:
    expected = loaded(SequenceClassifier(), exported_dir).predict(SENTENCES)
    candidate = loaded(OnnxSequenceClassifier(), exported_dir)
    assert isinstance(candidate, OnnxSequenceClassifier)
    candidate._session = _BrokenSession(candidate._session, fault)
    assert parity_failures(expected, candidate.predict(SENTENCES)) != []


def test_export_quantises_only_the_last_layer_and_attention_outputs(exported_dir: Path) -> None:
    # On the real starter, quantising more than this breaks the 0.02 parity (see the
    # export's docstring); the tiny model is too forgiving to show it, so pin the recipe.
    import onnx

    graph = onnx.load(str(exported_dir / ONNX_FILE)).graph
    quantised = {
        node.name for node in graph.node if node.op_type in ("MatMulInteger", "QAttention")
    }
    floating = {node.name for node in graph.node if node.op_type in ("MatMul", "Attention")}
    assert quantised == {
        "Attention_1_quant",
        "/bert/encoder/layer.1/attention/output/dense/MatMul_quant",
        "/bert/encoder/layer.1/intermediate/dense/MatMul_quant",
        "/bert/encoder/layer.1/output/dense/MatMul_quant",
        "/bert/encoder/layer.0/attention/output/dense/MatMul_quant",
    }
    assert floating == {
        "Attention_0",
        "/bert/encoder/layer.0/intermediate/dense/MatMul",
        "/bert/encoder/layer.0/output/dense/MatMul",
        "/bert/pooler/dense/Gemm_MatMul",
        "/classifier/Gemm_MatMul",
    }
    assert "EmbedLayerNormalization" in {node.op_type for node in graph.node}


def test_multi_label_models_get_independent_sigmoids(exported_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "multi"
    shutil.copytree(exported_dir, model_dir)
    (model_dir / "manifest.json").unlink()
    config = json.loads((model_dir / "config.json").read_text())
    config["problem_type"] = "multi_label_classification"
    (model_dir / "config.json").write_text(json.dumps(config))
    before = (model_dir / ONNX_FILE).stat().st_mtime_ns
    export_onnx_int8(model_dir)
    assert (model_dir / ONNX_FILE).stat().st_mtime_ns != before, "config changed: not skipped"

    softmax = score_table(loaded(SequenceClassifier(), exported_dir).predict(SENTENCES))
    expected = score_table(loaded(SequenceClassifier(), model_dir).predict(SENTENCES))
    got = score_table(loaded(OnnxSequenceClassifier(), model_dir).predict(SENTENCES))
    # Premise: on this model softmax and sigmoid scores differ by more than the tolerance.
    assert (
        max(
            abs(s[label] - e[label])
            for s, e in zip(softmax, expected, strict=True)
            for label in TINY_LABELS
        )
        > 2 * TOLERANCE
    )
    for want, have in zip(expected, got, strict=True):
        for label, score in have.items():
            assert score == pytest.approx(want[label], abs=TOLERANCE)


def test_service_with_onnx_runtime_serves_the_same_model_version(exported_dir: Path) -> None:
    versions = {}
    answers = {}
    for runtime in ("torch", "onnx"):
        app = build_app(settings_for(exported_dir, runtime=runtime))
        with TestClient(app) as client:
            wait_ready(client)
            response = client.post(URL, json={"text": SENTENCES[:4]})
            assert response.status_code == 200
            body = response.json()
            versions[runtime] = body["model"]
            answers[runtime] = body["predictions"]
            model = app.state.dataplane.model
            assert isinstance(model, OnnxSequenceClassifier) == (runtime == "onnx")
    assert versions["onnx"] == versions["torch"] == {"name": "tiny-sentiment", "version": "3.1.4"}
    for torch_scores, onnx_scores in zip(answers["torch"], answers["onnx"], strict=True):
        assert [e["label"] for e in onnx_scores] == [e["label"] for e in torch_scores]
        for mine, theirs in zip(onnx_scores, torch_scores, strict=True):
            assert mine["score"] == pytest.approx(theirs["score"], abs=TOLERANCE)


def test_missing_export_keeps_the_service_not_ready_and_names_the_command(
    tiny_model_dir: Path,
) -> None:
    with TestClient(build_app(settings_for(tiny_model_dir, runtime="onnx"))) as client:
        deadline = time.monotonic() + 30
        while client.get("/v1/models").json()["models"][0]["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert "python -m services.text.onnx_export" in response.json()["detail"]
        assert client.post(URL, json={"text": ["hello"]}).status_code == 503


def test_export_again_is_a_no_op_and_forcing_it_is_reproducible(exported_dir: Path) -> None:
    onnx_file = exported_dir / ONNX_FILE
    manifest_file = exported_dir / "manifest.json"
    before = (onnx_file.stat().st_mtime_ns, manifest_file.stat().st_mtime_ns)
    digest = sha256_file(onnx_file)
    assert export_onnx_int8(exported_dir) == onnx_file
    assert (onnx_file.stat().st_mtime_ns, manifest_file.stat().st_mtime_ns) == before

    export_onnx_int8(exported_dir, force=True)
    assert onnx_file.stat().st_mtime_ns != before[0]
    assert sha256_file(onnx_file) == digest
    manifest = read_manifest(exported_dir)
    assert manifest is not None
    verify_model_dir(exported_dir, manifest)


def test_export_made_from_other_weights_is_refused_then_redone(
    exported_dir: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    model_dir = tmp_path / "retrained"
    shutil.copytree(exported_dir, model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(model_dir)
    write_test_manifest(model_dir)  # as a training tool would, over the old export

    with pytest.raises(ModelLoadError, match="--force"):
        loaded(OnnxSequenceClassifier(), model_dir)
    before = (model_dir / ONNX_FILE).stat().st_mtime_ns
    export_onnx_int8(model_dir)
    assert (model_dir / ONNX_FILE).stat().st_mtime_ns != before
    loaded(OnnxSequenceClassifier(), model_dir)


def test_export_refuses_to_bless_files_the_manifest_does_not_list(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    write_test_manifest(model_dir)
    (model_dir / "notes.txt").write_text("not part of the model")
    with pytest.raises(ExportError, match=r"notes\.txt"):
        export_onnx_int8(model_dir)
    (model_dir / "notes.txt").unlink()
    (model_dir / "config.json").write_text("{}")
    with pytest.raises(ExportError, match="checksum mismatch"):
        export_onnx_int8(model_dir)
    assert not (model_dir / "onnx").exists()


def test_command_line(
    exported_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as help_exit:
        main(["--help"])
    assert help_exit.value.code == 0
    assert "--force" in capsys.readouterr().out

    assert main([str(exported_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(exported_dir / ONNX_FILE)

    assert main([str(tmp_path)]) == 1
    assert "no config.json" in capsys.readouterr().err


def test_runtime_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert TextSettings().runtime == "openvino"
    monkeypatch.setenv("MTC_RUNTIME", "onnx")
    assert TextSettings().runtime == "onnx"
    monkeypatch.setenv("MTC_RUNTIME", "tensorrt")
    with pytest.raises(ValueError, match="runtime"):
        TextSettings()
