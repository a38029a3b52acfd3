"""Manifests and the model store's local and hub paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.artifacts.manifest import (
    content_version,
    read_manifest,
    verify_model_dir,
    write_manifest,
)
from services.artifacts.store import ModelLocation, ModelStore
from services.core.errors import ModelLoadError


def make_model_dir(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"a": 1}')
    (root / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 100)
    return root


def test_manifest_lists_every_file_and_verifies(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "m")
    written = write_manifest(model_dir, name="m", task="t", version="1.0", labels=["a", "b"])
    assert set(written.files) == {"config.json", "sub/weights.bin"}
    assert read_manifest(model_dir) == written
    verify_model_dir(model_dir, written)


def test_corrupt_or_missing_file_is_refused(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "m")
    manifest = write_manifest(model_dir, name="m", task="t", version="1", labels=["a"])
    (model_dir / "sub" / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(ModelLoadError, match=r"checksum mismatch for sub/weights\.bin"):
        verify_model_dir(model_dir, manifest)
    (model_dir / "sub" / "weights.bin").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        verify_model_dir(model_dir, manifest)


def test_unsafe_manifest_paths_are_refused(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "m")
    (model_dir / "manifest.json").write_text(
        '{"name":"m","task":"t","version":"1","labels":[],"files":{"../x":"00"}}'
    )
    with pytest.raises(ModelLoadError, match="unsafe path"):
        read_manifest(model_dir)


def test_content_version_changes_with_content(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "m")
    before = content_version(model_dir)
    assert before == content_version(model_dir)
    (model_dir / "config.json").write_text('{"a": 2}')
    assert content_version(model_dir) != before


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/models/x", ModelLocation("file", "/models/x")),
        ("file:///models/x", ModelLocation("file", "/models/x")),
        ("file://models/x", ModelLocation("file", "models/x")),
        ("s3://bucket/a/b/", ModelLocation("s3", "bucket/a/b")),
        ("s3://bucket", ModelLocation("s3", "bucket")),
        ("hf://org/name@v1.2", ModelLocation("hf", "org/name", "v1.2")),
        ("hf://name", ModelLocation("hf", "name", None)),
    ],
)
def test_uri_forms(uri: str, expected: ModelLocation) -> None:
    assert ModelLocation.parse(uri) == expected


@pytest.mark.parametrize("uri", ["gs://bucket/x", "s3:///nobucket", "hf://a/b/c"])
def test_bad_uris_are_refused(uri: str) -> None:
    with pytest.raises(ModelLoadError):
        ModelLocation.parse(uri)


def test_local_model_is_verified(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "m")
    write_manifest(model_dir, name="m", task="t", version="1", labels=["a"])
    store = ModelStore(tmp_path / "cache")
    assert store.fetch(f"file://{model_dir}") == model_dir
    (model_dir / "config.json").write_text("changed")
    with pytest.raises(ModelLoadError, match="checksum mismatch"):
        store.fetch(str(model_dir))
    with pytest.raises(ModelLoadError, match="no model directory"):
        store.fetch(str(tmp_path / "absent"))


def test_hub_uri_fetches_the_requested_revision_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = make_model_dir(tmp_path / "snapshot")
    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(**kwargs: Any) -> str:
        calls.append(kwargs)
        return str(snapshot)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    store = ModelStore(tmp_path / "cache")
    assert store.fetch("hf://org/name@abc123") == snapshot
    assert calls == [
        {"repo_id": "org/name", "revision": "abc123", "cache_dir": tmp_path / "cache" / "hf"}
    ]
