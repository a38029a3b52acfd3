"""Canary releases in the Kubernetes delivery: components/canary/<task> with and without Istio,
and the chart's `models.<name>.canary` values. The flow itself (split, promote, roll back) runs
in tests/e2e/test_model_release.py; here: the objects render, validate, leave the stable
version untouched and route the configured share."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.check_chart_equivalence import compare
from deploy.render import OLDEST_KUBECTL, PROD_VALUES, REPO, Manifest, helm_template, kustomize
from deploy.validate import validate
from gateway.settings import GatewaySettings
from tests.support.deploy_tools import every_kubectl

TASKS = ("sentiment", "disaster", "pose", "audio")
CANARY_URI = "s3://mtc-models/{task}/1.1.0"
CANARY_RELEASE = """\
apiVersion: mtc.example.com/v1
kind: CanaryRelease
metadata:
  name: mtc-{task}
  annotations:
    config.kubernetes.io/local-config: "true"
spec:
  modelUri: s3://mtc-models/{task}/1.1.0
  replicas: 2
  weights: {{stable: 90, canary: 10}}
"""
# Without Istio: the gateway's own split (what docs/deploy.md tells the operator to add).
GATEWAY_UPSTREAMS = {
    "sentiment": ["http://mtc-sentiment", "http://mtc-sentiment-canary"],
    "disaster": "http://mtc-disaster",
    "pose": "http://mtc-pose",
    "audio": "http://mtc-audio",
}
GATEWAY_WEIGHTS = {"sentiment": {"http://mtc-sentiment": 90, "http://mtc-sentiment-canary": 10}}


def release_overlay(tmp_path: Path, task: str, *, overlay: str = "prod") -> Path:
    """overlays/<overlay> with a canary of `task`, as an operator adds one: its CanaryRelease
    among the overlay's resources and its component last. Rendered from a copy of the
    delivery, so the component sits in the overlay that lists base (docs/deploy.md)."""
    root = tmp_path / "delivery"
    for part in ("base", "components", f"overlays/{overlay}"):
        shutil.copytree(REPO / part, root / part)
    directory = root / "overlays" / overlay
    (directory / "canary-release.yaml").write_text(CANARY_RELEASE.format(task=task))
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    kustomization["resources"].append("canary-release.yaml")
    kustomization.setdefault("components", []).append(f"../../components/canary/{task}")
    if overlay != "prod":
        kustomization.setdefault("configMapGenerator", []).append(
            {
                "name": "mtc-gateway",
                "behavior": "merge",
                "literals": [
                    f"MTC_GATEWAY_UPSTREAMS={json.dumps(GATEWAY_UPSTREAMS)}",
                    f"MTC_GATEWAY_UPSTREAM_WEIGHTS={json.dumps(GATEWAY_WEIGHTS)}",
                ],
            }
        )
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


def by_identity(manifests: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    return {(m["kind"], m["metadata"]["name"]): m for m in manifests}


def without_canary_changes(template: dict[str, Any]) -> dict[str, Any]:
    """A pod template without what sets a canary's apart from the stable one: its name
    label, version label, the name in its spread constraint and its model URI."""
    copied: dict[str, Any] = json.loads(json.dumps(template))
    labels = copied["metadata"]["labels"]
    labels.pop("version", None)
    labels["app.kubernetes.io/name"] = labels["app.kubernetes.io/name"].removesuffix("-canary")
    for constraint in copied["spec"].get("topologySpreadConstraints", []):
        selector = constraint["labelSelector"]["matchLabels"]
        selector["app.kubernetes.io/name"] = selector["app.kubernetes.io/name"].removesuffix(
            "-canary"
        )
    for container in copied["spec"]["initContainers"]:
        container["env"] = [item for item in container["env"] if item["name"] != "MTC_MODEL_URI"]
    return copied


@pytest.fixture(scope="module")
def prod() -> list[Manifest]:
    return kustomize(REPO / "overlays" / "prod")


def test_every_task_has_the_same_canary_component_under_its_own_name() -> None:
    sentiment = REPO / "components" / "canary" / "sentiment"
    for task in TASKS:
        for file in ("kustomization.yaml", "canary.yaml"):
            expected = (sentiment / file).read_text().replace("sentiment", task)
            assert (REPO / "components" / "canary" / task / file).read_text() == expected


@pytest.mark.parametrize("task", TASKS)
def test_with_istio_a_canary_takes_its_weight_and_leaves_the_stable_version_alone(
    tmp_path: Path, task: str, prod: list[Manifest]
) -> None:
    manifests = kustomize(release_overlay(tmp_path, task))

    assert validate(manifests) == []
    objects, before = by_identity(manifests), by_identity(prod)
    stable, canary = f"mtc-{task}", f"mtc-{task}-canary"
    assert set(objects) - set(before) == {("Deployment", canary), ("Service", canary)}
    assert not any(m["kind"] == "CanaryRelease" for m in manifests), "local config only"
    changed = {key for key in before if objects[key] != before[key]}
    # The stable Deployment, its ConfigMap, Service, HPA, PDB: untouched, so never restarted.
    assert changed == {("VirtualService", stable)}

    route = objects[("VirtualService", stable)]["spec"]["http"][0]["route"]
    assert [(r["destination"]["host"], r["weight"]) for r in route] == [
        (stable, 90),
        (canary, 10),
    ]
    deployment = objects[("Deployment", canary)]
    template = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 2
    assert template["metadata"]["labels"]["version"] == "canary"
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == canary
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == canary
    service = objects[("Service", canary)]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    fetch = next(c for c in template["spec"]["initContainers"] if c["name"] == "fetch-model")
    fetched = [item["value"] for item in fetch["env"] if item["name"] == "MTC_MODEL_URI"]
    assert fetched == [CANARY_URI.format(task=task)]
    config_maps = {m["metadata"]["name"] for m in manifests if m["kind"] == "ConfigMap"}
    for container in template["spec"]["initContainers"] + template["spec"]["containers"]:
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in config_maps
    # Everything else is the stable pod's: image, settings, sidecar, probes, resources.
    stable_template = objects[("Deployment", stable)]["spec"]["template"]
    assert without_canary_changes(template) == stable_template


def test_every_kubectl_renders_the_canary_the_same(tmp_path: Path) -> None:
    directory = release_overlay(tmp_path, "sentiment")
    kubectls = [(v, path) for v, path in every_kubectl() if v >= OLDEST_KUBECTL]
    newest = sorted(yaml.safe_dump(m) for m in kustomize(directory, kubectls[-1][1]))
    for version, path in kubectls[:-1]:
        rendered = sorted(yaml.safe_dump(m) for m in kustomize(directory, path))
        assert rendered == newest, f"kubectl {version[0]}.{version[1]}"


def test_without_istio_the_gateway_splits_the_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = kustomize(release_overlay(tmp_path, "sentiment", overlay="dev"))

    assert validate(manifests) == []
    assert not any(m["kind"] == "VirtualService" for m in manifests)
    config = next(
        m
        for m in manifests
        if m["kind"] == "ConfigMap" and m["metadata"]["name"].startswith("mtc-gateway-")
    )
    for name, value in config["data"].items():
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    canary_url = "http://mtc-sentiment-canary"
    assert settings.upstream_weights["sentiment"] == {"http://mtc-sentiment": 90, canary_url: 10}
    services = {m["metadata"]["name"] for m in manifests if m["kind"] == "Service"}
    assert canary_url.removeprefix("http://") in services


# --------------------------------------------------------------------------- the chart


def canary_values(tmp_path: Path, *, enabled: bool = True, model_uri: str | None = None) -> Path:
    path = tmp_path / "canary-values.yaml"
    canary: dict[str, Any] = {"enabled": enabled, "weight": 10, "replicas": 2}
    canary["modelUri"] = CANARY_URI.format(task="sentiment") if model_uri is None else model_uri
    path.write_text(yaml.safe_dump({"models": {"sentiment": {"canary": canary}}}))
    return path


def test_the_chart_renders_the_same_canary_as_the_component(tmp_path: Path) -> None:
    kustomized = kustomize(release_overlay(tmp_path, "sentiment"))
    charted = helm_template(PROD_VALUES, canary_values(tmp_path))

    assert validate(charted) == []
    assert compare(kustomized, charted) == []


def test_the_charts_canary_is_off_by_default() -> None:
    names = {m["metadata"]["name"] for m in helm_template(PROD_VALUES)}
    assert not any(name.endswith("-canary") for name in names)


def test_without_istio_the_charts_gateway_splits_the_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = helm_template(canary_values(tmp_path))

    assert validate(manifests) == []
    assert not any(m["kind"] == "VirtualService" for m in manifests)
    config = next(
        m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "mtc-gateway"
    )
    for name, value in config["data"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MTC_GATEWAY_API_KEYS_FILE", str(tmp_path / "keys"))
    assert GatewaySettings().upstream_weights == {
        "sentiment": {"http://mtc-sentiment": 90, "http://mtc-sentiment-canary": 10}
    }


def test_a_canary_without_a_model_uri_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="canary"):
        helm_template(canary_values(tmp_path, model_uri=""))
