"""`python -m deploy.model_manifests [--check]`: the kustomize tree's per-model files, written
from the Helm chart.

A model service is declared once, under `models:` in `charts/mtc/values.yaml` (its image,
model URI, settings, resources, probes), and its production choices once, in
`charts/mtc/ci/prod-values.yaml` (registry, autoscaling bounds). The chart's templates turn
that into objects; this command renders them with `helm template` and writes what kustomize
needs, so the two deployments cannot disagree on a model:

- `base/models/`: each model's Service, Deployment and HPA (`models.yaml`), its settings
  (`<key>.env`, a hashed ConfigMap through the `kustomization.yaml` here), and the task table
  the gateway and the batch workers read (`gateway-tasks.env`, `jobs-tasks.env`).
- `overlays/prod/models/`: a Component with each model's PodDisruptionBudget and its
  autoscaling bounds. Not the images: an overlay's own `images:` entries (`kustomize edit set
  image mtc-text=...@sha256:...`, how a release pins a digest) match the names the base
  gives, and would silently miss an image a component had already renamed.
- `components/istio/models.yaml`: the ingress VirtualService (a route per task), and per model
  a VirtualService without mesh retries and a DestinationRule.
- `components/canary/<key>/`: a canary release component per model. This one is kustomize's
  own (it copies the stable pod template with `replacements`), so it comes from a template,
  `deploy/templates/canary/`, with the model's key for `@model@`.

The other direction (chart from kustomize) would need the chart's templates, loops and
conditions inferred from rendered objects; the chart already has them, so it is the source.
What is not per model (the gateway, Redis, the workers, the components) stays written by hand
in both, and `deploy.check_chart_equivalence` keeps those in step.

`--check` writes nothing: it renders into memory, and lists each file that is stale, missing
or left over (a model removed from the values). Exit status 1 then; tests run it.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy.external_tools import REPO
from deploy.render import RELEASE, Manifest, helm_template, stale_paths, write_files

GENERATED_BY = (
    "# Generated from charts/mtc by `python -m deploy.model_manifests`: change the chart's\n"
    "# values or templates and run it again (tests fail while this file is out of date).\n"
)
# Labels that say who rendered an object; kustomize's base sets its own managed-by.
RENDERER_LABELS = frozenset(
    {"app.kubernetes.io/managed-by", "app.kubernetes.io/version", "helm.sh/chart"}
)
CHECKSUM_ANNOTATION = "checksum/config"
CANARY_TEMPLATE = Path(__file__).with_name("templates") / "canary"
CANARY_GENERATED_BY = (
    "# Generated from deploy/templates/canary, for each model of charts/mtc/values.yaml, by\n"
    "# `python -m deploy.model_manifests`: edit the template and run it again.\n"
)
MODEL_PLACEHOLDER = "@model@"
# The gateway's and the workers' settings that name the tasks; the rest of their settings
# are not per model and stay in base/settings/.
GATEWAY_TASK_SETTINGS = (
    "MTC_GATEWAY_UPSTREAMS",
    "MTC_GATEWAY_TASK_KINDS",
    "MTC_GATEWAY_TASK_TIMEOUTS",
)
JOBS_TASK_SETTINGS = ("MTC_JOBS_UPSTREAMS", "MTC_JOBS_TASK_KINDS")
MODEL_KINDS = ("Service", "Deployment", "HorizontalPodAutoscaler")


@dataclass(frozen=True)
class Tree:
    """Where the chart is read and the files are written: the repository, or a copy of it."""

    root: Path

    @property
    def chart(self) -> Path:
        return self.root / "charts" / "mtc"

    @property
    def base_models(self) -> Path:
        return self.root / "base" / "models"

    @property
    def prod_models(self) -> Path:
        return self.root / "overlays" / "prod" / "models"

    @property
    def canaries(self) -> Path:
        return self.root / "components" / "canary"


def _dump(documents: list[Manifest]) -> str:
    return "---\n".join(
        yaml.safe_dump(document, sort_keys=False, width=100) for document in documents
    )


def model_keys(tree: Tree) -> list[str]:
    """The enabled models of the chart's default values, in the order they are written."""
    values = yaml.safe_load((tree.chart / "values.yaml").read_text(encoding="utf-8"))
    models = (values if isinstance(values, dict) else {}).get("models") or {}
    return [key for key, model in models.items() if (model or {}).get("enabled", True)]


