"""The Helm chart lints, renders valid objects, keeps optional features off by default, and
renders the same workloads as overlays/prod."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from deploy.check_chart_equivalence import check, compare
from deploy.external_tools import helm
from deploy.render import CHART, PROD_VALUES, REPO, Manifest, helm_template, kustomize
from deploy.validate import validate


def kinds(manifests: list[Manifest]) -> set[str]:
    return {m["kind"] for m in manifests}


@pytest.mark.parametrize("values", [[], ["--values", str(PROD_VALUES)]], ids=["default", "prod"])
def test_helm_lint_strict(values: list[str]) -> None:
    result = subprocess.run(
        [str(helm()), "lint", "--strict", str(CHART), *values],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_values_render_valid_objects_with_optional_features_off() -> None:
    manifests = helm_template()
    assert validate(manifests) == []
    assert kinds(manifests) == {
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
        # The jobs Redis, deployed with the worker (worker.enabled, as in overlays/dev).
        "StatefulSet",
    }
    replicas = {
        m["metadata"]["name"]: m["spec"].get("replicas")
        for m in manifests
        if m["kind"] in ("Deployment", "StatefulSet")
    }
    assert "mtc-worker" in replicas
    assert set(replicas.values()) == {1}


def test_prod_values_render_valid_objects() -> None:
    assert validate(helm_template(PROD_VALUES)) == []


def test_chart_and_prod_overlay_render_the_same_objects() -> None:
    assert check() == []


def test_equivalence_check_catches_drift(tmp_path: Path) -> None:
    drift = tmp_path / "drift.yaml"
    drift.write_text(
        "models:\n"
        "  pose:\n"
        "    startupFailureThreshold: 61\n"
        "    config:\n"
        "      MTC_MAX_BATCH_SIZE: '16'\n"
        "gateway:\n"
        "  resources:\n"
        "    limits:\n"
        "      memory: 1Gi\n"
        "worker:\n"
        "  terminationGracePeriodSeconds: 301\n"
        "jobsRedis:\n"
        "  persistence:\n"
        "    size: 3Gi\n"
    )
    problems = compare(kustomize(REPO / "overlays" / "prod"), helm_template(PROD_VALUES, drift))
    assert any("Deployment/mtc-pose" in p and "failureThreshold" in p for p in problems)
    assert any("ConfigMap/mtc-pose" in p and "MTC_MAX_BATCH_SIZE" in p for p in problems)
    assert any("Deployment/mtc-gateway" in p and "memory" in p for p in problems)
    assert any("Deployment/mtc-worker" in p and "terminationGracePeriod" in p for p in problems)
    assert any("StatefulSet/mtc-jobs-redis" in p and "storage" in p for p in problems)


def test_schema_refuses_bad_values(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "models:\n  sentiment:\n    kind: Video Stream\n    modelUri: ftp://x\n"
        "istio:\n  enbled: true\n"
    )
    result = subprocess.run(
        [str(helm()), "template", "mtc", str(CHART), "--values", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    for field in ("kind", "modelUri", "enbled"):
        assert field in result.stderr, result.stderr


def test_keda_and_queue_depth_options_render_valid_objects(tmp_path: Path) -> None:
    values = tmp_path / "scaling.yaml"
    values.write_text(
        "models:\n"
        "  sentiment:\n"
        "    autoscaling:\n"
        "      enabled: true\n"
        "      queueDepth:\n"
        "        enabled: true\n"
    )
    queue_depth = helm_template(values)
    assert validate(queue_depth) == []
    (hpa,) = [m for m in queue_depth if m["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["metrics"][1]["pods"]["metric"]["name"] == "mtc_queue_depth"
    keda = tmp_path / "keda.yaml"
    keda.write_text("keda:\n  enabled: true\n")
    with_keda = helm_template(keda)
    assert validate(with_keda) == []
    assert "HorizontalPodAutoscaler" not in kinds(with_keda)
    scaled = {m["metadata"]["name"]: m for m in with_keda if m["kind"] == "ScaledObject"}
    # The four models and the worker (KEDA takes over the external metrics API).
    assert len(scaled) == 5
    (worker_trigger,) = scaled["mtc-worker"]["spec"]["triggers"]
    assert worker_trigger["metadata"]["query"] == (
        'max(mtc_jobs_queue_length{namespace="mtc"})'
        ' + (sum(mtc_jobs_running{namespace="mtc"}) or vector(0))'
    )
    thresholds = {
        name: next(t for t in m["spec"]["triggers"] if t["type"] == "prometheus")["metadata"]
        for name, m in scaled.items()
    }
    assert thresholds["mtc-audio"]["threshold"] == "4"
    assert thresholds["mtc-pose"]["query"] == 'sum(mtc_queue_depth{namespace="mtc", task="pose"})'
    assert all(
        "replicas" not in m["spec"]
        for m in with_keda
        if m["kind"] == "Deployment"
        and m["metadata"]["name"] != "mtc-redis"
        and m["metadata"]["name"] != "mtc-gateway"
    )


def test_a_disabled_model_leaves_no_gateway_setting_behind(tmp_path: Path) -> None:
    values = tmp_path / "no-audio.yaml"
    values.write_text("models:\n  audio:\n    enabled: false\n")
    manifests = helm_template(values)
    names = {m["metadata"]["name"] for m in manifests}
    assert not any("audio" in name for name in names), names
    (config,) = [
        m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "mtc-gateway"
    ]
    # The gateway refuses to start when a timeout or kind names a task without upstream.
    for setting in ("UPSTREAMS", "TASK_KINDS", "TASK_TIMEOUTS"):
        assert "audio" not in json.loads(config["data"][f"MTC_GATEWAY_{setting}"]), setting
    (jobs,) = [
        m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "mtc-jobs"
    ]
    for setting in ("UPSTREAMS", "TASK_KINDS"):
        assert "audio" not in json.loads(jobs["data"][f"MTC_JOBS_{setting}"]), setting


def test_worker_options_render_valid_objects(tmp_path: Path) -> None:
    values = tmp_path / "worker.yaml"
    values.write_text(
        "worker:\n"
        "  autoscaling:\n"
        "    enabled: true\n"
        "    jobsPerReplica: '10'\n"
        "jobsRedis:\n"
        "  persistence:\n"
        "    size: 5Gi\n"
        "    storageClass: fast-ssd\n"
    )
    manifests = helm_template(values)
    assert validate(manifests) == []
    (hpa,) = [m for m in manifests if m["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["metadata"]["name"] == "mtc-worker"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "mtc_jobs_backlog"
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "10"}
    (redis,) = [m for m in manifests if m["kind"] == "StatefulSet"]
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"


def test_without_the_worker_nothing_of_the_jobs_remains(tmp_path: Path) -> None:
    values = tmp_path / "no-worker.yaml"
    values.write_text("worker:\n  enabled: false\n")
    for manifests in (helm_template(values), helm_template(PROD_VALUES, values)):
        assert validate(manifests) == []
        names = {m["metadata"]["name"] for m in manifests}
        assert not {name for name in names if "worker" in name or "jobs" in name}, names
        (gateway,) = [
            m
            for m in manifests
            if m["kind"] == "Deployment" and m["metadata"]["name"] == "mtc-gateway"
        ]
        container = gateway["spec"]["template"]["spec"]["containers"][0]
        # No broker URL: the gateway leaves its /v1/jobs routes off.
        assert not any("JOBS" in variable["name"] for variable in container.get("env", []))
        assert [s["configMapRef"]["name"] for s in container["envFrom"]] == ["mtc-gateway"]


def test_schema_refuses_derived_or_misspelt_jobs_settings(tmp_path: Path) -> None:
    bad = tmp_path / "bad-jobs.yaml"
    bad.write_text(
        "worker:\n"
        "  config:\n"
        "    MTC_JOBS_UPSTREAMS: '{}'\n"
        "    MTC_JOB_CHUNK_SIZE: '8'\n"
        "jobsRedis:\n"
        "  persistence:\n"
        "    sise: 1Gi\n"
    )
    result = subprocess.run(
        [str(helm()), "template", "mtc", str(CHART), "--values", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    for field in ("MTC_JOBS_UPSTREAMS", "MTC_JOB_CHUNK_SIZE", "sise"):
        assert field in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ("enabled: false\n", "set auth.anonymous=true"),
        ("enabled: true\n  anonymous: true\n", "choose API keys or anonymous"),
    ],
    ids=["neither", "both"],
)
def test_the_chart_refuses_an_open_gateway_nobody_asked_for(
    tmp_path: Path, auth: str, message: str
) -> None:
    values = tmp_path / "auth.yaml"
    values.write_text("auth:\n  " + auth)
    result = subprocess.run(
        [str(helm()), "template", "mtc", str(CHART), "--values", str(values)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_the_chart_requires_keys_unless_anonymous_is_set(tmp_path: Path) -> None:
    def gateway_config(manifests: list[Manifest]) -> dict[str, str]:
        [config] = [
            m
            for m in manifests
            if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "mtc-gateway"
        ]
        data: dict[str, str] = config["data"]
        return data

    assert gateway_config(helm_template())["MTC_GATEWAY_AUTHENTICATION"] == "keys"
    values = tmp_path / "anonymous.yaml"
    values.write_text("auth:\n  enabled: false\n  anonymous: true\n")
    assert gateway_config(helm_template(values))["MTC_GATEWAY_AUTHENTICATION"] == "anonymous"
