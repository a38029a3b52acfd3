"""Train -> publish to S3 -> serve by version -> refuse a corrupted copy, end to end."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient

from services.artifacts.manifest import read_manifest, write_manifest
from services.lifecycle.cli import main
from services.text.api import build_app
from services.text.settings import TextSettings

pytestmark = pytest.mark.usefixtures("aws_credentials")

URL = "/v1/reviews/predict"


def write_reviews_csv(path: Path, rows: int = 120) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for index in range(rows):
            if index % 2:
                writer.writerow([f"a wonderful, moving film number {index}", "pos"])
            else:
                writer.writerow([f"a dull and tedious mess number {index}", "neg"])
    return path


def s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def service(uri: str, endpoint: str, cache: Path) -> TestClient:
    settings = TextSettings(
        task="reviews", model_uri=uri, s3_endpoint_url=endpoint, model_cache_dir=cache
    )
    return TestClient(build_app(settings))


def settle(client: TestClient) -> dict[str, Any]:
    """Wait until loading finished either way; return the model entry."""
    deadline = time.monotonic() + 60
    while True:
        entry: dict[str, Any] = client.get("/v1/models").json()["models"][0]
        if entry["status"] != "loading" or time.monotonic() > deadline:
            return entry
        time.sleep(0.05)


@pytest.fixture(scope="module")
def trained_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("lifecycle")
    data = write_reviews_csv(work / "reviews.csv")
    out = work / "reviews-model"
    code = main(
        [
            "train", "text", "--base", str(tiny_model_dir), "--data", str(data),
            "--labels", "neg,pos", "--out", str(out), "--task", "reviews",
            "--version", "0.1.0", "--epochs", "1", "--batch-size", "16",
        ]
    )  # fmt: skip
    assert code == 0
    return out


def test_trained_model_has_a_manifest_with_heldout_metrics(trained_model: Path) -> None:
    manifest = read_manifest(trained_model)
    assert manifest is not None
    assert manifest.task == "reviews"
    assert manifest.labels == ["neg", "pos"]
    assert 0.0 <= manifest.metrics["heldout_accuracy"] <= 1.0
    assert manifest.metrics["heldout_examples"] > 0
    assert manifest.training_data["train_examples"] + manifest.metrics["heldout_examples"] == 120
    assert "model.safetensors" in manifest.files


def test_eval_prints_and_writes_metrics(
    trained_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_reviews_csv(tmp_path / "eval.csv", rows=30)
    out = tmp_path / "metrics.json"
    assert (
        main(["eval", "--model", str(trained_model), "--data", str(data), "--json-out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "macro-F1" in printed
    assert "confusion matrix" in printed
    document = json.loads(out.read_text())
    assert document["examples"] == 30
    assert set(document["per_class"]) == {"neg", "pos"}
    assert sum(map(sum, document["confusion_matrix"])) == 30
    assert 0.0 <= document["expected_calibration_error"] <= 1.0


def test_publish_serve_by_version_and_refuse_corruption(
    trained_model: Path, s3_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s3(s3_endpoint).create_bucket(Bucket="lifecycle")
    root = "s3://lifecycle/models/reviews"
    push = ["models", "push", "--endpoint-url", s3_endpoint]
    assert main([*push, str(trained_model), f"{root}/0.1.0"]) == 0
    # Versions are immutable.
    assert main([*push, str(trained_model), f"{root}/0.1.0"]) == 1
    assert "already holds a published model" in capsys.readouterr().err

    second = tmp_path / "v0.2.0"
    shutil.copytree(trained_model, second)
    old = read_manifest(second)
    assert old is not None
    write_manifest(
        second, name=old.name, task=old.task, version="0.2.0", labels=old.labels,
        metrics=old.metrics, training_data=old.training_data,
    )  # fmt: skip
    assert main([*push, str(second), f"{root}/0.2.0"]) == 0
    # An upload that never finished (no manifest) must stay invisible to `latest`.
    s3(s3_endpoint).put_object(
        Bucket="lifecycle", Key="models/reviews/0.10.0/config.json", Body=b"{}"
    )

    capsys.readouterr()
    assert main(["models", "ls", root, "--endpoint-url", s3_endpoint, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(row["version"], row["complete"]) for row in listed] == [
        ("0.1.0", True), ("0.2.0", True), ("0.10.0", False)
    ]  # fmt: skip
    assert "heldout_accuracy" in listed[0]["metrics"]

    with service(f"{root}/latest", s3_endpoint, tmp_path / "cache-a") as latest:
        assert settle(latest)["version"] == "0.2.0"
        answer = latest.post(URL, json={"text": ["a wonderful film"]})
        assert answer.status_code == 200
        assert answer.json()["model"]["version"] == "0.2.0"
        info = [
            line
            for line in latest.get("/metrics").text.splitlines()
            if line.startswith("mtc_model_info{")
        ]
        assert 'version="0.2.0"' in info[0]

    pulled = tmp_path / "pulled"
    assert (
        main(["models", "pull", f"{root}/0.1.0", str(pulled), "--endpoint-url", s3_endpoint]) == 0
    )
    assert (pulled / "model.safetensors").read_bytes() == (
        trained_model / "model.safetensors"
    ).read_bytes()

    # Corrupt one object: a fresh service refuses it, with the reason, and serves nothing.
    s3(s3_endpoint).put_object(
        Bucket="lifecycle", Key="models/reviews/0.1.0/model.safetensors", Body=b"garbage"
    )
    with service(f"{root}/0.1.0", s3_endpoint, tmp_path / "cache-b") as fresh:
        entry = settle(fresh)
        assert entry["status"] == "failed"
        assert entry["ready"] is False
        ready = fresh.get("/health/ready")
        assert ready.status_code == 503
        assert "checksum mismatch for model.safetensors" in ready.json()["detail"]
        assert fresh.post(URL, json={"text": ["anything"]}).status_code == 503
    assert not any((tmp_path / "cache-b").rglob("model.safetensors"))

    refused = tmp_path / "refused"
    assert (
        main(["models", "pull", f"{root}/0.1.0", str(refused), "--endpoint-url", s3_endpoint]) == 1
    )
    assert "checksum mismatch" in capsys.readouterr().err
    assert not refused.exists()
