"""poetry.lock matches pyproject.toml, constraints.txt is its export, and the install honours it."""

from __future__ import annotations

import shutil
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from deploy.lockfile import (
    POETRY_LOCK,
    REPO,
    constraints_text,
    content_hash,
    locked_versions,
    normalise,
    problems,
)


def test_lock_and_constraints_are_current() -> None:
    assert problems() == []


def test_content_hash_is_poetrys() -> None:
    # The hash poetry wrote when it resolved the lock, recomputed from pyproject.toml.
    lock = tomllib.loads(POETRY_LOCK.read_text(encoding="utf-8"))
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert content_hash(pyproject) == lock["metadata"]["content-hash"]


def _copy(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "poetry.lock", "constraints.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def test_a_dependency_added_without_relocking_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(
        text.replace('tqdm = ">=4.66,<5"', 'tqdm = ">=4.66,<5"\nrich = ">=13"', 1), encoding="utf-8"
    )
    assert any("pyproject.toml changed" in problem for problem in problems(root))


def test_a_hand_edited_constraints_file_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    constraints = root / "constraints.txt"
    constraints.write_text(constraints.read_text().replace("fastapi==", "fastapi>="))
    assert any("constraints.txt" in problem for problem in problems(root))


def _declared() -> list[tuple[str, str]]:
    """(name, PEP 440 specifier) of every dependency pyproject.toml declares."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    declared = []
    for name, value in pyproject["tool"]["poetry"]["dependencies"].items():
        if name == "python":
            continue
        version = value if isinstance(value, str) else value["version"]
        # Poetry writes an exact pin as the bare version.
        declared.append((name, f"=={version}" if version[0].isdigit() else version))
    for line in pyproject["dependency-groups"]["dev"]:
        requirement = Requirement(line)
        declared.append((requirement.name, str(requirement.specifier)))
    return declared


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    locked = locked_versions(tomllib.loads(POETRY_LOCK.read_text(encoding="utf-8")))
    declared = _declared()
    assert len(declared) > 40
    for name, specifier in declared:
        assert normalise(name) in locked, f"{name} is not in poetry.lock"
        version = locked[normalise(name)]
        assert SpecifierSet(specifier).contains(version, prereleases=True), (
            f"{name}{specifier}: the lock pins {version}"
        )


def test_the_virtualenv_holds_the_locked_versions() -> None:
    # `make install` installs through constraints.txt: every locked package that is installed
    # has the locked version (torch's CPU build differs only by its local label, +cpu).
    locked = locked_versions(tomllib.loads(POETRY_LOCK.read_text(encoding="utf-8")))
    checked = 0
    for distribution in metadata.distributions():
        name = normalise(distribution.metadata["Name"])
        if name not in locked or name == "mtc":
            continue
        installed = Version(distribution.version)
        assert Version(installed.public) == Version(locked[name]), (
            f"{name} {installed} installed, {locked[name]} locked"
        )
        checked += 1
    assert checked > 100


def test_constraints_pin_one_version_per_package() -> None:
    text = constraints_text(tomllib.loads(POETRY_LOCK.read_text(encoding="utf-8")))
    pins = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all("==" in pin for pin in pins)
    assert len({pin.split("==")[0] for pin in pins}) == len(pins)
    assert "torch==2.13.0" in pins


def test_the_gateway_image_extra_installs_what_its_form_routes_need() -> None:
    """FastAPI refuses to build a route with form or file fields without python-multipart:
    the gateway image (extra `gateway`) would not start. Caught once only by the pod test."""
    from gateway.app import create_app
    from gateway.local_stack import DEFAULT_MODELS, TASK_KIND_OF_SERVICE
    from gateway.settings import GatewaySettings

    kinds = {
        task: TASK_KIND_OF_SERVICE[module]
        for task, (module, _) in DEFAULT_MODELS.items()
        if module in TASK_KIND_OF_SERVICE
    }
    upstreams = {task: f"http://127.0.0.1:{9000 + n}" for n, task in enumerate(DEFAULT_MODELS)}
    app = create_app(
        GatewaySettings(upstreams=upstreams, task_kinds=kinds, authentication="anonymous")
    )
    form_types = {"multipart/form-data", "application/x-www-form-urlencoded"}
    form_routes = [
        path
        for path, operations in app.openapi()["paths"].items()
        for operation in operations.values()
        if form_types & set(operation.get("requestBody", {}).get("content", {}))
    ]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["poetry"]["extras"]

    assert form_routes, "no form route found: the check would pass vacuously"
    assert "python-multipart" in extras["gateway"], form_routes
