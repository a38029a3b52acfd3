"""Render the kustomize directories and the Helm chart into lists of Kubernetes objects, and
write the generated files of the deploy commands or find the stale ones (`--check`)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from deploy.external_tools import REPO, helm, kubectl

Manifest = dict[str, Any]
CHART = REPO / "charts" / "mtc"
PROD_VALUES = CHART / "ci" / "prod-values.yaml"
RELEASE = "mtc"
NAMESPACE = "mtc"
# The oldest kubectl (and its built-in kustomize, 5.0.1) every overlay and component renders
# with; README.md and docs/deploy.md state it, tests/unit/test_deploy_manifests.py checks it.
OLDEST_KUBECTL = (1, 27)
# kustomize names generated objects NAME-HASH: ten characters from the alphabet of its hasher
# (hex digits with 0, 1, 3, a, e replaced by g, h, k, m, t).
KUSTOMIZE_HASH_SUFFIX = re.compile(r"-[2456789bcdfghkmt]{10}$")


def _run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
    return result.stdout


def parse(text: str) -> list[Manifest]:
    """The objects of a multi-document YAML text (empty documents dropped)."""
    return [document for document in yaml.safe_load_all(text) if document]


def kustomize(directory: Path, kubectl_binary: Path | None = None) -> list[Manifest]:
    """The objects `kubectl kustomize DIRECTORY` renders (with the venv's kubectl unless one
    is named)."""
    return parse(_run([str(kubectl_binary or kubectl()), "kustomize", str(directory)]))


def without_hash_suffix(name: str) -> str:
    """A generated ConfigMap's or Secret's name as written in the kustomization
    (`mtc-gateway-7h2f9m4c5b` -> `mtc-gateway`); other names unchanged."""
    return KUSTOMIZE_HASH_SUFFIX.sub("", name)


def helm_template(
    *values: Path, chart: Path = CHART, settings: Sequence[str] = ()
) -> list[Manifest]:
    """The objects `helm template` renders of the chart as release `mtc` in namespace `mtc`,
    with the given values files and then `--set KEY=VALUE` settings."""
    command = [str(helm()), "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for file in values:
        command += ["--values", str(file)]
    for setting in settings:
        command += ["--set", setting]
    return parse(_run(command))


def stale_paths(files: Mapping[Path, str], root: Path = Path()) -> list[Path]:
    """The paths of `files` (under `root`) whose file is missing or holds other text."""
    return [
        path
        for path, text in files.items()
        if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text
    ]


def write_files(files: Mapping[Path, str], root: Path = Path()) -> list[Path]:
    """Write `files` (paths under `root`), making their folders; the paths written."""
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    return list(files)
