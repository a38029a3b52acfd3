"""Tools only the tests run: every kubectl on this machine, one per minor version (the
deployment tests render with each, so the manifests are known to work with older clients
than the venv's), and Prometheus' promtool and server."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from deploy.external_tools import find_tool, kubectl


def kubectl_version(path: Path) -> tuple[int, int]:
    """The (major, minor) client version of a kubectl binary."""
    result = subprocess.run(
        [str(path), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    client = json.loads(result.stdout)["clientVersion"]
    # Vendor builds write minors such as "27+".
    return int(client["major"]), int(client["minor"].rstrip("+"))


def every_kubectl() -> list[tuple[tuple[int, int], Path]]:
    """Every kubectl on this machine, one per minor version, oldest first: the venv's, the one
    on PATH, and the versioned binaries beside it (Google Cloud SDK's `kubectl.1.NN`)."""
    candidates = [kubectl()]
    if on_path := shutil.which("kubectl"):
        resolved = Path(on_path).resolve()
        candidates += [resolved, *sorted(resolved.parent.glob("kubectl.1.*"))]
    found: dict[tuple[int, int], Path] = {}
    for candidate in candidates:
        found.setdefault(kubectl_version(candidate), candidate)
    return sorted(found.items())


def promtool() -> Path:
    """promtool, from Debian's prometheus package."""
    return find_tool("promtool", "apt-get install --no-install-recommends prometheus")


def prometheus() -> Path:
    """The Prometheus server, from Debian's prometheus package."""
    return find_tool("prometheus", "apt-get install --no-install-recommends prometheus")
