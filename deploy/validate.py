"""`python -m deploy.validate`: validate every rendering of the Kubernetes delivery offline.

- Built-in kinds: `kubernetes-validate --strict` against several Kubernetes versions; any
  WARN (such as "no schema for kind") counts as a failure.
- Istio kinds: the typed models of cloudcoil-models-istio.
- ServiceMonitor, PodMonitor, PrometheusRule, ScaledObject, PeerAuthentication,
  AuthorizationPolicy, HTTPRoute (Gateway API): the schemas in deploy/crd_schemas.py.
- Anything else: refused, so a new kind cannot slip through unvalidated.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import jsonschema
import yaml
from cloudcoil.models.istio.networking import v1 as istio
from pydantic import BaseModel, ValidationError

from deploy.crd_schemas import SCHEMAS
from deploy.external_tools import REPO, kubernetes_validate
from deploy.render import PROD_VALUES, Manifest, helm_template, kustomize

# The oldest and newest Kubernetes minor versions mtc is checked against.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
ISTIO_MODELS: dict[str, type[BaseModel]] = {
    "Gateway": istio.Gateway,
    "VirtualService": istio.VirtualService,
    "DestinationRule": istio.DestinationRule,
}
ISTIO_API = "networking.istio.io/v1"
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/prod")


def _name(manifest: Manifest) -> str:
    return f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"


# Groups under k8s.io that are custom resources all the same (installed as CRDs).
CUSTOM_K8S_IO_GROUPS = frozenset({"gateway.networking.k8s.io"})


def is_builtin(manifest: Manifest) -> bool:
    """Whether the object is a Kubernetes built-in kind (no custom resource group)."""
    api_version = str(manifest.get("apiVersion", ""))
    group = api_version.split("/")[0] if "/" in api_version else ""
    return group not in CUSTOM_K8S_IO_GROUPS and ("." not in group or group.endswith(".k8s.io"))


def validate_builtin(manifests: Iterable[Manifest], version: str) -> list[str]:
    """Problems kubernetes-validate --strict reports for the built-in objects."""
    builtin = [manifest for manifest in manifests if is_builtin(manifest)]
    if not builtin:
        return []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "manifests.yaml"
        path.write_text(yaml.safe_dump_all(builtin, sort_keys=False))
        result = subprocess.run(
            [str(kubernetes_validate()), "--strict", "--kubernetes-version", version, str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    output = (result.stdout + result.stderr).splitlines()
    problems = [line for line in output if line.strip() and not line.startswith("INFO")]
    if result.returncode != 0 and not problems:
        problems.append(f"kubernetes-validate exited {result.returncode}")
    return [f"[k8s {version}] {line}" for line in problems]


def validate_custom(manifest: Manifest) -> list[str]:
    """Problems of one custom resource (Istio, Prometheus Operator, KEDA)."""
    api_version, kind = manifest.get("apiVersion"), str(manifest.get("kind"))
    if kind in ISTIO_MODELS and api_version == ISTIO_API:
        try:
            ISTIO_MODELS[kind].model_validate(manifest)
        except ValidationError as error:
            return [f"{_name(manifest)}: {error}"]
        return []
    schema = SCHEMAS.get((str(api_version), kind))
    if schema is None:
        return [f"{_name(manifest)}: no validator for {api_version} {kind}"]
    return [
        f"{_name(manifest)}: {'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft202012Validator(schema).iter_errors(manifest)
    ]


def validate(manifests: list[Manifest], versions: Iterable[str] = KUBERNETES_VERSIONS) -> list[str]:
    """Every problem of a rendering: built-in kinds per version, then custom resources."""
    problems: list[str] = []
    for version in versions:
        problems += validate_builtin(manifests, version)
    for manifest in manifests:
        if not is_builtin(manifest):
            problems += validate_custom(manifest)
    return problems


def renderings() -> dict[str, list[Manifest]]:
    """Every rendering mtc ships: the kustomizations and the chart with default and prod values."""
    rendered = {path: kustomize(REPO / path) for path in KUSTOMIZATIONS}
    rendered["charts/mtc (default values)"] = helm_template()
    rendered["charts/mtc (ci/prod-values.yaml)"] = helm_template(PROD_VALUES)
    return rendered


def main() -> int:
    """Validate every rendering; exit 1 on any problem."""
    failed = False
    for name, manifests in renderings().items():
        problems = validate(manifests)
        failed = failed or bool(problems)
        status = "ok" if not problems else f"{len(problems)} problem(s)"
        print(f"{name}: {len(manifests)} objects, {status}")
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
