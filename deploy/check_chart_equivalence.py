"""`python -m deploy.check_chart_equivalence`: the Helm chart and overlays/prod must agree.

Renders `overlays/prod` and the chart with `charts/mtc/ci/prod-values.yaml`, and compares
every object both produce: the same kinds and names, and the same spec (containers, env,
probes, ports, resources, volumes, volume claim templates, autoscaling bounds...) and data.
Labels (of objects, pod templates and volume claim templates) are compared on the keys that
select or classify (name, instance, component, grafana_dashboard); labels that only say who
rendered the object (managed-by, helm.sh/chart, version) are not. JSON values
in ConfigMaps are compared parsed, so key order and spacing do not count.

A changed setting must roll the pods that read it, which the two do differently: kustomize
generates ConfigMaps named with a hash of their content, the chart annotates each pod template
with `checksum/config`. The check requires each in its own rendering (a ConfigMap a pod reads
without a hash suffix, or a pod template reading ConfigMaps without the checksum, is a
difference), then compares names without the suffix and templates without the checksum.

The chart renders no Namespace (`helm install --create-namespace` makes it, unlabelled), so the
overlay's Namespace is not compared as an object; what it decides is: every object must be in
it, and whether each pod gets an Istio sidecar (the namespace's `istio-injection` label, or the
pod's own `sidecar.istio.io/inject`) must agree.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deploy.external_tools import REPO
from deploy.render import (
    NAMESPACE,
    PROD_VALUES,
    Manifest,
    helm_template,
    kustomize,
    without_hash_suffix,
)

COMPARED_LABELS = frozenset(
    {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "grafana_dashboard",
        # kube-prometheus-stack selects monitors and rules by it.
        "release",
        "sidecar.istio.io/inject",
    }
)
# The chart leaves the namespace to `helm install --create-namespace`; see sidecar_injection.
KINDS_ONLY_IN_KUSTOMIZE = frozenset({"Namespace"})
CHECKSUM_ANNOTATION = "checksum/config"
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job"})


def _compared(metadata: dict[str, Any], *parts: str) -> dict[str, Any]:
    """The `parts` (name, labels, annotations) of an object's metadata that must match; of its
    labels, the compared ones."""
    labels = metadata.get("labels") or {}
    compared = {
        "name": metadata.get("name"),
        "labels": {key: value for key, value in labels.items() if key in COMPARED_LABELS},
        "annotations": metadata.get("annotations") or {},
    }
    return {part: compared[part] for part in parts}


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(value)
    return value


def normalise(manifest: Manifest) -> Manifest:
    """The parts of an object that must match between the two renderings."""
    result: Manifest = {
        key: value for key, value in manifest.items() if key not in ("metadata", "data")
    }
    result["metadata"] = _compared(manifest.get("metadata", {}), "name", "labels", "annotations")
    if "data" in manifest:
        result["data"] = {key: _json_or_text(value) for key, value in manifest["data"].items()}
    template = (
        result.get("spec", {}).get("template") if isinstance(result.get("spec"), dict) else None
    )
    if isinstance(template, dict) and "metadata" in template:
        template["metadata"] = _compared(template["metadata"], "labels", "annotations")
    claims = result.get("spec", {}).get("volumeClaimTemplates")
    if isinstance(claims, list):
        result["spec"]["volumeClaimTemplates"] = [
            {**claim, "metadata": _compared(claim.get("metadata", {}), "name", "labels")}
            for claim in claims
        ]
    return result


def _pod_templates(manifests: list[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    """Each workload and its pod template."""
    for manifest in manifests:
        if manifest.get("kind") in WORKLOAD_KINDS:
            template = manifest.get("spec", {}).get("template")
            if template is not None:
                yield manifest, template


def _config_map_references(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The dicts whose `name` names a ConfigMap the pod reads (env, envFrom, volumes)."""
    references: list[dict[str, Any]] = []
    for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        references += [
            s["configMapRef"] for s in container.get("envFrom", []) if "configMapRef" in s
        ]
        references += [
            v["valueFrom"]["configMapKeyRef"]
            for v in container.get("env", [])
            if "configMapKeyRef" in v.get("valueFrom", {})
        ]
    for volume in pod_spec.get("volumes", []):
        sources = [volume, *volume.get("projected", {}).get("sources", [])]
        references += [source["configMap"] for source in sources if "configMap" in source]
    return references


def unhash_config_maps(kustomized: list[Manifest]) -> tuple[list[Manifest], list[str]]:
    """kustomize's objects with generated ConfigMaps under their written names, and a problem
    for every ConfigMap a pod reads that has no hash suffix (a change would not roll it)."""
    manifests = copy.deepcopy(kustomized)
    config_maps = [m["metadata"] for m in manifests if m["kind"] == "ConfigMap"]
    written = {metadata["name"]: without_hash_suffix(metadata["name"]) for metadata in config_maps}
    for metadata in config_maps:
        metadata["name"] = written[metadata["name"]]
    problems: list[str] = []
    for manifest, template in _pod_templates(manifests):
        for reference in _config_map_references(template.get("spec", {})):
            name = reference.get("name", "")
            if written.get(name) == name:
                problems.append(
                    f"{manifest['kind']}/{manifest['metadata']['name']}: reads ConfigMap/{name}, "
                    "which kustomize does not generate with a hash suffix: a change to it would "
                    "not roll the pods"
                )
            reference["name"] = written.get(name, name)
    return manifests, problems


