"""The kustomize delivery: base, overlays and components render, validate, and hold the
properties the issue asks for (hardened pods, probes, drain time, network policies...)."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from deploy.render import REPO, Manifest, kustomize
from deploy.validate import KUBERNETES_VERSIONS, KUSTOMIZATIONS, validate, validate_builtin

MODELS = ("mtc-sentiment", "mtc-disaster", "mtc-pose", "mtc-audio")
PRESTOP_SECONDS = 5


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    return {path: kustomize(REPO / path) for path in KUSTOMIZATIONS}


def by_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def pod_spec(deployment: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def kustomize_with_components(tmp_path: Path, *components: str) -> list[Manifest]:
    """base plus opt-in components, rendered from a throwaway overlay."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization"]
    # kustomize refuses absolute paths to other kustomizations.
    lines += ["namespace: mtc", "resources:", f"  - {os.path.relpath(REPO / 'base', overlay)}"]
    lines += ["components:"]
    lines += [f"  - {os.path.relpath(REPO / 'components' / name, overlay)}" for name in components]
    (overlay / "kustomization.yaml").write_text("\n".join(lines) + "\n")
    return kustomize(overlay)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_renders_and_validates_strictly(rendered: dict[str, list[Manifest]], path: str) -> None:
    assert len(KUBERNETES_VERSIONS) >= 2
    assert validate(rendered[path]) == []


def test_a_broken_manifest_is_caught(rendered: dict[str, list[Manifest]]) -> None:
    manifests = copy.deepcopy(rendered["overlays/prod"])
    deployment = by_kind(manifests, "Deployment")["mtc-sentiment"]
    container = pod_spec(deployment)["containers"][0]
    container["livenessprobe"] = container.pop("livenessProbe")  # a typo in a field name
    hpa = by_kind(manifests, "HorizontalPodAutoscaler")["mtc-gateway"]
    hpa["spec"]["maxReplicas"] = "six"  # a wrong type
    problems = validate_builtin(manifests, KUBERNETES_VERSIONS[-1])
    assert any("livenessprobe" in line for line in problems), problems
    assert any("six" in line or "maxReplicas" in line for line in problems), problems


def test_broken_custom_resources_are_caught(rendered: dict[str, list[Manifest]]) -> None:
    manifests = copy.deepcopy(rendered["overlays/prod"])
    virtual_service = by_kind(manifests, "VirtualService")["mtc"]
    virtual_service["spec"]["http"][0]["retries"]["attempts"] = "twice"
    monitor = by_kind(manifests, "ServiceMonitor")["mtc"]
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    rule = by_kind(manifests, "PrometheusRule")["mtc"]
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    problems = validate(manifests, versions=())
    assert any("VirtualService/mtc" in line and "attempts" in line for line in problems)
    assert any("ServiceMonitor/mtc" in line and "intervall" in line for line in problems)
    assert any("PrometheusRule/mtc" in line and "expr" in line for line in problems)
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validate([unknown], versions=()) == ["Widget/w: no validator for example.com/v1 Widget"]


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_pod_is_hardened(rendered: dict[str, list[Manifest]], path: str) -> None:
    for name, deployment in by_kind(rendered[path], "Deployment").items():
        spec = pod_spec(deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["enableServiceLinks"] is False, name
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (name, container["name"])
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), (name, container["name"])
            assert {"cpu", "memory"} <= set(resources["limits"]), (name, container["name"])
        # A read-only root needs somewhere to write.
        mounts = {mount["mountPath"] for mount in spec["containers"][0]["volumeMounts"]}
        assert mounts & {"/tmp", "/data", "/run/redis"}, name
    for account in by_kind(rendered[path], "ServiceAccount").values():
        assert account["automountServiceAccountToken"] is False