def _as_kustomize_object(manifest: Manifest) -> Manifest:
    """A chart object as the kustomize base writes it: no namespace (the overlay sets it), no
    renderer labels, no checksum annotation (the hashed ConfigMap names roll the pods)."""
    result = copy.deepcopy(manifest)
    metadata = result["metadata"]
    metadata.pop("namespace", None)
    for labelled in (metadata, result.get("spec", {}).get("template", {}).get("metadata")):
        if not labelled:
            continue
        labels = labelled.get("labels") or {}
        for label in RENDERER_LABELS:
            labels.pop(label, None)
        annotations = labelled.get("annotations")
        if annotations is not None:
            annotations.pop(CHECKSUM_ANNOTATION, None)
            if not annotations:
                del labelled["annotations"]
    return result


def _by_kind_and_name(objects: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    return {(item["kind"], item["metadata"]["name"]): item for item in objects}


def _env_file(title: str, data: dict[str, str]) -> str:
    settings = "".join(f"{key}={value}\n" for key, value in data.items())
    return f"{GENERATED_BY}# {title}\n{settings}"


def _base_files(tree: Tree, keys: list[str]) -> dict[str, str]:
    # The base scales every model with an HPA; the chart's default is a fixed replica count.
    settings = [f"models.{key}.autoscaling.enabled=true" for key in keys]
    objects = _by_kind_and_name(helm_template(chart=tree.chart, settings=settings))
    documents: list[Manifest] = []
    generators: list[dict[str, Any]] = []
    files: dict[str, str] = {}
    for key in keys:
        name = f"{RELEASE}-{key}"
        for kind in MODEL_KINDS:
            if (kind, name) in objects:
                documents.append(_as_kustomize_object(objects[(kind, name)]))
        config_map = _as_kustomize_object(objects[("ConfigMap", name)])
        files[f"{key}.env"] = _env_file(
            f"ConfigMap {name}: the {key} model's settings (models.{key} in the chart's values).",
            config_map.get("data") or {},
        )
        generators.append(
            {
                "name": name,
                "envs": [f"{key}.env"],
                "options": {"labels": config_map["metadata"]["labels"]},
            }
        )
    files["models.yaml"] = GENERATED_BY + _dump(documents)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["models.yaml"],
        # Named with a hash of the content: a changed setting renames the ConfigMap and so
        # rolls the pods that read it.
        "configMapGenerator": generators,
    }
    files["kustomization.yaml"] = GENERATED_BY + _dump([kustomization])
    gateway = objects[("ConfigMap", f"{RELEASE}-gateway")]["data"]
    files["gateway-tasks.env"] = _env_file(
        "The gateway's task table (ConfigMap mtc-gateway, with base/settings/gateway.env).",
        {setting: gateway[setting] for setting in GATEWAY_TASK_SETTINGS},
    )
    jobs = objects[("ConfigMap", f"{RELEASE}-jobs")]["data"]
    files["jobs-tasks.env"] = _env_file(
        "The batch workers' task table (ConfigMap mtc-jobs, with base/settings/jobs.env).",
        {setting: jobs[setting] for setting in JOBS_TASK_SETTINGS},
    )
    return files


