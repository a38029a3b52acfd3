"""What a cluster would do with the manifests (issue 19): settings reach running pods, every
kubectl renders them alike, Istio reaches the credential endpoints, injects its sidecar,
times out and retries as the gateway does, pods drain within their grace period, disruption
budgets, CPU and disk requests let the autoscalers and the kubelet work, images can be pinned,
KEDA takes over the HPAs, and the monitoring settings select what they claim to."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.check_chart_equivalence import compare, sidecar_injection, unhash_config_maps
from deploy.render import (
    OLDEST_KUBECTL,
    PROD_VALUES,
    REPO,
    Manifest,
    helm_template,
    kustomize,
    without_hash_suffix,
)
from deploy.validate import validate
from gateway.settings import GatewaySettings
from tests.support.deploy_tools import every_kubectl

OVERLAYS = ("overlays/dev", "overlays/prod", "overlays/single-host")
COMPONENTS = tuple(
    sorted(p.parent.name for p in (REPO / "components").glob("*/kustomization.yaml"))
)
MODELS = ("mtc-sentiment", "mtc-disaster", "mtc-pose", "mtc-audio")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
PRESTOP_SECONDS = 5
# Where boto3 asks for the pod's IAM credentials, on port 80: instance metadata, EKS Pod
# Identity (IPv4 and IPv6).
CREDENTIAL_ENDPOINTS = ("169.254.169.254", "169.254.170.23", "fd00:ec2::23")
# A pod bursting to its CPU limit reads limit/request x 100 % of its request; past 2 the HPA
# overshoots (it asks for replicas in proportion to that reading).
MAX_CPU_LIMIT_TO_REQUEST = 2.0
DIGEST = "sha256:" + "0123456789abcdef" * 4


def of_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    """Objects of one kind by name (generated ConfigMaps by their unhashed name)."""
    return {
        without_hash_suffix(m["metadata"]["name"])
        if kind == "ConfigMap"
        else m["metadata"]["name"]: m
        for m in manifests
        if m["kind"] == kind
    }


def workloads(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] in WORKLOAD_KINDS}


def template(workload: Manifest) -> dict[str, Any]:
    result: dict[str, Any] = workload["spec"]["template"]
    return result


def overlay(
    tmp_path: Path, text: str = "", *, over: str = "overlays/prod", components: tuple[str, ...] = ()
) -> Path:
    """A throwaway overlay on top of `over` (a path in the repository: an overlay or `base`),
    with these components of components/ and the kustomization text `text`."""
    directory = tmp_path / "overlay"
    directory.mkdir(exist_ok=True)
    # kustomize refuses absolute paths to other kustomizations.
    head = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
    head += f"resources:\n  - {os.path.relpath(REPO / over, directory)}\n"
    if components:
        head += "components:\n" + "".join(
            f"  - {os.path.relpath(REPO / 'components' / name, directory)}\n" for name in components
        )
    (directory / "kustomization.yaml").write_text(head + text)
    return directory


def values(tmp_path: Path, text: str, name: str = "values.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (`500m`, `2Gi`, `1`) as a number."""
    text = str(value)
    for suffix, factor in (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30), ("Ti", 2**40)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    for suffix, factor in (("k", 1e3), ("M", 1e6), ("G", 1e9), ("m", 1e-3)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def seconds(duration: str) -> float:
    """An Istio duration in whole or fractional seconds (`40s`, `67.5s`) as a number."""
    match = re.fullmatch(r"([0-9.]+)s", duration)
    assert match, duration
    return float(match.group(1))


@pytest.fixture(scope="module")
def prod() -> list[Manifest]:
    return kustomize(REPO / "overlays" / "prod")


@pytest.fixture(scope="module")
def chart_prod() -> list[Manifest]:
    return helm_template(PROD_VALUES)


@pytest.fixture(scope="module")
def renderings(prod: list[Manifest], chart_prod: list[Manifest]) -> dict[str, list[Manifest]]:
    """Every rendering whose pods a cluster would run."""
    rendered = {path: kustomize(REPO / path) for path in ("base", "overlays/dev")}
    rendered["overlays/prod"] = prod
    rendered["charts/mtc (default values)"] = helm_template()
    rendered["charts/mtc (ci/prod-values.yaml)"] = chart_prod
    return rendered


# 1. A changed setting reaches the running pods.


def test_every_config_map_a_pod_reads_carries_a_hash_of_its_content() -> None:
    for path in ("base", *OVERLAYS):
        manifests = kustomize(REPO / path)
        _, problems = unhash_config_maps(manifests)
        assert problems == [], path
        names = {m["metadata"]["name"] for m in manifests if m["kind"] == "ConfigMap"}
        for workload in workloads(manifests).values():
            spec = template(workload)["spec"]
            for container in spec["containers"] + spec.get("initContainers", []):
                for source in container.get("envFrom", []):
                    if "configMapRef" in source:
                        assert source["configMapRef"]["name"] in names, (path, source)


def test_a_new_model_uri_rolls_out_that_model_and_nothing_else(
    tmp_path: Path, prod: list[Manifest]
) -> None:
    """The documented release: change MTC_MODEL_URI in an overlay. The sentiment pods' template
    changes (so the Deployment rolls out); no other workload's does."""
    release = overlay(
        tmp_path,
        "configMapGenerator:\n  - name: mtc-sentiment\n    behavior: merge\n"
        "    literals: [MTC_MODEL_URI=s3://mtc-models/sentiment/2.0.0]\n",
    )
    before, after = workloads(prod), workloads(kustomize(release))
    changed = {name for name in before if template(before[name]) != template(after[name])}
    assert changed == {"mtc-sentiment"}


def test_a_changed_chart_value_rolls_out_the_pods_that_read_it(tmp_path: Path) -> None:
    def checksums(*files: Path) -> dict[str, str]:
        return {
            name: template(w)["metadata"]["annotations"]["checksum/config"]
            for name, w in workloads(helm_template(*files)).items()
        }

    before = checksums()
    model = values(tmp_path, "models:\n  sentiment:\n    modelUri: s3://b/sentiment/2.0.0\n", "m")
    shared = values(tmp_path, "config:\n  MTC_LOG_LEVEL: DEBUG\n", "s")
    gateway = values(tmp_path, "gateway:\n  config:\n    MTC_GATEWAY_LOG_LEVEL: debug\n", "g")
    jobs = values(tmp_path, "worker:\n  config:\n    MTC_JOBS_CHUNK_SIZE: '32'\n", "j")
    expected = {
        model: {"mtc-sentiment"},
        shared: set(MODELS),
        gateway: {"mtc-gateway"},
        # The gateway reads the jobs settings too (its /v1/jobs routes).
        jobs: {"mtc-gateway", "mtc-worker"},
    }
    for file, rolled in expected.items():
        after = checksums(file)
        assert {name for name in before if before[name] != after[name]} == rolled, file.name


def test_the_equivalence_check_requires_both_ways_of_rolling_pods(
    prod: list[Manifest], chart_prod: list[Manifest]
) -> None:
    assert compare(prod, chart_prod) == []
    unhashed = copy.deepcopy(prod)
    for manifest in unhashed:
        if manifest["kind"] == "ConfigMap" and manifest["metadata"]["name"].startswith("mtc-pose"):
            manifest["metadata"]["name"] = "mtc-pose"
    pose = workloads(unhashed)["mtc-pose"]
    for container in (
        template(pose)["spec"]["containers"] + template(pose)["spec"]["initContainers"]
    ):
        for source in container["envFrom"]:
            if source["configMapRef"]["name"].startswith("mtc-pose"):
                source["configMapRef"]["name"] = "mtc-pose"
    assert any(
        "Deployment/mtc-pose: reads ConfigMap/mtc-pose" in p for p in compare(unhashed, chart_prod)
    )
    unsummed = copy.deepcopy(chart_prod)
    del template(workloads(unsummed)["mtc-gateway"])["metadata"]["annotations"]["checksum/config"]
    assert any(
        "Deployment/mtc-gateway" in p and "checksum/config" in p for p in compare(prod, unsummed)
    )


# 2. Every kubectl renders every overlay and component alike.


def supported_kubectls() -> list[tuple[tuple[int, int], Path]]:
    return [(version, path) for version, path in every_kubectl() if version >= OLDEST_KUBECTL]


def documents(directory: Path, kubectl_binary: Path) -> list[str]:
    return sorted(yaml.safe_dump(m, sort_keys=True) for m in kustomize(directory, kubectl_binary))


@pytest.mark.parametrize("target", [*OVERLAYS, *(f"components/{c}" for c in COMPONENTS)])
def test_every_kubectl_renders_it_the_same_oldest_first(tmp_path: Path, target: str) -> None:
    """kustomize 5.0 (kubectl 1.27-1.30) refuses multi-document patch files and 5.5 (1.32)
    panics on multi-document `$patch: delete`: each kubectl on the machine, from the oldest
    supported one, must render the same objects as the newest. A component is rendered over
    base through a throwaway overlay."""
    if target.startswith("components/"):
        component = target.removeprefix("components/")
        directory = overlay(tmp_path, "namespace: mtc\n", over="base", components=(component,))
    else:
        directory = REPO / target
    kubectls = supported_kubectls()
    assert kubectls[-1][0] >= (1, 37), "the venv's kubectl is the newest"
    newest = documents(directory, kubectls[-1][1])
    for version, path in kubectls[:-1]:
        assert documents(directory, path) == newest, f"kubectl {version[0]}.{version[1]} ({path})"


def test_the_oldest_supported_kubectl_is_stated() -> None:
    floor = f"kubectl {OLDEST_KUBECTL[0]}.{OLDEST_KUBECTL[1]}"
    assert floor in (REPO / "README.md").read_text()
    assert floor in (REPO / "docs" / "deploy.md").read_text()


# 6, 7. Istio: the model download reaches the credential endpoints; every pod gets a sidecar.


def test_model_pods_send_credential_lookups_and_downloads_around_the_sidecar(
    prod: list[Manifest], chart_prod: list[Manifest]
) -> None:
    for manifests in (prod, chart_prod):
        for name in MODELS:
            annotations = template(workloads(manifests)[name])["metadata"]["annotations"]
            ranges = [
                ipaddress.ip_network(cidr)
                for cidr in annotations["traffic.sidecar.istio.io/excludeOutboundIPRanges"].split(
                    ","
                )
            ]
            for endpoint in map(ipaddress.ip_address, CREDENTIAL_ENDPOINTS):
                assert any(endpoint in cidr for cidr in ranges), (name, endpoint)
            assert "443" in annotations["traffic.sidecar.istio.io/excludeOutboundPorts"].split(",")


def test_every_pod_asks_for_its_sidecar_when_istio_is_on(
    prod: list[Manifest], chart_prod: list[Manifest]
) -> None:
    for manifests in (prod, chart_prod):
        for name, workload in workloads(manifests).items():
            assert template(workload)["metadata"]["labels"]["sidecar.istio.io/inject"] == "true", (
                name
            )
        assert all(sidecar_injection(manifests).values())
    for workload in workloads(helm_template()).values():
        assert "sidecar.istio.io/inject" not in template(workload)["metadata"]["labels"]


def test_the_equivalence_check_compares_sidecar_injection_and_namespaces(
    prod: list[Manifest], chart_prod: list[Manifest]
) -> None:
    uninjected = copy.deepcopy(chart_prod)
    for workload in workloads(uninjected).values():
        del template(workload)["metadata"]["labels"]["sidecar.istio.io/inject"]
    problems = compare(prod, uninjected)
    # The namespace label injects them on the kustomize side; nothing does in Helm's namespace.
    assert (
        "Deployment/mtc-gateway: Istio sidecar injected: kustomize True != chart False" in problems
    )
    elsewhere = copy.deepcopy(prod)
    workloads(elsewhere)["mtc-audio"]["metadata"]["namespace"] = "other"
    assert "Deployment/mtc-audio: in namespace other, not mtc" in compare(elsewhere, chart_prod)


# 8. Chart values for identity, pulling and placement.


def test_the_chart_renders_identity_pull_secrets_and_placement(tmp_path: Path) -> None:
    placement = values(
        tmp_path,
        """
imagePullSecrets: [{name: regcred}]
podAnnotations: {example.com/team: ml}
nodeSelector: {pool: general}
tolerations: [{key: dedicated, operator: Equal, value: mtc, effect: NoSchedule}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]
priorityClassName: mtc-normal
serviceAccounts:
  model: {annotations: {eks.amazonaws.com/role-arn: "arn:aws:iam::123456789012:role/mtc-model"}}
  worker: {annotations: {iam.gke.io/gcp-service-account: mtc-worker@p.iam.gserviceaccount.com}}
models:
  audio:
    nodeSelector: {pool: large}
    tolerations: []
    priorityClassName: mtc-high
    podAnnotations: {example.com/size: large}
gateway:
  affinity: {}
""",
    )
    manifests = helm_template(placement)
    assert validate(manifests, versions=("1.37.0",)) == []
    pods = workloads(manifests)
    assert set(pods) == {*MODELS, "mtc-gateway", "mtc-worker", "mtc-redis", "mtc-jobs-redis"}
    for name, workload in pods.items():
        spec = template(workload)["spec"]
        assert spec["imagePullSecrets"] == [{"name": "regcred"}], name
        if name == "mtc-audio":
            assert spec["nodeSelector"] == {"pool": "large"}
            assert spec["priorityClassName"] == "mtc-high"
            # An empty list is "unset": the global tolerations apply.
            assert spec["tolerations"][0]["key"] == "dedicated"
            assert template(workload)["metadata"]["annotations"]["example.com/size"] == "large"
        else:
            assert spec["nodeSelector"] == {"pool": "general"}, name
            assert spec["priorityClassName"] == "mtc-normal", name
            assert spec["tolerations"][0]["key"] == "dedicated", name
        zones = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert zones["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == "zone", name
        assert template(workload)["metadata"]["annotations"]["example.com/team"] == "ml", name
    accounts = of_kind(manifests, "ServiceAccount")
    assert accounts["mtc-model"]["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/mtc-model"
    }
    assert "iam.gke.io/gcp-service-account" in accounts["mtc-worker"]["metadata"]["annotations"]
    assert "annotations" not in accounts["mtc-gateway"]["metadata"]
    # Without these values nothing of the kind is rendered.
    for workload in workloads(helm_template()).values():
        assert not {"imagePullSecrets", "nodeSelector", "tolerations", "affinity"} & set(
            template(workload)["spec"]
        )


# 9, 11. Route timeouts follow the gateway's; retries never resend what reached a pod.


def gateway_timeouts(manifests: list[Manifest]) -> tuple[dict[str, float], float, float]:
    """Per-task timeouts, the default one and the upstream margin, as the gateway reads them
    (the margin's default is GatewaySettings')."""
    settings = of_kind(manifests, "ConfigMap")["mtc-gateway"]["data"]
    default = float(settings["MTC_GATEWAY_REQUEST_TIMEOUT_SECONDS"])
    margin_field = GatewaySettings.model_fields["upstream_timeout_margin_seconds"]
    margin = float(
        settings.get("MTC_GATEWAY_UPSTREAM_TIMEOUT_MARGIN_SECONDS", margin_field.default)
    )
    overrides = json.loads(settings["MTC_GATEWAY_TASK_TIMEOUTS"])
    tasks = json.loads(settings["MTC_GATEWAY_UPSTREAMS"])
    return {task: float(overrides.get(task, default)) for task in tasks}, default, margin


def ingress_routes(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    (ingress,) = [
        v for v in of_kind(manifests, "VirtualService").values() if v["spec"].get("gateways")
    ]
    return {route["name"]: route for route in ingress["spec"]["http"]}


def test_each_task_route_waits_one_margin_longer_than_the_gateway(
    tmp_path: Path, prod: list[Manifest], chart_prod: list[Manifest]
) -> None:
    slower = values(
        tmp_path,
        "istio:\n  enabled: true\n"
        "models:\n  pose:\n    config:\n      MTC_REQUEST_TIMEOUT_SECONDS: '45'\n"
        "gateway:\n  config:\n    MTC_GATEWAY_UPSTREAM_TIMEOUT_MARGIN_SECONDS: '3'\n",
    )
    for manifests in (prod, chart_prod, helm_template(slower)):
        timeouts, default, margin = gateway_timeouts(manifests)
        routes = ingress_routes(manifests)
        assert list(routes)[-1] == "api", "the catch-all route comes last"
        assert seconds(routes.pop("api")["timeout"]) == default + 2 * margin
        # /api/v1/pose_classifier may fetch image URLs before it forwards to pose.
        pose_urls = routes.pop("pose-urls")
        assert pose_urls["match"] == [{"uri": {"exact": "/api/v1/pose_classifier"}}]
        url_seconds = GatewaySettings.model_fields["image_url_timeout_seconds"].default
        assert seconds(pose_urls["timeout"]) == timeouts["pose"] + url_seconds + 2 * margin
        assert set(routes) == set(timeouts)
        for task, route in routes.items():
            compat = [{"uri": {"exact": p}} for p in ("/predict", "/predict_s3")]
            extra = compat if task == "audio" else []
            assert route["match"] == [{"uri": {"prefix": f"/v1/{task}/"}}, *extra]
            # The gateway answers its own 504 at timeout + margin; Envoy waits a margin more.
            assert seconds(route["timeout"]) == timeouts[task] + 2 * margin, task
    assert seconds(ingress_routes(helm_template(slower))["pose"]["timeout"]) == 51


def test_the_mesh_never_resends_a_request_that_reached_a_pod(
    prod: list[Manifest], chart_prod: list[Manifest]
) -> None:
    for manifests in (prod, chart_prod):
        for name, route in ingress_routes(manifests).items():
            retry_on = set(route["retries"]["retryOn"].split(","))
            assert retry_on <= {"connect-failure", "refused-stream"}, name
        services = of_kind(manifests, "VirtualService")
        for model in MODELS:
            (route,) = services[model]["spec"]["http"]
            assert services[model]["spec"]["hosts"] == [model]
            assert route["retries"] == {"attempts": 0}, model
    # The worst case the comment states: the worker's own attempts, none added by the mesh.
    jobs = of_kind(prod, "ConfigMap")["mtc-jobs"]["data"]
    attempts = 1 + int(jobs["MTC_JOBS_RETRY_ATTEMPTS"])
    kustomization = (REPO / "components" / "istio" / "kustomization.yaml").read_text()
    comment = " ".join(line.strip().lstrip("#").strip() for line in kustomization.splitlines())
    assert f"1 + MTC_JOBS_RETRY_ATTEMPTS = {attempts} times" in comment


# 10. Drain, disruption budgets, CPU and disk requests, pinned images.


def drain_seconds(workload: Manifest) -> float | None:
    config = template(workload)["metadata"].get("annotations", {}).get("proxy.istio.io/config")
    duration = (yaml.safe_load(config) or {}).get("terminationDrainDuration") if config else None
    return seconds(duration) if duration else None


def test_sidecars_drain_the_longest_request_within_the_grace_period(
    prod: list[Manifest], chart_prod: list[Manifest]
) -> None:
    for manifests in (prod, chart_prod):
        timeouts, default, margin = gateway_timeouts(manifests)
        longest = {f"mtc-{task}": timeout for task, timeout in timeouts.items()}
        longest["mtc-gateway"] = max([default, *timeouts.values()]) + margin
        for name, workload in workloads(manifests).items():
            drain = drain_seconds(workload)
            if drain is None:
                continue
            # Past the grace period the kubelet kills the pod, sidecar included.
            assert drain < template(workload)["spec"]["terminationGracePeriodSeconds"], name
            assert drain >= PRESTOP_SECONDS + longest[name], name
        assert {name for name, w in workloads(manifests).items() if drain_seconds(w)} == set(
            longest
        )


def test_disruption_budgets_never_keep_a_broken_pod(
    prod: list[Manifest], chart_prod: list[Manifest]
) -> None:
    for manifests in (prod, chart_prod):
        budgets = of_kind(manifests, "PodDisruptionBudget")
        assert budgets
        for name, budget in budgets.items():
            assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", name


def test_cpu_limits_keep_the_autoscalers_target_meaningful(
    tmp_path: Path, renderings: dict[str, list[Manifest]]
) -> None:
    keda = overlay(tmp_path, "namespace: mtc\n", over="base", components=("keda",))
    checked = {**renderings, "components/keda": kustomize(keda)}
    for path, manifests in checked.items():
        pods = workloads(manifests)
        targets = [
            h["spec"]["scaleTargetRef"]["name"]
            for h in of_kind(manifests, "HorizontalPodAutoscaler").values()
            if any(m.get("resource", {}).get("name") == "cpu" for m in h["spec"]["metrics"])
        ]
        targets += [
            s["spec"]["scaleTargetRef"]["name"]
            for s in of_kind(manifests, "ScaledObject").values()
            if any(t["type"] == "cpu" for t in s["spec"]["triggers"])
        ]
        if path not in ("overlays/dev", "charts/mtc (default values)"):
            assert targets, path
        for name in targets:
            for container in template(pods[name])["spec"]["containers"]:
                resources = container["resources"]
                ratio = quantity(resources["limits"]["cpu"]) / quantity(
                    resources["requests"]["cpu"]
                )
                assert ratio <= MAX_CPU_LIMIT_TO_REQUEST, (path, name, ratio)


def test_ephemeral_storage_covers_every_emptydir(renderings: dict[str, list[Manifest]]) -> None:
    for path, manifests in {
        **renderings,
        "overlays/single-host": kustomize(REPO / "overlays/single-host"),
    }.items():
        for name, workload in workloads(manifests).items():
            spec = template(workload)["spec"]
            # Memory-backed emptyDirs count against memory, not the node's disk.
            on_disk = [
                v["emptyDir"]
                for v in spec.get("volumes", [])
                if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"
            ]
            if not on_disk:
                continue
            containers, inits = spec["containers"], spec.get("initContainers", [])
            for container in containers + inits:
                resources = container["resources"]
                assert "ephemeral-storage" in resources["requests"], (path, name, container["name"])
                assert "ephemeral-storage" in resources["limits"], (path, name, container["name"])
            # The kubelet evicts a pod whose disk use passes its limit: the larger of the
            # containers' sum and any init container's.
            limit = max(
                [sum(quantity(c["resources"]["limits"]["ephemeral-storage"]) for c in containers)]
                + [quantity(c["resources"]["limits"]["ephemeral-storage"]) for c in inits]
            )
            volumes = sum(quantity(volume["sizeLimit"]) for volume in on_disk)
            assert volumes <= limit, (path, name, volumes, limit)


def test_a_release_can_pin_every_image_by_digest(
    tmp_path: Path, chart_prod: list[Manifest]
) -> None:
    """kustomize's `images: digest` and the chart's image.digest pin the same images."""
    images = ("mtc-text", "mtc-pose", "mtc-audio", "mtc-gateway", "mtc-worker")
    pinned = overlay(
        tmp_path,
        "images:\n"
        + "".join(
            f"  - name: registry.example.com/mtc/{image}\n    digest: {DIGEST}\n"
            for image in images
        ),
    )
    pin = {"image": {"digest": DIGEST}}
    digests = values(
        tmp_path,
        yaml.safe_dump(
            {
                "models": dict.fromkeys(("sentiment", "disaster", "pose", "audio"), pin),
                "gateway": pin,
                "worker": pin,
            }
        ),
    )
    kustomized, charted = kustomize(pinned), helm_template(PROD_VALUES, digests)
    assert compare(kustomized, charted) == []
    ours = [
        container["image"]
        for workload in workloads(charted).values()
        for container in template(workload)["spec"]["containers"]
        + template(workload)["spec"].get("initContainers", [])
        if "/mtc/" in container["image"]
    ]
    assert ours
    assert all(image.endswith(f"@{DIGEST}") for image in ours), ours
    for workload in workloads(charted).values():
        for container in template(workload)["spec"]["containers"]:
            # IfNotPresent (the default for a pinned image) is right: a digest never changes.
            assert container.get("imagePullPolicy", "IfNotPresent") == "IfNotPresent"
    # docs/deploy.md shows a release how: kustomize's images with a digest, the chart's value.
    guide = (REPO / "docs" / "deploy.md").read_text()
    assert "kustomize edit set image mtc-text=registry.example.com/mtc/mtc-text@sha256:" in guide
    assert "image.digest" in guide


# 12, 13. KEDA takes over the HPAs; settings that do nothing are gone or made to work.


def test_keda_takes_over_the_autoscalers_an_earlier_install_made(
    tmp_path: Path, prod: list[Manifest]
) -> None:
    keda_component = overlay(tmp_path, components=("keda",))
    keda_values = values(tmp_path, "keda:\n  enabled: true\n")
    earlier = {
        "kustomize": of_kind(prod, "HorizontalPodAutoscaler"),
        "chart": of_kind(helm_template(PROD_VALUES), "HorizontalPodAutoscaler"),
    }
    for side, manifests in (
        ("kustomize", kustomize(keda_component)),
        ("chart", helm_template(PROD_VALUES, keda_values)),
    ):
        scaled = of_kind(manifests, "ScaledObject")
        assert sorted(scaled) == sorted([*MODELS, "mtc-worker"]), side
        for name, scaled_object in scaled.items():
            annotations = scaled_object["metadata"]["annotations"]
            assert annotations["scaledobject.keda.sh/transfer-hpa-ownership"] == "true"
            hpa = scaled_object["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"]
            # The HPA the install without KEDA made for the same Deployment.
            target = scaled_object["spec"]["scaleTargetRef"]["name"]
            assert earlier[side][hpa]["spec"]["scaleTargetRef"]["name"] == target, (side, name)
            # cooldownPeriod only delays scaling to zero, which a minimum of 2 never does.
            assert scaled_object["spec"]["minReplicaCount"] >= 1
            assert "cooldownPeriod" not in scaled_object["spec"], (side, name)
        assert validate(manifests, versions=()) == [], side
    guide = (REPO / "docs" / "deploy.md").read_text().split("### Switching to KEDA", 1)[1]
    guide = guide.split("\n## ", 1)[0]
    assert "scaledobject.keda.sh/transfer-hpa-ownership" in guide
    assert "kubectl -n mtc delete hpa" in guide
    assert "helm upgrade" in guide


def test_monitors_carry_the_release_label_kube_prometheus_stack_selects(
    tmp_path: Path, prod: list[Manifest]
) -> None:
    monitoring = [m for m in prod if m["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {m["kind"] for m in monitoring} == {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    for manifest in monitoring:
        assert manifest["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    other = values(tmp_path, "monitoring:\n  releaseLabel: prom\n")
    charted = [
        m for m in helm_template(PROD_VALUES, other) if m["apiVersion"].startswith("monitoring.")
    ]
    assert len(charted) == 3
    assert all(m["metadata"]["labels"]["release"] == "prom" for m in charted)
    unlabelled = values(tmp_path, "monitoring:\n  releaseLabel: ''\n", "unlabelled.yaml")
    assert not any(
        "release" in m["metadata"]["labels"]
        for m in helm_template(PROD_VALUES, unlabelled)
        if m["apiVersion"].startswith("monitoring.")
    )


def test_the_dashboards_folder_annotation_is_one_the_documented_sidecar_reads(
    prod: list[Manifest],
) -> None:
    """grafana_folder does nothing unless Grafana's sidecar is told to read it: the values
    docs/deploy.md gives must name the label and annotation the dashboards carry."""
    text = (REPO / "docs" / "deploy.md").read_text()
    (block,) = re.findall(r"```yaml\n( *# kube-prometheus-stack values.*?)```", text, re.S)
    sidecar = yaml.safe_load(textwrap.dedent(block))["grafana"]["sidecar"]["dashboards"]
    assert sidecar["searchNamespace"] == "ALL"
    assert sidecar["provider"]["foldersFromFilesStructure"] is True
    dashboards = [
        m
        for m in of_kind(prod, "ConfigMap").values()
        if "grafana_dashboard" in m["metadata"]["labels"]
    ]
    assert dashboards
    for dashboard in dashboards:
        assert dashboard["metadata"]["labels"][sidecar["label"]] == str(sidecar["labelValue"])
        assert sidecar["folderAnnotation"] in dashboard["metadata"]["annotations"]