def test_model_pods_fetch_probe_and_drain(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["overlays/prod"]
    config_maps = by_kind(manifests, "ConfigMap")
    deployments = by_kind(manifests, "Deployment")
    for name in MODELS:
        spec = pod_spec(deployments[name])
        (init,) = spec["initContainers"]
        assert "mtc models pull" in init["args"][0]
        assert init["image"] == spec["containers"][0]["image"]
        server = spec["containers"][0]
        assert env_of(server)["MTC_MODEL_URI"] == "file:///models/model"
        store_uri = config_maps[name]["data"]["MTC_MODEL_URI"]
        assert store_uri.startswith("s3://"), store_uri
        assert server["startupProbe"]["httpGet"]["path"] == "/health/ready"
        assert server["readinessProbe"]["httpGet"]["path"] == "/health/ready"
        assert server["livenessProbe"]["httpGet"]["path"] == "/health/live"
        assert server["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SECONDS)]
        settings = {**config_maps["mtc-config"]["data"], **config_maps[name]["data"]}
        drain = PRESTOP_SECONDS + float(settings["MTC_REQUEST_TIMEOUT_SECONDS"])
        assert spec["terminationGracePeriodSeconds"] >= drain, name
        assert server["ports"] == [{"name": "http", "containerPort": int(settings["MTC_PORT"])}]


def test_gateway_probes_liveness_only_and_drains_the_longest_request(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["overlays/prod"]
    spec = pod_spec(by_kind(manifests, "Deployment")["mtc-gateway"])
    gateway = spec["containers"][0]
    # /health/ready waits for every model: as readiness it would couple all tasks' fate.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert gateway[probe]["httpGet"]["path"] == "/health/live"
    settings = by_kind(manifests, "ConfigMap")["mtc-gateway"]["data"]
    timeouts = json.loads(settings["MTC_GATEWAY_TASK_TIMEOUTS"])
    longest = max([float(settings["MTC_GATEWAY_REQUEST_TIMEOUT_SECONDS"]), *timeouts.values()])
    assert spec["terminationGracePeriodSeconds"] >= PRESTOP_SECONDS + longest
    services = by_kind(manifests, "Service")
    upstreams = json.loads(settings["MTC_GATEWAY_UPSTREAMS"])
    assert sorted(upstreams) == ["audio", "disaster", "pose", "sentiment"]
    for url in upstreams.values():
        assert url.removeprefix("http://") in services, url
    env = env_of(gateway)
    assert env["MTC_GATEWAY_API_KEYS_FILE"] == "/etc/mtc/api-keys/keys"
    assert "MTC_GATEWAY_API_KEYS_FILE" not in env_of(
        pod_spec(by_kind(rendered["overlays/dev"], "Deployment")["mtc-gateway"])["containers"][0]
    ), "dev runs without authentication"


def test_services_and_autoscalers_point_at_real_pods(rendered: dict[str, list[Manifest]]) -> None:
    for path in KUSTOMIZATIONS:
        manifests = rendered[path]
        deployments = by_kind(manifests, "Deployment")
        for name, service in by_kind(manifests, "Service").items():
            pods = [
                d
                for d in deployments.values()
                if service["spec"]["selector"].items()
                <= d["spec"]["template"]["metadata"]["labels"].items()
            ]
            assert len(pods) == 1, (path, name)
            ports = {port["name"] for port in pod_spec(pods[0])["containers"][0]["ports"]}
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in ports, (path, name)
        for name, hpa in by_kind(manifests, "HorizontalPodAutoscaler").items():
            assert hpa["spec"]["scaleTargetRef"]["name"] in deployments, (path, name)
            assert "replicas" not in deployments[name]["spec"], "the HPA owns replicas"


def test_dev_runs_one_replica_and_prod_scales_within_bounds(
    rendered: dict[str, list[Manifest]],
) -> None:
    dev = rendered["overlays/dev"]
    assert by_kind(dev, "HorizontalPodAutoscaler") == {}
    assert all(d["spec"].get("replicas", 1) == 1 for d in by_kind(dev, "Deployment").values())
    prod = rendered["overlays/prod"]
    hpas = by_kind(prod, "HorizontalPodAutoscaler")
    assert sorted(hpas) == sorted([*MODELS, "mtc-gateway"])
    for hpa in hpas.values():
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert sorted(by_kind(prod, "PodDisruptionBudget")) == sorted(hpas)
    for kind in ("Gateway", "VirtualService", "DestinationRule", "ServiceMonitor"):
        assert by_kind(prod, kind), kind
    images = [
        c["image"] for d in by_kind(prod, "Deployment").values() for c in pod_spec(d)["containers"]
    ]
    assert all(":" in image and not image.endswith(":latest") for image in images), images


def test_network_policies_isolate_models_and_redis(rendered: dict[str, list[Manifest]]) -> None:
    policies = by_kind(rendered["base"], "NetworkPolicy")
    deny = policies["mtc-default-deny-ingress"]["spec"]
    assert deny["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny

    def allowed_components(policy: str) -> list[str]:
        (rule,) = policies[policy]["spec"]["ingress"]
        (peer,) = rule["from"]
        (component,) = [
            e for e in peer["podSelector"]["matchExpressions"] if e["key"].endswith("component")
        ]
        values: list[str] = component["values"]
        return values

    assert allowed_components("mtc-model-ingress") == ["gateway", "worker"]
    assert allowed_components("mtc-redis-ingress") == ["model", "gateway", "worker"]


def test_redis_password_comes_from_a_secret(rendered: dict[str, list[Manifest]]) -> None:
    redis = pod_spec(by_kind(rendered["base"], "Deployment")["mtc-redis"])["containers"][0]
    assert env_of(redis)["REDIS_PASSWORD"] == {
        "secretKeyRef": {"name": "mtc-redis", "key": "password"}
    }
    assert "requirepass" in redis["args"][0]
    assert "$REDIS_PASSWORD" in redis["args"][0]
    server = pod_spec(by_kind(rendered["base"], "Deployment")["mtc-sentiment"])["containers"][0]
    assert env_of(server)["MTC_REDIS_URL"] == "redis://:$(REDIS_PASSWORD)@mtc-redis:6379/0"
    dev_secrets = by_kind(rendered["overlays/dev"], "Secret")
    assert len(dev_secrets) == 1
    assert next(iter(dev_secrets)).startswith("mtc-redis")


SECRET_LIKE = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY)(?!S_FILE)", re.IGNORECASE)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_no_secret_is_kept_in_a_config_map_or_plain_env(
    rendered: dict[str, list[Manifest]], path: str
) -> None:
    for name, config_map in by_kind(rendered[path], "ConfigMap").items():
        for key, value in (config_map.get("data") or {}).items():
            assert not SECRET_LIKE.search(key), (path, name, key)
            assert "redis://:" not in str(value) or "$(" in str(value), (path, name, key)
    for name, deployment in by_kind(rendered[path], "Deployment").items():
        spec = pod_spec(deployment)
        for container in spec["containers"] + spec.get("initContainers", []):
            for variable in container.get("env", []):
                if SECRET_LIKE.search(variable["name"]):
                    assert "value" not in variable, (path, name, variable["name"])
                    assert "secretKeyRef" in variable.get("valueFrom", {}), (path, name)


def test_queue_depth_component_adds_a_pods_metric(tmp_path: Path) -> None:
    manifests = kustomize_with_components(tmp_path, "scale-on-queue-depth")
    assert validate(manifests) == []
    hpas = by_kind(manifests, "HorizontalPodAutoscaler")
    for name in MODELS:
        metrics = hpas[name]["spec"]["metrics"]
        assert [m["type"] for m in metrics] == ["Resource", "Pods"]
        assert metrics[1]["pods"]["metric"]["name"] == "mtc_queue_depth"
    assert [m["type"] for m in hpas["mtc-gateway"]["spec"]["metrics"]] == ["Resource"]
    targets = {name: hpas[name]["spec"]["metrics"][1]["pods"]["target"] for name in MODELS}
    # A clip costs seconds where a text costs milliseconds.
    assert targets["mtc-audio"]["averageValue"] == "4"
    assert targets["mtc-sentiment"]["averageValue"] == "32"


def test_keda_component_replaces_the_model_hpas(tmp_path: Path) -> None:
    manifests = kustomize_with_components(tmp_path, "keda")
    assert validate(manifests) == []
    scaled = by_kind(manifests, "ScaledObject")
    assert sorted(scaled) == sorted(MODELS)
    assert sorted(by_kind(manifests, "HorizontalPodAutoscaler")) == ["mtc-gateway"]
    for name, scaled_object in scaled.items():
        (prometheus,) = [t for t in scaled_object["spec"]["triggers"] if t["type"] == "prometheus"]
        task = name.removeprefix("mtc-")
        assert f'task="{task}"' in prometheus["metadata"]["query"]
        assert "mtc_queue_depth" in prometheus["metadata"]["query"]
        expected = "4" if task == "audio" else "32"
        assert prometheus["metadata"]["threshold"] == expected, name