def _prod_files(tree: Tree, keys: list[str]) -> dict[str, str]:
    objects = _by_kind_and_name(
        helm_template(tree.chart / "ci" / "prod-values.yaml", chart=tree.chart)
    )
    budgets: list[Manifest] = []
    patches = ""
    for key in keys:
        name = f"{RELEASE}-{key}"
        if ("PodDisruptionBudget", name) in objects:
            budgets.append(_as_kustomize_object(objects[("PodDisruptionBudget", name)]))
        hpa = objects.get(("HorizontalPodAutoscaler", name))
        if hpa is not None:
            # One patch per object: kustomize 5.0 (kubectl <= 1.30) refuses multi-document
            # patches. Written as text: a JSON patch reads best in flow style.
            low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
            patches += (
                f"  - target: {{kind: HorizontalPodAutoscaler, name: {name}}}\n"
                "    patch: |-\n"
                f"      - {{op: replace, path: /spec/minReplicas, value: {low}}}\n"
                f"      - {{op: replace, path: /spec/maxReplicas, value: {high}}}\n"
            )
    component: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
    }
    if budgets:
        component["resources"] = ["poddisruptionbudgets.yaml"]
    files = {
        "kustomization.yaml": GENERATED_BY
        + _dump([component])
        + (f"patches:\n{patches}" if patches else "")
    }
    if budgets:
        files["poddisruptionbudgets.yaml"] = GENERATED_BY + _dump(budgets)
    return files


def _istio_text(tree: Tree, keys: list[str]) -> str:
    # The component is not prod's alone: the chart's defaults with Istio on, not prod values.
    objects = _by_kind_and_name(helm_template(chart=tree.chart, settings=["istio.enabled=true"]))
    wanted = [("VirtualService", RELEASE)]
    for key in keys:
        wanted += [("VirtualService", f"{RELEASE}-{key}"), ("DestinationRule", f"{RELEASE}-{key}")]
    return GENERATED_BY + _dump([_as_kustomize_object(objects[item]) for item in wanted])


def generated_files(tree: Tree) -> dict[Path, str]:
    """Every file this command owns, by path, with the text it must have."""
    keys = model_keys(tree)
    files = {tree.base_models / name: text for name, text in _base_files(tree, keys).items()}
    files.update({tree.prod_models / name: text for name, text in _prod_files(tree, keys).items()})
    files[tree.root / "components" / "istio" / "models.yaml"] = _istio_text(tree, keys)
    for key in keys:
        for template in sorted(CANARY_TEMPLATE.glob("*.yaml")):
            text = template.read_text(encoding="utf-8").replace(MODEL_PLACEHOLDER, key)
            files[tree.canaries / key / template.name] = CANARY_GENERATED_BY + text
    return files


def _left_over(tree: Tree, files: dict[Path, str]) -> list[Path]:
    """Files not in `files` in the folders whose every file this command owns."""
    return [
        path
        for folder in (tree.base_models, tree.prod_models, tree.canaries)
        for path in (sorted(folder.rglob("*")) if folder.is_dir() else [])
        if path.is_file() and path not in files
    ]


def stale_files(tree: Tree, files: dict[Path, str]) -> list[str]:
    """Files that differ from `files`, are missing, or are left over in the generated
    folders; each with why, relative to the tree."""
    problems = [
        f"{path.relative_to(tree.root)}: {'out of date' if path.is_file() else 'missing'}"
        for path in stale_paths(files)
    ]
    return problems + [
        f"{path.relative_to(tree.root)}: not generated any more" for path in _left_over(tree, files)
    ]


def write(tree: Tree, files: dict[Path, str]) -> list[str]:
    """Write `files` and remove left-over ones; the changed paths, relative to the tree."""
    changed = stale_files(tree, files)
    for path in _left_over(tree, files):
        path.unlink()
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
    write_files(files)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.model_manifests", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is not current"
    )
    parser.add_argument("--tree", type=Path, default=REPO, help="repository root (default: this)")
    arguments = parser.parse_args(argv)
    tree = Tree(arguments.tree.resolve())
    if not (tree.chart / "values.yaml").is_file():
        parser.error(f"no chart at {tree.chart} (--tree names the repository's root)")
    try:
        files = generated_files(tree)
    except RuntimeError as error:  # helm missing, or the chart refuses its values
        print(f"cannot render the chart: {error}", file=sys.stderr)
        return 2
    if arguments.check:
        problems = stale_files(tree, files)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python -m deploy.model_manifests", file=sys.stderr)
        return 1 if problems else 0
    for change in write(tree, files):
        print(f"updated {change}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
