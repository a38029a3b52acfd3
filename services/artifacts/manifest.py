"""`manifest.json`: what a model directory is (task, version, labels) and proof of its files.

The manifest lists the sha256 of every other file in the directory, so a copy fetched from
any store can be checked before it is served. It is always written (and uploaded) last:
a directory without a manifest is incomplete by definition.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.core.errors import ModelLoadError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large weights do not fill memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def model_files(model_dir: Path) -> list[Path]:
    """Every regular file of a model directory except the manifest, sorted, as relative paths."""
    return sorted(
        path.relative_to(model_dir)
        for path in model_dir.rglob("*")
        if path.is_file() and path.name != MANIFEST_NAME
    )


@dataclass(frozen=True)
class Manifest:
    """The parsed content of a `manifest.json`."""

    name: str
    task: str
    version: str
    labels: list[str]
    files: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    """Serving parameters that belong to this version (e.g. fusion weights)."""

    def to_json(self) -> dict[str, Any]:
        """The JSON document written to disk."""
        return {"format": MANIFEST_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, document: Mapping[str, Any], *, source: str) -> Manifest:
        """Parse a manifest document; `source` names where it came from, for error messages."""
        try:
            files = document["files"]
            labels = document["labels"]
            manifest = cls(
                name=str(document["name"]),
                task=str(document["task"]),
                version=str(document["version"]),
                labels=[str(label) for label in labels],
                files={str(name): str(digest) for name, digest in files.items()},
                metrics=dict(document.get("metrics") or {}),
                training_data=dict(document.get("training_data") or {}),
                config=dict(document.get("config") or {}),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ModelLoadError(f"{source}: malformed {MANIFEST_NAME}: {exc!r}") from exc
        for name in manifest.files:
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ModelLoadError(f"{source}: {MANIFEST_NAME} lists unsafe path {name!r}")
        return manifest


def write_manifest(
    model_dir: Path,
    *,
    name: str,
    task: str,
    version: str,
    labels: list[str],
    metrics: Mapping[str, Any] | None = None,
    training_data: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Manifest:
    """Hash every file of `model_dir` and write its manifest (last, after all other files)."""
    manifest = Manifest(
        name=name,
        task=task,
        version=version,
        labels=list(labels),
        files={path.as_posix(): sha256_file(model_dir / path) for path in model_files(model_dir)},
        metrics=dict(metrics or {}),
        training_data=dict(training_data or {}),
        config=dict(config or {}),
    )
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"
    (model_dir / MANIFEST_NAME).write_text(text, encoding="utf-8")
    return manifest


def read_manifest(model_dir: Path) -> Manifest | None:
    """The manifest of a directory, or None when it has none."""
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{path}: unreadable {MANIFEST_NAME}: {exc}") from exc
    return parse_manifest_bytes(raw, source=str(model_dir))


def parse_manifest_bytes(raw: bytes, *, source: str) -> Manifest:
    """Parse manifest bytes fetched from a store; `source` names it in error messages."""
    try:
        document: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{source}: {MANIFEST_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ModelLoadError(f"{source}: {MANIFEST_NAME} is not a JSON object")
    return Manifest.from_json(document, source=source)


def verify_model_dir(model_dir: Path, manifest: Manifest) -> None:
    """Raise ModelLoadError unless every file the manifest lists exists with its checksum."""
    for name, expected in sorted(manifest.files.items()):
        path = model_dir / name
        if not path.is_file():
            raise ModelLoadError(f"{model_dir}: file {name} listed in the manifest is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelLoadError(
                f"{model_dir}: checksum mismatch for {name} "
                f"(manifest {expected[:12]}..., file {actual[:12]}...): corrupt or incomplete copy"
            )


def content_version(model_dir: Path) -> str:
    """A version derived from file contents, for model directories without a manifest.

    Cache keys include the version, so a changed model must never reuse old predictions.
    """
    digest = hashlib.sha256()
    for path in model_files(model_dir):
        digest.update(path.as_posix().encode("utf-8") + b"\0")
        digest.update(sha256_file(model_dir / path).encode("ascii") + b"\n")
    return "sha256-" + digest.hexdigest()[:12]


def model_identity(model_dir: Path, labels: list[str]) -> tuple[str, str]:
    """(name, version) of a model directory: from its manifest, whose labels must match the
    model's own, or else the directory name and a content-derived version."""
    manifest = read_manifest(model_dir)
    if manifest is None:
        return model_dir.resolve().name, content_version(model_dir)
    if manifest.labels and manifest.labels != labels:
        raise ModelLoadError(
            f"{model_dir}: manifest labels {manifest.labels} differ from the model's own "
            f"labels {labels}"
        )
    return manifest.name, manifest.version
