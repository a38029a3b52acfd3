"""What the delivery lets reach what (issue 19, finding 5): metrics on ports of their own that
only Prometheus may reach, mutual TLS in the mesh, and Istio policies under which only the
ingress gateway calls the gateway's API, and only the gateway and the workers call models."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.render import PROD_VALUES, REPO, Manifest, helm_template, kustomize
from deploy.validate import validate

MODELS = ("mtc-sentiment", "mtc-disaster", "mtc-pose", "mtc-audio")
INGRESS_PRINCIPAL = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
INTERNAL_PATHS = ["/metrics", "/health/*"]
DOCS_PATHS = [
    "/docs",
    "/docs/*",
    "/redoc",
    "/openapi.json",
    "/project/docs",
    "/project/openapi.json",
]


@pytest.fixture(scope="module")
def prod() -> list[Manifest]:
    return kustomize(REPO / "overlays/prod")


def named(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def container_of(manifests: list[Manifest], deployment: str) -> dict[str, Any]:
    container: dict[str, Any] = named(manifests, "Deployment")[deployment]["spec"]["template"][
        "spec"
    ]["containers"][0]
    return container


def settings_of(manifests: list[Manifest], deployment: str) -> dict[str, str]:
    """The container's settings as its process sees them: its ConfigMaps in `envFrom` order
    (later ones win), then its literal `env` values."""
    container = container_of(manifests, deployment)
    config_maps = named(manifests, "ConfigMap")
    settings: dict[str, str] = {}
    for source in container.get("envFrom", []):
        settings.update(config_maps[source["configMapRef"]["name"]]["data"])
    settings.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return settings


def ports_of(container: dict[str, Any]) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container["ports"]}


def api_and_metrics_ports(manifests: list[Manifest], deployment: str) -> tuple[int, int]:
    settings = settings_of(manifests, deployment)
    if deployment == "mtc-gateway":
        return int(settings["MTC_GATEWAY_PORT"]), int(settings["MTC_GATEWAY_METRICS_PORT"])
    return int(settings["MTC_PORT"]), int(settings["MTC_METRICS_PORT"])


def test_metrics_have_a_port_of_their_own_and_only_prometheus_scrapes_it(
    prod: list[Manifest],
) -> None:
    services = named(prod, "Service")
    for name in (*MODELS, "mtc-gateway"):
        api_port, metrics_port = api_and_metrics_ports(prod, name)
        assert api_port != metrics_port, name
        assert ports_of(container_of(prod, name)) == {"http": api_port, "metrics": metrics_port}
        assert {p["name"]: p["targetPort"] for p in services[name]["spec"]["ports"]} == {
            "http": "http",
            "metrics": "metrics",
        }
    (monitor,) = named(prod, "ServiceMonitor").values()
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    scrape = named(prod, "NetworkPolicy")["mtc-allow-prometheus"]["spec"]
    assert [rule["ports"] for rule in scrape["ingress"]] == [
        [{"port": "metrics", "protocol": "TCP"}]
    ]
    # Clients reach the gateway's API port, never its metrics port.
    gateway = named(prod, "NetworkPolicy")["mtc-gateway-ingress"]["spec"]
    assert [port["port"] for rule in gateway["ingress"] for port in rule["ports"]] == ["http"]


def mesh_policies(manifests: list[Manifest]) -> tuple[dict[str, Any], dict[str, Any]]:
    """PeerAuthentication and AuthorizationPolicy specs, by the component they select."""

    def by_component(kind: str) -> dict[str, Any]:
        return {
            m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]: m["spec"]
            for m in manifests
            if m["kind"] == kind
        }

    return by_component("PeerAuthentication"), by_component("AuthorizationPolicy")


def principal_of(manifests: list[Manifest], deployment: str, namespace: str) -> str:
    account = named(manifests, "Deployment")[deployment]["spec"]["template"]["spec"][
        "serviceAccountName"
    ]
    return f"cluster.local/ns/{namespace}/sa/{account}"


def check_mesh_policies(manifests: list[Manifest], *, namespace: str, docs_public: bool) -> None:
    peer, authorization = mesh_policies(manifests)
    gateway_api, gateway_metrics = api_and_metrics_ports(manifests, "mtc-gateway")
    model_api, model_metrics = api_and_metrics_ports(manifests, "mtc-sentiment")
    worker_metrics = int(settings_of(manifests, "mtc-worker")["MTC_JOBS_METRICS_PORT"])
    metrics_ports = {"gateway": gateway_metrics, "model": model_metrics, "worker": worker_metrics}

    assert sorted(peer) == sorted(authorization) == ["gateway", "model", "worker"]
    for component, port in metrics_ports.items():
        assert peer[component]["mtls"] == {"mode": "STRICT"}, component
        assert peer[component]["portLevelMtls"] == {str(port): {"mode": "PERMISSIVE"}}, component
        assert authorization[component]["action"] == "ALLOW"
        assert authorization[component]["rules"][-1] == {
            "to": [{"operation": {"ports": [str(port)]}}]
        }, f"{component}: metrics port open to the scraper (NetworkPolicy limits who)"

    gateway_rules = authorization["gateway"]["rules"]
    assert gateway_rules[0] == {
        "from": [{"source": {"principals": [INGRESS_PRINCIPAL]}}],
        "to": [
            {
                "operation": {
                    "ports": [str(gateway_api)],
                    "notPaths": INTERNAL_PATHS + ([] if docs_public else DOCS_PATHS),
                }
            }
        ],
    }
    callers = [
        principal_of(manifests, "mtc-gateway", namespace),
        principal_of(manifests, "mtc-worker", namespace),
    ]
    assert authorization["model"]["rules"][0] == {
        "from": [{"source": {"principals": callers}}],
        "to": [{"operation": {"ports": [str(model_api)]}}],
    }
    assert len(gateway_rules) == len(authorization["model"]["rules"]) == 2
    assert len(authorization["worker"]["rules"]) == 1, "the worker serves metrics only"
    # Each policy selects the pods it is about.
    for component in metrics_ports:
        selector = authorization[component]["selector"]["matchLabels"]
        selected = [
            d["metadata"]["name"]
            for d in named(manifests, "Deployment").values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        expected = {"gateway": ["mtc-gateway"], "worker": ["mtc-worker"]}.get(component, MODELS)
        assert sorted(selected) == sorted(expected), component


def test_istio_lets_only_the_ingress_call_the_gateway_and_only_mtc_call_models(
    prod: list[Manifest],
) -> None:
    check_mesh_policies(prod, namespace="mtc", docs_public=False)


def test_the_chart_renders_the_same_policies_and_can_publish_the_docs(tmp_path: Path) -> None:
    charted = helm_template(PROD_VALUES)
    check_mesh_policies(charted, namespace="mtc", docs_public=False)

    docs = tmp_path / "docs.yaml"
    docs.write_text(yaml.safe_dump({"istio": {"exposeApiDocs": True}}))
    check_mesh_policies(helm_template(PROD_VALUES, docs), namespace="mtc", docs_public=True)

    assert mesh_policies(helm_template()) == ({}, {}), "istio.enabled is off by default"


def test_a_misspelt_policy_field_is_caught(prod: list[Manifest]) -> None:
    """The typed Istio models ignore unknown fields: a `notPath` would silently allow all."""
    manifests = copy.deepcopy(prod)
    policy = named(manifests, "AuthorizationPolicy")["mtc-gateway"]
    operation = policy["spec"]["rules"][0]["to"][0]["operation"]
    operation["notPath"] = operation.pop("notPaths")
    peer = named(manifests, "PeerAuthentication")["mtc-model"]
    peer["spec"]["portLevelMtls"]["9090"]["mode"] = "PERMISIVE"

    problems = validate(manifests, versions=())

    assert any("AuthorizationPolicy/mtc-gateway" in p and "notPath" in p for p in problems)
    assert any("PeerAuthentication/mtc-model" in p and "PERMISIVE" in p for p in problems)
