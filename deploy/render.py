"""Render the kustomize directories and the Helm chart into lists of Kubernetes objects."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from deploy.external_tools import REPO, helm, kubectl

Manifest = dict[str, Any]
CHART = REPO / "charts" / "mtc"
PROD_VALUES = CHART / "ci" / "prod-values.yaml"
RELEASE = "mtc"
NAMESPACE = "mtc"


def _run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
    return result.stdout


def parse(text: str) -> list[Manifest]:
    """The objects of a multi-document YAML text (empty documents dropped)."""
    return [document for document in yaml.safe_load_all(text) if document]


def kustomize_text(directory: Path) -> str:
    """`kubectl kustomize DIRECTORY` output."""
    return _run([str(kubectl()), "kustomize", str(directory)])


def kustomize(directory: Path) -> list[Manifest]:
    """The objects `kubectl kustomize DIRECTORY` renders."""
    return parse(kustomize_text(directory))


def helm_text(*values: Path, chart: Path = CHART) -> str:
    """`helm template` of the chart as release `mtc` in namespace `mtc`."""
    command = [str(helm()), "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for file in values:
        command += ["--values", str(file)]
    return _run(command)


def helm_template(*values: Path, chart: Path = CHART) -> list[Manifest]:
    """The objects the chart renders with the given values files."""
    return parse(helm_text(*values, chart=chart))
