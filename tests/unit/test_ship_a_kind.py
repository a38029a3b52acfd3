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

    base = tree / "base"
    pose = (base / "pose.yaml").read_text(encoding="utf-8")
    (base / f"{TASK}.yaml").write_text(
        pose.replace("mtc-pose:", "mtc-wordcount:")
        .replace("mtc-pose", f"mtc-{TASK}")
        .replace("settings/pose.env", f"settings/{TASK}.env"),
        encoding="utf-8",
    )
    (base / "settings" / f"{TASK}.env").write_text(
        f"MTC_TASK={TASK}\nMTC_MODEL_URI=s3://mtc-models/{TASK}/1\nMTC_MAX_BATCH_SIZE=32\n",
        encoding="utf-8",
    )
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text(encoding="utf-8"))
    kustomization["resources"].insert(
        kustomization["resources"].index("audio.yaml") + 1, f"{TASK}.yaml"
    )
    pose_config = next(
        entry for entry in kustomization["configMapGenerator"] if entry["name"] == "mtc-pose"
    )
    config = json.loads(json.dumps(pose_config).replace("pose", TASK))
    kustomization["configMapGenerator"].append(config)
    (base / "kustomization.yaml").write_text(yaml.safe_dump(kustomization), encoding="utf-8")

    gateway_env = base / "settings" / "gateway.env"
    lines = []
    for line in gateway_env.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key in {"MTC_GATEWAY_UPSTREAMS", "MTC_GATEWAY_TASK_KINDS"}:
            mapping = json.loads(value)
            mapping[TASK] = f"http://mtc-{TASK}" if key.endswith("UPSTREAMS") else "wordcount"
            line = f"{key}={json.dumps(mapping)}"
        lines.append(line)
    gateway_env.write_text("\n".join(lines) + "\n", encoding="utf-8")

    values_path = tree / "charts" / "mtc" / "values.yaml"
    values = yaml.safe_load(values_path.read_text(encoding="utf-8"))
    entry = json.loads(json.dumps(values["models"]["pose"]))
    entry.update(kind="wordcount", task=TASK, modelUri=f"s3://mtc-models/{TASK}/1")
    entry["image"]["repository"] = "mtc-wordcount"
    values["models"][TASK] = entry
    values_path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")


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


def test_the_guide_lists_six_files() -> None:
    assert len(guide_files()) == 6, guide_files()


def test_a_kind_ships_with_the_files_the_guide_lists(tmp_path: Path) -> None:
    tree = tree_with_a_new_kind(tmp_path / "tree", COPIED)
    edit_the_listed_files(tree)
    assert changed_outside_the_package(tree) == guide_files()

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

    generated = run_in(tree, "deploy.observability.generate")
    assert generated.returncode == 0, generated.stderr
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


def test_a_kind_without_its_extra_fails_the_lint(tmp_path: Path) -> None:
    tree = tree_with_a_new_kind(tmp_path / "tree", COPIED)
    lint = run_in(tree, "deploy.dockerfile_lint")
    assert lint.returncode == 1
    assert "image wordcount: extra 'wordcount' is not in pyproject.toml's extras" in lint.stderr
