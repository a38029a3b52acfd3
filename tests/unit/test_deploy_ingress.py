"""Exposure without Istio: components/ingress (a Kubernetes Ingress) and components/gateway-api
(an HTTPRoute) render and validate, publish every public route of the gateway and none of its
internal ones, and wait for a task as long as the gateway may."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from deploy.render import REPO, Manifest, kustomize, without_hash_suffix
from deploy.validate import validate
from gateway.app import create_app
from gateway.settings import GatewaySettings

TASKS = ("sentiment", "disaster", "pose", "audio")
# Routes the gateway serves but leaves out of its OpenAPI document.
UNDOCUMENTED_PUBLIC_PATHS = ("/ui", "/ui/app.js", "/upload", "/v1/jobs", "/v1/jobs/123")
INTERNAL_PATHS = (
    "/metrics",
    "/health/live",
    "/health/ready",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/project/docs",
    "/project/openapi.json",
)
# The audio task's routes beyond /v1/audio/: the emergency-call project's.
AUDIO_PROJECT_PATHS = ("/predict", "/predict_s3")
# May fetch image URLs before it forwards to pose: its deadline is longer by that timeout.
POSE_URLS_PATH = "/api/v1/pose_classifier"


@functools.cache
def gateway_settings() -> GatewaySettings:
    """The gateway's settings as the base's ConfigMap mtc-gateway gives them (its own
    settings file and the task table generated from the chart); rendered once per run."""
    config_map = next(
        item
        for item in kustomize(REPO / "base")
        if item["kind"] == "ConfigMap"
        and without_hash_suffix(item["metadata"]["name"]) == "mtc-gateway"
    )
    values: dict[str, Any] = {
        name.removeprefix("MTC_GATEWAY_").lower(): value
        for name, value in config_map["data"].items()
    }
    values["authentication"] = "anonymous"
    return GatewaySettings.model_validate(
        {name: _json_or_text(value) for name, value in values.items()}
    )


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def public_paths() -> list[str]:
    """Every path a client may call: the OpenAPI document's (a sample for each template)."""
    settings = gateway_settings().model_copy(update={"web_page": True})
    documented = create_app(settings).openapi()["paths"]
    paths = [path.replace("{model_name}", "audio") for path in documented]
    return [path for path in paths if path not in INTERNAL_PATHS] + list(UNDOCUMENTED_PUBLIC_PATHS)


def rendered(tmp_path: Path, component: str) -> list[Manifest]:
    directory = tmp_path / "overlay"
    directory.mkdir()
    # kustomize refuses absolute paths to other kustomizations.
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: mtc\n"
        f"resources:\n  - {os.path.relpath(REPO / 'base', directory)}\n"
        f"components:\n  - {os.path.relpath(REPO / 'components' / component, directory)}\n"
    )
    return kustomize(directory)


def matches(kind: str, value: str, path: str) -> bool:
    """Whether a path match of an Ingress (Prefix, Exact) or an HTTPRoute (PathPrefix, Exact)
    takes `path`: a prefix matches whole path elements."""
    if kind == "Exact":
        return path == value
    prefix = value.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def ingress_takes(ingress: Manifest, path: str) -> bool:
    return any(
        matches(item["pathType"], item["path"], path)
        for rule in ingress["spec"]["rules"]
        for item in rule["http"]["paths"]
    )


def route_rule_for(route: Manifest, path: str) -> dict[str, Any] | None:
    """The HTTPRoute rule that takes `path`: exact matches first, then the longest prefix."""
    candidates = [
        (match["path"]["type"] == "Exact", len(match["path"]["value"]), rule)
        for rule in route["spec"]["rules"]
        for match in rule["matches"]
        if matches(match["path"]["type"], match["path"]["value"], path)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda candidate: candidate[:2])[2]


def task_of(path: str) -> str | None:
    for task in TASKS:
        if path.startswith((f"/v1/{task}/", f"/v2/models/{task}/")) or path == f"/v2/models/{task}":
            return task
    return "audio" if path in AUDIO_PROJECT_PATHS else None


@pytest.mark.parametrize("component", ["ingress", "gateway-api"])
def test_renders_and_validates_strictly(tmp_path: Path, component: str) -> None:
    assert validate(rendered(tmp_path, component)) == []


def test_the_ingress_publishes_the_public_routes_only(tmp_path: Path) -> None:
    (ingress,) = (m for m in rendered(tmp_path, "ingress") if m["kind"] == "Ingress")

    assert [path for path in public_paths() if not ingress_takes(ingress, path)] == []
    assert [path for path in INTERNAL_PATHS if ingress_takes(ingress, path)] == []
    backends = {
        item["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for item in rule["http"]["paths"]
    }
    assert backends == {"mtc-gateway"}


def test_the_ingress_waits_as_long_as_the_slowest_task_may_take(tmp_path: Path) -> None:
    (ingress,) = (m for m in rendered(tmp_path, "ingress") if m["kind"] == "Ingress")
    settings = gateway_settings()
    longest = max(settings.upstream_deadline_for(task) for task in TASKS)
    annotations = ingress["metadata"]["annotations"]
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        assert float(annotations[f"nginx.ingress.kubernetes.io/{name}"]) == (
            longest + settings.upstream_timeout_margin_seconds
        )


def test_the_http_route_publishes_the_public_routes_only_each_with_its_tasks_timeout(
    tmp_path: Path,
) -> None:
    (route,) = (m for m in rendered(tmp_path, "gateway-api") if m["kind"] == "HTTPRoute")
    settings = gateway_settings()

    assert [path for path in public_paths() if route_rule_for(route, path) is None] == []
    assert [path for path in INTERNAL_PATHS if route_rule_for(route, path) is not None] == []
    for path in public_paths():
        rule = route_rule_for(route, path)
        assert rule is not None
        task = task_of(path)
        # A task's deadline at the gateway plus one margin more: its 504 always comes first.
        deadline = (
            settings.upstream_deadline_for(task)
            if task
            else settings.request_timeout_seconds + settings.upstream_timeout_margin_seconds
        )
        if path == POSE_URLS_PATH:
            deadline = settings.upstream_deadline_for("pose") + settings.image_url_timeout_seconds
        expected = f"{deadline + settings.upstream_timeout_margin_seconds:g}s"
        assert rule["timeouts"]["request"] == expected, path
