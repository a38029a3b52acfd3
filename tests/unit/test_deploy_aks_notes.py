"""The AKS notes of docs/deploy.md: their kustomize patches, built on top of `overlays/prod`
as written, change what the notes say and nothing breaks the build."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from deploy.external_tools import REPO
from deploy.render import kustomize

DEPLOY_DOC = REPO / "docs" / "deploy.md"
_YAML_BLOCK = re.compile(r"^(?P<indent> *)```yaml\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)


def aks_kustomization() -> str:
    """The overlay of the notes: their first block, with every later block's patches."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    section = text.split("## Azure Kubernetes Service (AKS)", 1)[1].split("\n## ", 1)[0]
    blocks = [
        "\n".join(line[len(match["indent"]) :] for line in match["body"].splitlines())
        for match in _YAML_BLOCK.finditer(section)
    ]
    assert len(blocks) == 3, "the AKS notes have an overlay and two blocks of patches"
    return "\n".join(blocks)


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    overlay = tmp_path_factory.mktemp("aks")
    # kustomize takes no absolute path to a base: the overlay reaches it from where it is.
    prod = os.path.relpath(REPO / "overlays" / "prod", overlay)
    kustomization = aks_kustomization().replace("resources: [../prod]", f"resources: [{prod}]")
    (overlay / "kustomization.yaml").write_text(kustomization, encoding="utf-8")
    return kustomize(Path(overlay))


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_the_namespace_carries_the_revision_label_only(objects: list[dict[str, Any]]) -> None:
    labels = one(objects, "Namespace", "mtc")["metadata"]["labels"]

    assert labels["istio.io/rev"].startswith("asm-1-")
    assert "istio-injection" not in labels


def test_the_add_ons_ingress_gateway_is_selected_and_allowed(
    objects: list[dict[str, Any]],
) -> None:
    gateway = one(objects, "Gateway", "mtc-ingress")
    policy = one(objects, "AuthorizationPolicy", "mtc-gateway")

    assert gateway["spec"]["selector"] == {"istio": "aks-istio-ingressgateway-external"}
    assert policy["spec"]["rules"][0]["from"][0]["source"]["principals"] == [
        "cluster.local/ns/aks-istio-ingress/sa/aks-istio-ingressgateway-external"
    ]


def test_model_pods_get_a_web_identity_token_for_s3(objects: list[dict[str, Any]]) -> None:
    models = [
        o
        for o in objects
        if o["kind"] == "Deployment"
        and o["metadata"]["labels"].get("app.kubernetes.io/component") == "model"
    ]

    assert len(models) == 4
    for deployment in models:
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        env = {entry["name"]: entry.get("value") for entry in container["env"]}
        (token,) = [volume for volume in spec["volumes"] if volume["name"] == "aws-token"]
        assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == (
            "sts.amazonaws.com"
        )
        assert env["AWS_WEB_IDENTITY_TOKEN_FILE"] == "/var/run/secrets/aws/token"
        assert env["AWS_ROLE_ARN"].startswith("arn:aws:iam::")
        assert {"name": "aws-token", "mountPath": "/var/run/secrets/aws", "readOnly": True} in (
            container["volumeMounts"]
        )
