"""The kustomize delivery: base, overlays and components render, validate, and hold the
properties the issue asks for (hardened pods, probes, drain time, network policies...)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from deploy.render import REPO, Manifest, kustomize, without_hash_suffix
from deploy.validate import KUBERNETES_VERSIONS, KUSTOMIZATIONS, validate, validate_builtin
from gateway.settings import GatewaySettings
from tests.support.deploy_tools import promtool

MODELS = ("mtc-sentiment", "mtc-disaster", "mtc-pose", "mtc-audio")
PRESTOP_SECONDS = 5
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    return {path: kustomize(REPO / path) for path in KUSTOMIZATIONS}


def by_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    """Objects of one kind by name; generated ConfigMaps by the name the kustomization gives
    them, without the hash suffix."""
    return {
        without_hash_suffix(m["metadata"]["name"])
        if kind == "ConfigMap"
        else m["metadata"]["name"]: m
        for m in manifests
        if m["kind"] == kind
    }


def workloads(manifests: list[Manifest]) -> dict[str, Manifest]:
    """Every object that runs pods (Deployments and StatefulSets), by name."""
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] in WORKLOAD_KINDS}


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
    assert {"mtc-worker", "mtc-jobs-redis"} <= set(workloads(rendered[path]))
    for name, deployment in workloads(rendered[path]).items():
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
        for container in spec["containers"]:
            assert {"readinessProbe", "livenessProbe"} <= set(container), (name, container["name"])
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
        assert server["ports"] == [
            {"name": "http", "containerPort": int(settings["MTC_PORT"])},
            {"name": "metrics", "containerPort": int(settings["MTC_METRICS_PORT"])},
        ]


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
                for d in workloads(manifests).values()
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
    assert all(d["spec"].get("replicas", 1) == 1 for d in workloads(dev).values())
    prod = rendered["overlays/prod"]
    hpas = by_kind(prod, "HorizontalPodAutoscaler")
    assert sorted(hpas) == sorted([*MODELS, "mtc-gateway", "mtc-worker"])
    for name, hpa in hpas.items():
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        if name != "mtc-worker":  # it scales on queue length (test_worker_scales_on_...)
            assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert sorted(by_kind(prod, "PodDisruptionBudget")) == sorted(hpas)
    for kind in ("Gateway", "VirtualService", "DestinationRule", "ServiceMonitor", "PodMonitor"):
        assert by_kind(prod, kind), kind
    images = [
        c["image"]
        for d in workloads(prod).values()
        for c in pod_spec(d)["containers"] + pod_spec(d).get("initContainers", [])
    ]
    assert all(":" in image and not image.endswith(":latest") for image in images), images
    ours = [image for image in images if "/mtc/mtc-" in image]
    assert {image.rsplit(":", 1)[0].rsplit("/", 1)[1] for image in ours} == {
        "mtc-text",
        "mtc-pose",
        "mtc-audio",
        "mtc-gateway",
        "mtc-worker",
    }
    assert all(image.startswith("registry.example.com/mtc/") for image in ours), ours


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
    # The job queue is not the model services' business.
    assert allowed_components("mtc-jobs-redis-ingress") == ["gateway", "worker"]
    selected = policies["mtc-jobs-redis-ingress"]["spec"]["podSelector"]["matchLabels"]
    queue = workloads(rendered["base"])["mtc-jobs-redis"]["spec"]["template"]["metadata"]
    assert selected.items() <= queue["labels"].items()


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
    assert sorted(name.rsplit("-", 1)[0] for name in dev_secrets) == ["mtc-jobs-redis", "mtc-redis"]


SECRET_LIKE = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY)(?!S_FILE)", re.IGNORECASE)


@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_no_secret_is_kept_in_a_config_map_or_plain_env(
    rendered: dict[str, list[Manifest]], path: str
) -> None:
    for name, config_map in by_kind(rendered[path], "ConfigMap").items():
        for key, value in (config_map.get("data") or {}).items():
            assert not SECRET_LIKE.search(key), (path, name, key)
            assert "redis://:" not in str(value) or "$(" in str(value), (path, name, key)
    for name, deployment in workloads(rendered[path]).items():
        spec = pod_spec(deployment)
        for container in spec["containers"] + spec.get("initContainers", []):
            for variable in container.get("env", []):
                if SECRET_LIKE.search(variable["name"]):
                    assert "value" not in variable, (path, name, variable["name"])
                    assert "secretKeyRef" in variable.get("valueFrom", {}), (path, name)
                # URLs with a password take it from a Secret-backed variable.
                value = str(variable.get("value", ""))
                assert "redis://:" not in value or "$(" in value, (path, name, variable["name"])


def test_queue_depth_component_adds_a_pods_metric(tmp_path: Path) -> None:
    manifests = kustomize_with_components(tmp_path, "scale-on-queue-depth")
    assert validate(manifests) == []
    hpas = by_kind(manifests, "HorizontalPodAutoscaler")
    for name in MODELS:
        metrics = hpas[name]["spec"]["metrics"]
        assert [m["type"] for m in metrics] == ["Resource", "Pods"]
        assert metrics[1]["pods"]["metric"]["name"] == "mtc_queue_depth"
    assert [m["type"] for m in hpas["mtc-gateway"]["spec"]["metrics"]] == ["Resource"]
    assert [m["type"] for m in hpas["mtc-worker"]["spec"]["metrics"]] == ["External"]
    targets = {name: hpas[name]["spec"]["metrics"][1]["pods"]["target"] for name in MODELS}
    # A clip costs seconds where a text costs milliseconds.
    assert targets["mtc-audio"]["averageValue"] == "4"
    assert targets["mtc-sentiment"]["averageValue"] == "32"


def test_keda_component_replaces_the_model_hpas(tmp_path: Path) -> None:
    manifests = kustomize_with_components(tmp_path, "keda")
    assert validate(manifests) == []
    scaled = by_kind(manifests, "ScaledObject")
    # KEDA serves the external metrics API: the worker's HPA on it has to go too.
    assert sorted(scaled) == sorted([*MODELS, "mtc-worker"])
    assert sorted(by_kind(manifests, "HorizontalPodAutoscaler")) == ["mtc-gateway"]
    (worker_trigger,) = scaled.pop("mtc-worker")["spec"]["triggers"]
    # The adapter's backlog query, with the namespace KEDA cannot fill in.
    backlog = (
        adapter_backlog_rule()["metricsQuery"]
        .replace("<<.Series>>", "mtc_jobs_queue_length")
        .replace("<<.LabelMatchers>>", 'namespace="mtc"')
        .replace("avg_over_time(", "")
        .replace("[1m])", "")
    )
    assert worker_trigger["metadata"]["query"] == backlog
    for name, scaled_object in scaled.items():
        (prometheus,) = [t for t in scaled_object["spec"]["triggers"] if t["type"] == "prometheus"]
        task = name.removeprefix("mtc-")
        assert f'task="{task}"' in prometheus["metadata"]["query"]
        assert "mtc_queue_depth" in prometheus["metadata"]["query"]
        expected = "4" if task == "audio" else "32"
        assert prometheus["metadata"]["threshold"] == expected, name


def test_worker_scales_on_queue_length_through_the_adapter(
    rendered: dict[str, list[Manifest]],
) -> None:
    base = rendered["base"]
    hpa = by_kind(base, "HorizontalPodAutoscaler")["mtc-worker"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "mtc-worker",
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 5)
    # External: every worker reports the whole queue, so a per-pod average would overshoot.
    (metric,) = hpa["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"] == {"name": "mtc_jobs_backlog"}
    target = metric["external"]["target"]
    assert target["type"] == "AverageValue"
    settings = by_kind(base, "ConfigMap")["mtc-jobs"]["data"]
    # One replica per MTC_JOBS_CONCURRENCY unfinished jobs: each gets a thread.
    assert target["averageValue"] == settings["MTC_JOBS_CONCURRENCY"]
    # Prometheus Adapter serves that name as an external metric, from the queue length the
    # workers export, scoped to the HPA's namespace.
    rule = adapter_backlog_rule()
    assert rule["name"]["as"] == "mtc_jobs_backlog"
    assert re.fullmatch(rule["name"]["matches"], "mtc_jobs_queue_length")
    assert rule["seriesQuery"].startswith("mtc_jobs_queue_length{")
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}}
    adapter = yaml.safe_load(ADAPTER_VALUES.read_text())
    assert [r["name"]["as"] for r in adapter["rules"]["custom"]] == ["mtc_queue_depth"]


ADAPTER_VALUES = REPO / "deploy" / "prometheus-adapter" / "values.yaml"


def adapter_backlog_rule() -> dict[str, Any]:
    adapter = yaml.safe_load(ADAPTER_VALUES.read_text())
    (rule,) = adapter["rules"]["external"]
    assert isinstance(rule, dict)
    return rule


BACKLOG_TEST = """
rule_files: [rules.yaml]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      # Two workers read the same queue (6 waiting) and run 4 and 2 jobs; another namespace.
      - series: 'mtc_jobs_queue_length{namespace="mtc", pod="mtc-worker-a"}'
        values: 6x8
      - series: 'mtc_jobs_queue_length{namespace="mtc", pod="mtc-worker-b"}'
        values: 6x8
      - series: 'mtc_jobs_running{namespace="mtc", pod="mtc-worker-a"}'
        values: 4x8
      - series: 'mtc_jobs_running{namespace="mtc", pod="mtc-worker-b"}'
        values: 2x8
      - series: 'mtc_jobs_queue_length{namespace="other", pod="mtc-worker-c"}'
        values: 100x8
      - series: 'mtc_jobs_queue_length{namespace="idle", pod="mtc-worker-d"}'
        values: 3x8
    promql_expr_test:
      - expr: backlog:mtc
        eval_time: 2m
        exp_samples:
          - labels: backlog:mtc
            value: 12
      # A namespace whose workers run nothing still has a backlog: its waiting jobs.
      - expr: backlog:idle
        eval_time: 2m
        exp_samples:
          - labels: backlog:idle
            value: 3
