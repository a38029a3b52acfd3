"""`python -m deploy.check_chart_equivalence`: the Helm chart and overlays/prod must agree.

Renders `overlays/prod` and the chart with `charts/mtc/ci/prod-values.yaml`, and compares
every object both produce: the same kinds and names, and the same spec (containers, env,
probes, ports, resources, volumes, volume claim templates, autoscaling bounds...) and data.
Labels (of objects, pod templates and volume claim templates) are compared on the keys that
select or classify (name, instance, component, grafana_dashboard); labels that only say who
rendered the object (managed-by, helm.sh/chart, version) are not. JSON values
in ConfigMaps are compared parsed, so key order and spacing do not count.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deploy.external_tools import REPO
from deploy.render import PROD_VALUES, Manifest, helm_template, kustomize

COMPARED_LABELS = frozenset(
    {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "grafana_dashboard",
    }
)
# The chart leaves the namespace to `helm install --create-namespace`.
KINDS_ONLY_IN_KUSTOMIZE = frozenset({"Namespace"})


def _labels(labels: dict[str, str] | None) -> dict[str, str]:
    return {key: value for key, value in (labels or {}).items() if key in COMPARED_LABELS}


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def normalise(manifest: Manifest) -> Manifest:
    """The parts of an object that must match between the two renderings."""
    metadata = manifest.get("metadata", {})
    result: Manifest = {
        key: value for key, value in manifest.items() if key not in ("metadata", "data")
    }
    result["metadata"] = {
        "name": metadata.get("name"),
        "labels": _labels(metadata.get("labels")),
        "annotations": metadata.get("annotations") or {},
    }
    if "data" in manifest:
        result["data"] = {key: _json_or_text(value) for key, value in manifest["data"].items()}
    template = (
        result.get("spec", {}).get("template") if isinstance(result.get("spec"), dict) else None
    )
    if isinstance(template, dict) and "metadata" in template:
        template["metadata"] = {
            "labels": _labels(template["metadata"].get("labels")),
            "annotations": template["metadata"].get("annotations") or {},
        }
    claims = result.get("spec", {}).get("volumeClaimTemplates")
    if isinstance(claims, list):
        result["spec"]["volumeClaimTemplates"] = [
            {
                **claim,
                "metadata": {
                    "name": claim.get("metadata", {}).get("name"),
                    "labels": _labels(claim.get("metadata", {}).get("labels")),
                },
            }
            for claim in claims
        ]
    return result


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
    left = {_key(m): normalise(m) for m in kustomized if m["kind"] not in KINDS_ONLY_IN_KUSTOMIZE}
    right = {_key(m): normalise(m) for m in charted}
    problems = [
        f"{kind}/{name}: only in kustomize" for kind, name in sorted(set(left) - set(right))
    ]
    problems += [
        f"{kind}/{name}: only in the chart" for kind, name in sorted(set(right) - set(left))
    ]
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
