"""Shipping a model kind, as docs/add-a-kind.md says: in a copy of the tree, the throwaway
`wordcount` kind plus exactly the files the guide lists give an image the build script
knows, a Dockerfile lint that passes, a Grafana dashboard, and a Deployment in both the
kustomize base and the Helm chart."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from deploy.render import helm_template, kustomize
from tests.support.throwaway_kind import REPO, tree_with_a_new_kind

GUIDE = REPO / "docs" / "add-a-kind.md"
COPIED = (
    "services",
    "gateway",
    "deploy",
    "docker",
    "base",
    "charts",
    "components",
    "overlays",
    "pyproject.toml",
    "constraints.txt",
)
TASK = "words"


def guide_files() -> set[str]:
    """The files the guide's shipping table lists, with `<task>` made this test's task."""
    text = GUIDE.read_text(encoding="utf-8")
    table = text.split("<!-- ship-a-kind files -->")[1].split("<!-- end ship-a-kind files -->")[0]
    return {
        row.split("`")[1].replace("<task>", TASK)
        for row in table.splitlines()
        if row.startswith("| `")
    }


def edit_the_listed_files(tree: Path) -> None:
    """What a maintainer writes, by the guide, to ship the `words` task of `wordcount`."""
    pyproject = tree / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    text = text.replace("[tool.poetry.extras]\n", "[tool.poetry.extras]\nwordcount = []\n", 1)
    pyproject.write_text(text, encoding="utf-8")

    values_path = tree / "charts" / "mtc" / "values.yaml"
    values = yaml.safe_load(values_path.read_text(encoding="utf-8"))
    entry = json.loads(json.dumps(values["models"]["pose"]))
    entry.update(kind="wordcount", task=TASK, modelUri=f"s3://mtc-models/{TASK}/1")
    entry["image"]["repository"] = "mtc-wordcount"
    values["models"][TASK] = entry
    values_path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")

    prod_path = tree / "charts" / "mtc" / "ci" / "prod-values.yaml"
    prod = yaml.safe_load(prod_path.read_text(encoding="utf-8"))
    prod["models"][TASK] = {
        "image": {"repository": "registry.example.com/mtc/mtc-wordcount", "tag": "0.1.0"},
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 5},
    }
    prod_path.write_text(yaml.safe_dump(prod, sort_keys=False), encoding="utf-8")

    overlay_path = tree / "overlays" / "prod" / "kustomization.yaml"
    overlay = overlay_path.read_text(encoding="utf-8")
    image = (
        "  - name: mtc-wordcount\n"
        "    newName: registry.example.com/mtc/mtc-wordcount\n"
        "    newTag: 0.1.0\n"
    )
    overlay_path.write_text(overlay.replace("images:\n", "images:\n" + image, 1), encoding="utf-8")


def changed_outside_the_package(tree: Path) -> set[str]:
    """Files of the copy that differ from, or are not in, the repository, but for the kind's
    own package."""

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    changed = set()
    for part in COPIED:
        root = tree / part
        for path in [root] if root.is_file() else root.rglob("*"):
            relative = path.relative_to(tree)
            if not path.is_file() or relative.parts[:2] == ("services", "wordcount"):
                continue
            original = REPO / relative
            if not original.is_file() or digest(original) != digest(path):
                changed.add(relative.as_posix())
    return changed


def run_in(tree: Path, *module: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, "-m", *module],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_guide_lists_at_most_six_files() -> None:
    assert 0 < len(guide_files()) <= 6, guide_files()


def test_a_kind_ships_with_the_files_the_guide_lists(tmp_path: Path) -> None:
    tree = tree_with_a_new_kind(tmp_path / "tree", COPIED)
    edit_the_listed_files(tree)
    assert changed_outside_the_package(tree) == guide_files()
    # The stale generated files are caught before they are written.
    stale = run_in(tree, "deploy.model_manifests", "--check")
    assert stale.returncode == 1
    assert "base/models/models.yaml: out of date" in stale.stderr
    assert f"base/models/{TASK}.env: missing" in stale.stderr

    listed = run_in(tree, "deploy.images")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [row[0] for row in rows] == ["text", "pose", "audio", "wordcount", "gateway", "worker"]
    assert rows[3] == [
        "wordcount",
        "docker/service.Dockerfile",
        "400",
        "model",
        "SERVICE_EXTRA=wordcount SERVICE_MODULE=services.wordcount",
    ]
    lint = run_in(tree, "deploy.dockerfile_lint")
    assert lint.returncode == 0, lint.stderr

    for generator in ("deploy.observability.generate", "deploy.model_manifests"):
        generated = run_in(tree, generator)
        assert generated.returncode == 0, generated.stderr
    regenerated = changed_outside_the_package(tree) - guide_files()
    assert {path.split("/")[0] for path in regenerated} == {
        "base",
        "overlays",
        "components",
        "charts",
    }
    assert all(
        path.startswith(
            (
                "base/models/",
                "overlays/prod/models/",
                "components/istio/models.yaml",
                f"components/canary/{TASK}/",
            )
        )
        or "dashboards" in path
        for path in regenerated
    ), regenerated
    dashboard = json.loads((tree / "charts/mtc/dashboards/mtc-wordcount.json").read_text())
    assert dashboard["uid"] == "mtc-wordcount"
    assert dashboard["title"] == "mtc / Wordcount service"

    for objects in (kustomize(tree / "base"), helm_template(chart=tree / "charts" / "mtc")):
        (deployment,) = [
            o
            for o in objects
            if o["kind"] == "Deployment" and o["metadata"]["name"] == f"mtc-{TASK}"
        ]
        images = {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
        assert {re.sub(r":.*", "", image) for image in images} == {"mtc-wordcount"}
        task_kinds = [
            json.loads(o["data"]["MTC_GATEWAY_TASK_KINDS"])
            for o in objects
            if o["kind"] == "ConfigMap" and "MTC_GATEWAY_TASK_KINDS" in o.get("data", {})
        ]
        assert task_kinds
        assert all(kinds[TASK] == "wordcount" for kinds in task_kinds)

    # Production too: the prod overlay (with Istio, disruption budgets, pinned images) renders
    # the same objects as the chart with its prod values, the new task's among them.
    equivalent = run_in(tree, "deploy.check_chart_equivalence")
    assert equivalent.returncode == 0, equivalent.stdout + equivalent.stderr
    prod = {(o["kind"], o["metadata"]["name"]): o for o in kustomize(tree / "overlays" / "prod")}
    assert prod[("HorizontalPodAutoscaler", f"mtc-{TASK}")]["spec"]["maxReplicas"] == 5
    assert ("PodDisruptionBudget", f"mtc-{TASK}") in prod
    assert ("DestinationRule", f"mtc-{TASK}") in prod
    routes = {route["name"] for route in prod[("VirtualService", "mtc")]["spec"]["http"]}
    assert TASK in routes
    assert (tree / "components" / "canary" / TASK / "kustomization.yaml").is_file()


def test_a_kind_without_its_extra_fails_the_lint(tmp_path: Path) -> None:
    tree = tree_with_a_new_kind(tmp_path / "tree", COPIED)
    lint = run_in(tree, "deploy.dockerfile_lint")
    assert lint.returncode == 1
    assert "image wordcount: extra 'wordcount' is not in pyproject.toml's extras" in lint.stderr
