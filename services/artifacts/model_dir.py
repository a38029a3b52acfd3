"""Write a model directory atomically: it appears complete, with its manifest, or not at all.

Shared by every service's builders and trainers (services never import each other), with
the check that leaves a directory already holding a verified build alone (`current_build`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.artifacts.manifest import MANIFEST_NAME, Manifest, read_manifest, verify_model_dir
from services.core.errors import ModelLoadError


@dataclass(frozen=True)
class BuildResult:
    """What a starter build did."""

    out: Path
    built: bool
    """False when `out` already held this exact, verified build."""
    manifest: Manifest
    seconds: float


def current_build(
    out: Path,
    name: str,
    version: str,
    logger: logging.Logger,
    matches: Callable[[Manifest], bool] = lambda manifest: True,
    *,
    force: bool,
) -> Manifest | None:
    """The manifest of `out` when it holds a verified build of `name` `version` that
    `matches`; None (logged on `logger` when `out` fails to verify) when it must be rebuilt,
    and always when `force`."""
    if force:
        return None
    try:
        manifest = read_manifest(out)
        if (
            manifest is None
            or (manifest.name, manifest.version) != (name, version)
            or not matches(manifest)
        ):
            return None
        verify_model_dir(out, manifest)
    except ModelLoadError as exc:
        logger.warning("%s will be rebuilt: %s", out, exc)
        return None
    return manifest


class ModelDirConflict(RuntimeError):
    """The output directory holds something that is not an earlier build of this model."""


def write_model_dir(
    out: Path,
    fill: Callable[[Path], Manifest],
    *,
    replaceable: Callable[[Manifest], bool],
) -> Manifest:
    """Create `out` through `fill(staging_dir)`, which must write the manifest last.

    The model is written into a hidden sibling directory and renamed into place, so `out`
    is never a half-written model. An existing `out` is replaced only when it is empty or
    its manifest satisfies `replaceable`; otherwise `ModelDirConflict` is raised.
    """
    out = out.absolute()
    if out.exists() and not _may_replace(out, replaceable):
        raise ModelDirConflict(
            f"{out} exists and is neither empty nor an earlier build of this model; "
            "refusing to replace it (remove it or choose another output directory)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        staging.chmod(0o755)  # mkdtemp is owner-only; the serving user may be another account
        manifest = fill(staging)
        if not (staging / MANIFEST_NAME).is_file():
            raise RuntimeError("internal: the model directory was filled without a manifest")
        for path in staging.rglob("*"):
            if path.is_file():
                path.chmod(0o644)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _may_replace(out: Path, replaceable: Callable[[Manifest], bool]) -> bool:
    if not out.is_dir():
        return False
    if not any(out.iterdir()):
        return True
    try:
        manifest = read_manifest(out)
    except ModelLoadError:
        return False
    return manifest is not None and replaceable(manifest)


def _swap_into_place(staging: Path, out: Path) -> None:
    # rename() is atomic but cannot replace a non-empty directory, so an existing build is
    # moved aside first: between the two renames `out` is briefly absent, never half-built.
    if not out.exists():
        os.replace(staging, out)
        return
    retired = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
    out.rename(retired)
    try:
        staging.rename(out)
    except BaseException:
        retired.rename(out)
        raise
    shutil.rmtree(retired, ignore_errors=True)
