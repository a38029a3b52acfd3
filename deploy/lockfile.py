"""poetry.lock as pip constraints, and whether it still matches pyproject.toml.

poetry.lock pins the whole dependency graph. Poetry installs from it directly; `make`, CI and
the images install with pip (pip is what can take torch's CPU build from a wheel directory or
PyTorch's CPU index), through `constraints.txt`, the lock's pins written as pip constraints:

    python -m deploy.lockfile            # rewrite constraints.txt from poetry.lock
    python -m deploy.lockfile --check    # fail when poetry.lock or constraints.txt is stale

`make lock` runs `poetry lock` and then the first command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
POETRY_LOCK = REPO / "poetry.lock"
CONSTRAINTS = REPO / "constraints.txt"

# The parts of pyproject.toml that Poetry hashes into the lock's `content-hash`.
PROJECT_KEYS = ("requires-python", "dependencies", "optional-dependencies")
POETRY_KEYS = ("dependencies", "source", "extras", "dev-dependencies", "group")
LEGACY_POETRY_KEYS = ("dependencies", "source", "extras", "dev-dependencies")

CUDA_PREFIXES = ("nvidia-", "cuda-")

HEADER = """\
# Generated from poetry.lock by `python -m deploy.lockfile` (`make lock`); do not edit.
# Every install of mtc with pip uses it: pip install --constraint constraints.txt '.[...]'
# torch's pin is met by its CPU build (2.13.0+cpu) from a wheel directory or PyTorch's CPU
# index; the CUDA packages pinned below are then never installed.
"""


def content_hash(pyproject: dict[str, Any]) -> str:
    """The `content-hash` Poetry writes into poetry.lock for this pyproject.toml."""
    project = pyproject.get("project", {})
    groups = pyproject.get("dependency-groups", {})
    poetry = pyproject.get("tool", {}).get("poetry", {})
    project_content = {key: project[key] for key in PROJECT_KEYS if key in project}
    poetry_content: dict[str, Any] = {}
    for key in POETRY_KEYS:
        value = poetry.get(key)
        if value is None and (key not in LEGACY_POETRY_KEYS or project_content or groups):
            continue
        poetry_content[key] = value
    content: dict[str, Any] = {}
    if project_content:
        content["project"] = project_content
    if groups:
        content["dependency-groups"] = groups
    if content:
        content["tool"] = {"poetry": poetry_content}
    else:
        content = poetry_content
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def locked_versions(lock: dict[str, Any]) -> dict[str, str]:
    """Package name (normalised) -> the version the lock pins, for every package it pins once.

    Packages pinned at several versions under different markers are left out; those are only
    CUDA libraries of torch's PyPI build, which its CPU build does not install.
    """
    versions: dict[str, set[str]] = {}
    for package in lock["package"]:
        versions.setdefault(normalise(package["name"]), set()).add(package["version"])
    several = sorted(name for name, found in versions.items() if len(found) > 1)
    unexpected = [name for name in several if not name.startswith(CUDA_PREFIXES)]
    if unexpected:
        # One Python and one set of extras: anything else pinned twice is a resolution bug.
        raise ValueError(f"poetry.lock pins {unexpected} at several versions")
    return {name: found.pop() for name, found in versions.items() if len(found) == 1}


def normalise(name: str) -> str:
    """PEP 503 normalised project name."""
    return "-".join(name.lower().replace("_", "-").replace(".", "-").split("-"))


def constraints_text(lock: dict[str, Any]) -> str:
    """The lock's pins as a pip constraints file."""
    pins = sorted(locked_versions(lock).items())
    return HEADER + "".join(f"{name}=={version}\n" for name, version in pins)


def problems(root: Path = REPO) -> list[str]:
    """Why poetry.lock or constraints.txt no longer describe pyproject.toml (empty if fine)."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    lock_path = root / "poetry.lock"
    if not lock_path.is_file():
        return ["poetry.lock is missing: run `make lock`"]
    lock = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    found = []
    if lock["metadata"]["content-hash"] != content_hash(pyproject):
        found.append("pyproject.toml changed since poetry.lock was written: run `make lock`")
    constraints = root / "constraints.txt"
    current = constraints.read_text(encoding="utf-8") if constraints.is_file() else ""
    if current != constraints_text(lock):
        found.append("constraints.txt is not poetry.lock's export: run `make lock`")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.lockfile", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    if not args.check:
        lock = tomllib.loads(POETRY_LOCK.read_text(encoding="utf-8"))
        CONSTRAINTS.write_text(constraints_text(lock), encoding="utf-8")
    found = problems()
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