"""


def test_backlog_query_counts_waiting_once_and_running_per_worker(tmp_path: Path) -> None:
    """The adapter's query, as it runs for an HPA in a namespace, evaluated by promtool."""
    query = adapter_backlog_rule()["metricsQuery"].replace("<<.Series>>", "mtc_jobs_queue_length")
    rules = {
        "groups": [
            {
                "name": "backlog",
                "rules": [
                    {
                        "record": f"backlog:{namespace}",
                        "expr": query.replace("<<.LabelMatchers>>", f'namespace="{namespace}"'),
                    }
                    for namespace in ("mtc", "idle")
                ],
            }
        ]
    }
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "test.yaml").write_text(BACKLOG_TEST)
    result = subprocess.run(
        [str(promtool()), "test", "rules", "test.yaml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_queue_redis_never_evicts_and_persists(rendered: dict[str, list[Manifest]]) -> None:
    base = rendered["base"]
    config_maps = by_kind(base, "ConfigMap")
    queue = config_maps["mtc-jobs-redis"]["data"]["redis.conf"].splitlines()
    assert "maxmemory-policy noeviction" in queue
    assert "appendonly yes" in queue
    assert "dir /data" in queue
    # The cache stays a cache: evicting, nothing on disk.
    cache = config_maps["mtc-redis"]["data"]["redis.conf"].splitlines()
    assert "maxmemory-policy allkeys-lru" in cache
    assert "appendonly no" in cache
    redis = by_kind(base, "StatefulSet")["mtc-jobs-redis"]
    assert redis["spec"]["replicas"] == 1
    spec = pod_spec(redis)
    (container,) = spec["containers"]
    (data,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/data"]
    # /data is the volume claim, not an emptyDir of the pod.
    assert data["name"] not in {volume["name"] for volume in spec["volumes"]}
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == data["name"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert env_of(container)["REDIS_PASSWORD"] == {
        "secretKeyRef": {"name": "mtc-jobs-redis", "key": "password"}
    }
    assert "requirepass" in container["args"][0]
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"]
    service = by_kind(base, "Service")[redis["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"


def test_gateway_and_workers_share_the_jobs_settings(rendered: dict[str, list[Manifest]]) -> None:
    for path in KUSTOMIZATIONS:
        manifests = rendered[path]
        deployments = by_kind(manifests, "Deployment")
        for name in ("mtc-gateway", "mtc-worker"):
            container = pod_spec(deployments[name])["containers"][0]
            sources = [
                without_hash_suffix(source["configMapRef"]["name"])
                for source in container["envFrom"]
            ]
            assert "mtc-jobs" in sources, (path, name)
            env = env_of(container)
            secret = env["JOBS_REDIS_PASSWORD"]["secretKeyRef"]
            # overlays/dev generates the Secret, with a content hash after the name.
            assert secret["name"].startswith("mtc-jobs-redis"), (path, name)
            assert secret["key"] == "password"
            broker = "redis://:$(JOBS_REDIS_PASSWORD)@mtc-jobs-redis:6379/0"
            assert env["MTC_JOBS_BROKER_URL"] == broker, (path, name)
            assert env["MTC_JOBS_REDIS_URL"] == broker.replace("/0", "/1"), (path, name)
            # $(VAR) expands only variables defined earlier in the list.
            names = [variable["name"] for variable in container["env"]]
            assert names.index("JOBS_REDIS_PASSWORD") < names.index("MTC_JOBS_BROKER_URL")
    manifests = rendered["overlays/prod"]
    settings = by_kind(manifests, "ConfigMap")["mtc-jobs"]["data"]
    gateway = by_kind(manifests, "ConfigMap")["mtc-gateway"]["data"]
    upstreams = json.loads(settings["MTC_JOBS_UPSTREAMS"])
    assert upstreams == json.loads(gateway["MTC_GATEWAY_UPSTREAMS"])
    assert json.loads(settings["MTC_JOBS_TASK_KINDS"]) == json.loads(
        gateway["MTC_GATEWAY_TASK_KINDS"]
    )
    services = by_kind(manifests, "Service")
    for url in upstreams.values():
        service = services[url.removeprefix("http://")]
        assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "model"
    for key in ("MTC_JOBS_INPUT_ALLOWLIST", "MTC_JOBS_OUTPUT_ALLOWLIST"):
        assert json.loads(settings[key]) == [], "no bucket is readable or writable by default"


def test_worker_probes_its_own_health_and_finishes_chunks_on_stop(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["overlays/prod"]
    deployment = by_kind(manifests, "Deployment")["mtc-worker"]
    spec = pod_spec(deployment)
    (worker,) = spec["containers"]
    settings = by_kind(manifests, "ConfigMap")["mtc-jobs"]["data"]
    assert worker["ports"] == [
        {"name": "metrics", "containerPort": int(settings["MTC_JOBS_METRICS_PORT"])}
    ]
    # Not /metrics: it shows the queue length, which is Redis's to give (issue 19).
    assert worker["startupProbe"]["httpGet"] == {"path": "/health/live", "port": "metrics"}
    assert worker["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "metrics"}
    assert "command" not in worker, "the image's CMD runs python -m services.jobs.worker"
    assert "lifecycle" not in worker, "no traffic to drain: SIGTERM starts Celery's warm shutdown"
    # On SIGTERM each running job finishes its current chunk: every attempt may time out.
    attempts = 1 + int(settings["MTC_JOBS_RETRY_ATTEMPTS"])
    chunk = attempts * float(settings["MTC_JOBS_REQUEST_TIMEOUT_SECONDS"])
    assert spec["terminationGracePeriodSeconds"] >= chunk + 60
    assert spec["serviceAccountName"] == "mtc-worker"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "worker"
    # The sidecar stays until the worker has exited, so its last calls get through.
    annotation = deployment["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"]
    assert yaml.safe_load(annotation)["proxyMetadata"] == {
        "EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "true"
    }
    # Prometheus scrapes the workers' pods (no Service) and may reach their metrics port.
    (monitor,) = by_kind(manifests, "PodMonitor").values()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert "mtc-worker" not in by_kind(manifests, "Service")
    scrape = by_kind(manifests, "NetworkPolicy")["mtc-allow-prometheus"]["spec"]
    (component,) = [
        e for e in scrape["podSelector"]["matchExpressions"] if e["key"].endswith("component")
    ]
    assert "worker" in component["values"]
    assert {"port": "metrics", "protocol": "TCP"} in scrape["ingress"][0]["ports"]


def gateway_settings_of(manifests: list[Manifest]) -> dict[str, str]:
    """The gateway's MTC_GATEWAY_* settings as its pod would see them: the ConfigMap, then
    the container's literal `env` values."""
    config = by_kind(manifests, "ConfigMap")["mtc-gateway"]
    settings = {k: v for k, v in config["data"].items() if k.startswith("MTC_GATEWAY_")}
    [container] = pod_spec(workloads(manifests)["mtc-gateway"])["containers"]
    for item in container.get("env", []):
        if item["name"].startswith("MTC_GATEWAY_") and "value" in item:
            settings[item["name"]] = item["value"]
    return settings


def test_a_gateway_without_its_keys_file_refuses_to_start(
    rendered: dict[str, list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """base/ alone asks for API keys without mounting any: the gateway stops at its settings
    instead of serving everyone. prod mounts keys; dev is anonymous on purpose."""

    def load(path: str) -> GatewaySettings:
        with monkeypatch.context() as patch:
            for name, value in gateway_settings_of(rendered[path]).items():
                patch.setenv(name, value)
            # Cluster DNS names, not resolvable here; settings validation does not resolve.
            return GatewaySettings()

    with pytest.raises(ValidationError, match="MTC_GATEWAY_API_KEYS_FILE is unset"):
        load("base")
    assert load("overlays/prod").authentication == "keys"
    assert load("overlays/prod").api_keys_file is not None
    assert load("overlays/dev").authentication == "anonymous"
