"""The kustomize tree's per-model files are generated from the Helm chart
(`python -m deploy.model_manifests`): the committed ones are current, and a change to the
chart's values reaches kustomize's rendering only through the generator."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from deploy.model_manifests import Tree, generated_files, main, stale_files, write
from deploy.render import REPO, Manifest, kustomize, without_hash_suffix


def copy_of_the_tree(destination: Path) -> Tree:
    for part in ("charts", "base", "overlays", "components"):
        shutil.copytree(REPO / part, destination / part)
    return Tree(destination)


def edit_values(tree: Tree, edit: dict[str, dict[str, object]]) -> None:
    path = tree.chart / "values.yaml"
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    for model, changes in edit.items():
        values["models"][model].update(changes)
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")


def config_maps(objects: list[Manifest]) -> dict[str, Manifest]:
    return {
        without_hash_suffix(o["metadata"]["name"]): o for o in objects if o["kind"] == "ConfigMap"
    }


def test_the_committed_files_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0, capsys.readouterr().err


def test_a_changed_setting_reaches_kustomize_through_the_generator(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    before = config_maps(kustomize(tree.root / "base"))["mtc-sentiment"]
    sentiment = yaml.safe_load((tree.chart / "values.yaml").read_text())["models"]["sentiment"]
    edit_values(tree, {"sentiment": {"config": {**sentiment["config"], "MTC_MAX_BATCH_SIZE": "7"}}})

    files = generated_files(tree)
    assert stale_files(tree, files) == ["base/models/sentiment.env: out of date"]
    assert main(["--check", "--tree", str(tree.root)]) == 1

    write(tree, files)
    assert stale_files(tree, generated_files(tree)) == []
    after = config_maps(kustomize(tree.root / "base"))["mtc-sentiment"]
    assert after["data"]["MTC_MAX_BATCH_SIZE"] == "7"
    # A new name, so the Deployments that read it roll.
    assert after["metadata"]["name"] != before["metadata"]["name"]


def test_a_disabled_model_leaves_every_rendering(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    edit_values(tree, {"disaster": {"enabled": False}})
    files = generated_files(tree)
    assert "base/models/disaster.env: not generated any more" in stale_files(tree, files)
    assert "components/canary/disaster/canary.yaml: not generated any more" in stale_files(
        tree, files
    )
    write(tree, files)
    assert not (tree.base_models / "disaster.env").exists()
    assert not (tree.canaries / "disaster").exists()
    for overlay in ("base", "overlays/prod"):
        objects = kustomize(tree.root / overlay)
        assert not [o for o in objects if "disaster" in o["metadata"]["name"]], overlay
        gateway = config_maps(objects)["mtc-gateway"]["data"]
        assert "disaster" not in yaml.safe_load(gateway["MTC_GATEWAY_UPSTREAMS"])


def test_a_hand_edit_of_a_generated_file_is_reported(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    budgets = tree.prod_models / "poddisruptionbudgets.yaml"
    budgets.write_text(budgets.read_text().replace("maxUnavailable: 1", "maxUnavailable: 2"))
    (tree.base_models / "notes.txt").write_text("kept by hand\n")
    assert sorted(stale_files(tree, generated_files(tree))) == [
        "base/models/notes.txt: not generated any more",
        "overlays/prod/models/poddisruptionbudgets.yaml: out of date",
    ]


def test_a_wrong_tree_or_a_chart_that_fails_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--tree", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"no chart at {tmp_path}/charts/mtc" in capsys.readouterr().err

    tree = copy_of_the_tree(tmp_path / "copy")
    edit_values(tree, {"sentiment": {"canary": {"enabled": True, "modelUri": ""}}})
    assert main(["--check", "--tree", str(tree.root)]) == 2
    error = capsys.readouterr().err
    assert "cannot render the chart" in error
    assert "models.sentiment.canary.modelUri" in error