def drop_checksums(charted: list[Manifest]) -> tuple[list[Manifest], list[str]]:
    """The chart's objects without the checksum/config annotation, and a problem for every pod
    template that reads a ConfigMap but lacks it (a change would not roll the pods)."""
    manifests = copy.deepcopy(charted)
    problems: list[str] = []
    for manifest, template in _pod_templates(manifests):
        annotations = template.get("metadata", {}).get("annotations") or {}
        reads_config = bool(_config_map_references(template.get("spec", {})))
        if reads_config and CHECKSUM_ANNOTATION not in annotations:
            problems.append(
                f"{manifest['kind']}/{manifest['metadata']['name']}: reads a ConfigMap but its "
                f"pod template has no {CHECKSUM_ANNOTATION} annotation: a change would not roll "
                "the pods"
            )
        annotations.pop(CHECKSUM_ANNOTATION, None)
    return manifests, problems


def sidecar_injection(manifests: list[Manifest]) -> dict[tuple[str, str], bool]:
    """Whether Istio injects a sidecar into each workload's pods: the pod's own
    sidecar.istio.io/inject label if it has one, else its Namespace's istio-injection label
    (a Namespace not in the rendering, as with Helm, has no labels)."""
    namespaces = {
        m["metadata"]["name"]: m["metadata"].get("labels") or {}
        for m in manifests
        if m["kind"] == "Namespace"
    }
    injected: dict[tuple[str, str], bool] = {}
    for manifest, template in _pod_templates(manifests):
        labels = template.get("metadata", {}).get("labels") or {}
        namespace = namespaces.get(manifest["metadata"].get("namespace", NAMESPACE), {})
        default = "true" if namespace.get("istio-injection") == "enabled" else "false"
        injected[_key(manifest)] = labels.get("sidecar.istio.io/inject", default) == "true"
    return injected


def namespace_problems(kustomized: list[Manifest]) -> list[str]:
    """The overlay must create the namespace Helm installs into, and put every object in it."""
    created = [m["metadata"]["name"] for m in kustomized if m["kind"] == "Namespace"]
    problems = [
        f"Namespace/{name}: the chart is checked as installed into {NAMESPACE}"
        for name in created
        if name != NAMESPACE
    ]
    problems += [
        f"{m['kind']}/{m['metadata']['name']}: in namespace {m['metadata'].get('namespace')}, "
        f"not {NAMESPACE}"
        for m in kustomized
        if m["kind"] != "Namespace" and m["metadata"].get("namespace") != NAMESPACE
    ]
    return problems


def _key(manifest: Manifest) -> tuple[str, str]:
    return manifest["kind"], manifest["metadata"]["name"]


def differences(left: Any, right: Any, path: str = "") -> Iterator[str]:
    """Human-readable differences between two parsed YAML values."""
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right), key=str):
            where = f"{path}.{key}"
            if key not in left:
                yield f"{where}: only in the chart: {right[key]!r}"
            elif key not in right:
                yield f"{where}: only in kustomize: {left[key]!r}"
            else:
                yield from differences(left[key], right[key], where)
    elif isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            yield from differences(a, b, f"{path}[{index}]")
    elif left != right:
        yield f"{path}: kustomize {left!r} != chart {right!r}"


def compare(kustomized: list[Manifest], charted: list[Manifest]) -> list[str]:
    """Every difference between the two sets of objects; empty when they agree."""
    problems = namespace_problems(kustomized)
    left_injected, right_injected = sidecar_injection(kustomized), sidecar_injection(charted)
    for key in sorted(set(left_injected) & set(right_injected)):
        if left_injected[key] != right_injected[key]:
            problems.append(
                f"{key[0]}/{key[1]}: Istio sidecar injected: kustomize {left_injected[key]} "
                f"!= chart {right_injected[key]}"
            )
    kustomized, unhashed = unhash_config_maps(kustomized)
    charted, unsummed = drop_checksums(charted)
    problems += unhashed + unsummed
    left = {_key(m): normalise(m) for m in kustomized if m["kind"] not in KINDS_ONLY_IN_KUSTOMIZE}
    right = {_key(m): normalise(m) for m in charted}
    only_left, only_right = sorted(set(left) - set(right)), sorted(set(right) - set(left))
    problems += [f"{kind}/{name}: only in kustomize" for kind, name in only_left]
    problems += [f"{kind}/{name}: only in the chart" for kind, name in only_right]
    for key in sorted(set(left) & set(right)):
        problems += [f"{key[0]}/{key[1]}{line}" for line in differences(left[key], right[key])]
    return problems


def check(overlay: Path = REPO / "overlays" / "prod", values: Path = PROD_VALUES) -> list[str]:
    """Render both and compare them."""
    return compare(kustomize(overlay), helm_template(values))


def main() -> int:
    """Print the differences; exit 1 if there are any."""
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("charts/mtc (ci/prod-values.yaml) and overlays/prod render the same objects")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
