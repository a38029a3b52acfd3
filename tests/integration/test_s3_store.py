"""Models fetched from a real S3-compatible server, verified against their manifests."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient

from services.artifacts.manifest import write_manifest
from services.artifacts.store import ModelStore
from services.core.errors import ModelLoadError
from services.text.api import build_app
from services.text.settings import TextSettings
from tests.support.service_client import wait_ready
from tests.unit.test_text_api import URL

pytestmark = pytest.mark.usefixtures("aws_credentials")


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def publish(endpoint: str, model_dir: Path, bucket: str, prefix: str) -> None:
    """Upload every file, manifest last (as a publisher must)."""
    client = s3_client(endpoint)
    client.create_bucket(Bucket=bucket)
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name != "manifest.json")
    for path in [*files, model_dir / "manifest.json"]:
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(model_dir)}")


@pytest.fixture
def published_model(tmp_path: Path, tiny_model_dir: Path) -> Path:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    write_manifest(
        model_dir, name="tiny", task="sentiment", version="7.0.0", labels=["NEGATIVE", "POSITIVE"]
    )
    return model_dir


def test_download_verify_and_reuse_the_cached_copy(
    s3_endpoint: str, published_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish(s3_endpoint, published_model, "models-ok", "sentiment/7.0.0")
    store = ModelStore(tmp_path / "cache", s3_endpoint_url=s3_endpoint)
    local = store.fetch("s3://models-ok/sentiment/7.0.0")
    for path in published_model.rglob("*"):
        if path.is_file():
            assert (local / path.relative_to(published_model)).read_bytes() == path.read_bytes()
    assert not list(local.parent.glob(".partial-*"))
    with caplog.at_level(logging.INFO, logger="services.artifacts.store"):
        assert store.fetch("s3://models-ok/sentiment/7.0.0/") == local
    assert "using verified cached copy" in caplog.text


def test_a_corrupt_object_is_refused_and_leaves_nothing_behind(
    s3_endpoint: str, published_model: Path, tmp_path: Path
) -> None:
    publish(s3_endpoint, published_model, "models-bad", "sentiment/7.0.0")
    s3_client(s3_endpoint).put_object(
        Bucket="models-bad", Key="sentiment/7.0.0/config.json", Body=b'{"tampered": true}'
    )
    cache = tmp_path / "cache"
    with pytest.raises(ModelLoadError, match=r"checksum mismatch for config\.json"):
        ModelStore(cache, s3_endpoint_url=s3_endpoint).fetch("s3://models-bad/sentiment/7.0.0")
    leftovers = [p for p in cache.rglob("*") if p.is_file()]
    assert leftovers == []


def test_a_prefix_without_manifest_is_not_a_model(
    s3_endpoint: str, published_model: Path, tmp_path: Path
) -> None:
    publish(s3_endpoint, published_model, "models-half", "sentiment/1")
    s3_client(s3_endpoint).delete_object(Bucket="models-half", Key="sentiment/1/manifest.json")
    store = ModelStore(tmp_path / "cache", s3_endpoint_url=s3_endpoint)
    with pytest.raises(ModelLoadError, match=r"no manifest\.json under this prefix"):
        store.fetch("s3://models-half/sentiment/1")
    with pytest.raises(ModelLoadError, match="bucket 'no-such-bucket' does not exist"):
        store.fetch("s3://no-such-bucket/x")


def test_service_serves_a_model_from_s3(
    s3_endpoint: str, published_model: Path, tmp_path: Path
) -> None:
    publish(s3_endpoint, published_model, "models-serve", "sentiment/7.0.0")
    settings = TextSettings(
        task="sentiment",
        model_uri="s3://models-serve/sentiment/7.0.0",
        s3_endpoint_url=s3_endpoint,
        model_cache_dir=tmp_path / "cache",
    )
    with TestClient(build_app(settings)) as client:
        wait_ready(client)
        response = client.post(URL, json={"text": ["from the object store"]})
    assert response.status_code == 200
    assert response.json()["model"] == {"name": "tiny", "version": "7.0.0"}
