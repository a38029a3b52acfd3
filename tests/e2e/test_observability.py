"""Every dashboard and alert query, run against a real Prometheus that scraped the local stack.

The stack (`python -m gateway.local_stack`) runs with a Redis cache, API keys on, and a pose
timeout at the gateway far below what the model needs, so the failure paths the dashboards
and alerts watch (5xx, upstream timeouts, refused keys, requests before a model is loaded,
Redis going down) really happen. Prometheus scrapes every process each second with the
labels Prometheus Operator would add in Kubernetes (namespace, pod, service, job) and loads
the alert rules the chart ships.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy.observability.alerts import all_alerts
from deploy.observability.dashboards import all_dashboards, to_json
from tests.support.deploy_tools import prometheus, promtool
from tests.support.pose_images import opencv_doc_data, pedestrian_crop
from tests.support.processes import (
    free_port,
    local_stack_command,
    start,
    start_redis,
    stop,
    wait_for_http,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / ".mtc" / "models"
RULES = REPO / "charts" / "mtc" / "rules" / "mtc-alerts.yaml"
NAMESPACE = "mtc"
TASKS = ("sentiment", "disaster", "pose")
API_KEY = "mtc_observability-test-key-0123456789abcdef"
OVERLOAD_ITEMS = 64
# Grafana's variables as a user choosing the namespace and "All" tasks would set them.
VARIABLES = {"$namespace": NAMESPACE, "$task": ".+", "$__rate_interval": "1m"}


@dataclass
class Observed:
    """The running stack and the Prometheus that scrapes it."""

    gateway: str
    services: dict[str, str]
    prometheus: str
    redis: subprocess.Popen[bytes]


def consecutive_free_ports(count: int) -> int:
    """A port P such that P .. P + count - 1 are free right now."""
    for _ in range(100):
        first = free_port()
        sockets: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return first
    raise RuntimeError(f"no {count} consecutive free ports found")


def prometheus_config(
    gateway_port: int, service_ports: dict[str, int], worker_port: int
) -> dict[str, Any]:
    """Scrape jobs named and labelled as a ServiceMonitor (and, for the jobs worker, a
    PodMonitor) would make them."""
    targets = (
        {"mtc-gateway": gateway_port}
        | {f"mtc-{t}": p for t, p in service_ports.items()}
        | {"mtc-worker": worker_port}
    )
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{port}"],
                        "labels": {"namespace": NAMESPACE, "service": job, "pod": f"{job}-0"},
                    }
                ],
            }
            for job, port in targets.items()
        ],
    }


def query(base: str, expr: str) -> list[dict[str, Any]]:
    """Instant query; fails the test on a PromQL error."""
    response = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=30)
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{expr}"
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    return [float(s["value"][1]) for s in result if math.isfinite(float(s["value"][1]))]


def bind(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unbound variable in {expr}"
    return expr


def wait_for_scrapes(base: str, metric: str, condition: str, timeout: float = 60.0) -> None:
    """Until Prometheus has data for `metric condition` (the scrapes caught up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if query(base, f"{metric} {condition}"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"no {metric} {condition} in Prometheus within {timeout} s")


def send_traffic(gateway: str, services: dict[str, str], rounds: int) -> None:
    """A mix of requests: repeated texts (cache hits), new ones, bad input, pose images."""
    auth = {"authorization": f"Bearer {API_KEY}"}
    walker = pedestrian_crop(opencv_doc_data())
    with httpx.Client(timeout=60) as client:
        for round_number in range(rounds):
            for task in ("sentiment", "disaster"):
                texts = ["a calm day", f"round {round_number} of the load"]
                response = client.post(
                    f"{gateway}/v1/{task}/predict", json={"text": texts}, headers=auth
                )
                assert response.status_code == 200, response.text
            # 422 through the gateway: a 4xx status class.
            client.post(f"{gateway}/v1/sentiment/predict", json={"text": []}, headers=auth)
            # The gateway gives pose 1 ms: it answers 504 and counts an upstream timeout.
            files = [("image", ("walker.png", walker, "image/png"))]
            pose = client.post(f"{gateway}/v1/pose/predict", files=files, headers=auth)
            assert pose.status_code in (503, 504), pose.text
            # The pose service itself, directly: its own metrics get traffic.
            direct = client.post(f"{services['pose']}/v1/pose/predict", files=files)
            assert direct.status_code == 200, direct.text
            time.sleep(1.0)
        run_a_job(client, gateway, auth)
        unauthenticated = client.post(f"{gateway}/v1/sentiment/predict", json={"text": ["x"]})
        assert unauthenticated.status_code == 401, unauthenticated.text
        bad_key = client.post(
            f"{gateway}/v1/sentiment/predict",
            json={"text": ["x"]},
            headers={"authorization": "Bearer mtc_not-a-key"},
        )
        assert bad_key.status_code == 401, bad_key.text


def run_a_job(client: httpx.Client, gateway: str, auth: dict[str, str]) -> None:
    """A small inline batch job through the gateway, run by the stack's jobs worker."""
    texts = [f"job review {index}: a film worth seeing" for index in range(150)]
    submitted = client.post(
        f"{gateway}/v1/jobs", json={"task": "sentiment", "inputs": texts}, headers=auth
    )
    assert submitted.status_code == 202, submitted.text
    location = submitted.headers["location"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = client.get(f"{gateway}{location}", headers=auth).json()
        if job["state"] not in ("queued", "running"):
            break
        time.sleep(0.2)
    assert job["state"] == "succeeded", job


def overload(service: str) -> None:
    """Several full requests at once: more items than the queue holds, so some get 429."""

    def post(number: int) -> int:
        texts = [
            f"burst {number} item {item}: a review of a film" for item in range(OVERLOAD_ITEMS)
        ]
        response = httpx.post(f"{service}/v1/sentiment/predict", json={"text": texts}, timeout=60)
        return response.status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(post, range(6)))
    assert 429 in statuses, statuses
    assert 200 in statuses, statuses


def reject_before_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """As soon as the service listens, ask it to predict: its model is still loading."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the stack exited while starting")
        try:
            response = httpx.post(f"{url}/v1/sentiment/predict", json={"text": ["x"]}, timeout=5)
        except httpx.TransportError:
            time.sleep(0.02)
            continue
        return response.status_code
    raise TimeoutError(f"{url} never answered")


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    prometheus_binary, _ = prometheus(), promtool()
    # Only the starters this stack serves (`make models` builds them; here if missing).
    only = [option for task in TASKS for option in ("--only", task)]
    subprocess.run(
        [sys.executable, "-m", "services.lifecycle.cli", "models", "build", *only],
        check=True,
        cwd=REPO,
    )
    scratch = tmp_path_factory.mktemp("observability")
    keys = scratch / "api-keys"
    keys.write_text(f"observability {hashlib.sha256(API_KEY.encode()).hexdigest()} rate=0\n")
    redis_port, gateway_port, worker_port = free_port(), free_port(), free_port()
    first_service = consecutive_free_ports(len(TASKS))
    service_ports = {task: first_service + offset for offset, task in enumerate(TASKS)}
    redis = start_redis(redis_port)
    stack_log = scratch / "stack.log"
    stack = start(
        local_stack_command(
            gateway_port,
            first_service,
            "--model",
            f"sentiment={MODELS_DIR / 'sentiment'}",
            "--model",
            f"disaster={MODELS_DIR / 'disaster'}",
            "--pose-model",
            f"pose={MODELS_DIR / 'pose'}",
            "--jobs-metrics-port",
            str(worker_port),
        ),
        env={
            # Inherited by every process: the services share Redis, the gateway checks keys.
            "MTC_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "MTC_GATEWAY_API_KEYS_FILE": str(keys),
            "MTC_GATEWAY_TASK_TIMEOUTS": json.dumps({"pose": 0.001}),
            # With no room over the service's deadline, pose times out in the gateway.
            "MTC_GATEWAY_UPSTREAM_TIMEOUT_MARGIN_SECONDS": "0.001",
            # A short queue, so a burst overflows it (429, counted as refused: overloaded).
            "MTC_MAX_QUEUED_ITEMS": str(OVERLOAD_ITEMS),
            "MTC_MAX_ITEMS_PER_REQUEST": str(OVERLOAD_ITEMS),
        },
        log=stack_log,
    )
    config = scratch / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(gateway_port, service_ports, worker_port)))
    prometheus_port = free_port()
    prometheus_process = start(
        [
            str(prometheus_binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={scratch / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        log=scratch / "prometheus.log",
    )
    gateway = f"http://127.0.0.1:{gateway_port}"
    services = {task: f"http://127.0.0.1:{port}" for task, port in service_ports.items()}
    base = f"http://127.0.0.1:{prometheus_port}"
    try:
        early = reject_before_ready(services["sentiment"], stack)
        assert early == 503, f"sentiment answered {early} before its model could be loaded"
        wait_for_http(f"{gateway}/health/ready", stack, timeout=300)
        wait_for_http(f"{base}/-/ready", prometheus_process, timeout=60)
        send_traffic(gateway, services, rounds=8)
        overload(services["sentiment"])
        wait_for_scrapes(base, "sum(mtc_gateway_requests_total)", "> 0")
        # Two scrapes after the last request, so every rate() sees it.
        time.sleep(3)
        yield Observed(gateway, services, base, redis)
    except Exception:
        print(stack_log.read_text()[-5000:])
        raise
    finally:
        stop(prometheus_process)
        stop(stack)
        stop(redis)


def dashboard_queries() -> list[tuple[str, str, str]]:
    rows = []
    for dashboard in all_dashboards():
        for panel in to_json(dashboard)["panels"]:
            rows += [(dashboard.uid, panel["title"], t["expr"]) for t in panel["targets"]]
    return rows


def test_every_target_is_scraped(observed: Observed) -> None:
    up = query(observed.prometheus, 'up{namespace="mtc"}')
    assert sorted(s["metric"]["job"] for s in up) == sorted(
        ["mtc-gateway", "mtc-worker", *(f"mtc-{t}" for t in TASKS)]
    )
    assert all(s["value"][1] == "1" for s in up), up


@pytest.mark.parametrize(
    ("uid", "title", "expr"), dashboard_queries(), ids=lambda v: re.sub(r"\W+", "-", v)[:60]
)
def test_dashboard_query_returns_data(observed: Observed, uid: str, title: str, expr: str) -> None:
    result = query(observed.prometheus, bind(expr))
    assert finite_values(result), f"{uid} / {title}: no data for\n{bind(expr)}\n{result}"


def test_dashboard_variables_list_the_stack(observed: Observed) -> None:
    for dashboard in all_dashboards():
        for variable in to_json(dashboard)["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
            assert match, variable
            selector, label = match.groups()
            result = query(observed.prometheus, f"count by ({label}) ({bind(selector)})")
            values = sorted(s["metric"][label] for s in result)
            assert values == ([NAMESPACE] if label == "namespace" else sorted(TASKS))


@pytest.mark.parametrize("alert", all_alerts(), ids=lambda alert: alert.name)
def test_alert_signal_has_data_and_expression_evaluates(observed: Observed, alert: Any) -> None:
    signal = query(observed.prometheus, alert.signal)
    assert finite_values(signal), f"{alert.name}: no data for its signal\n{alert.signal}"
    query(observed.prometheus, alert.expr)


def test_alerts_that_must_fire_do(observed: Observed) -> None:
    alerts = {alert.name: alert for alert in all_alerts()}
    failing = query(observed.prometheus, alerts["MtcHighErrorRatio"].expr)
    assert [s["metric"]["task"] for s in failing] == ["pose"], failing
    healthy = query(observed.prometheus, alerts["MtcTaskUnavailable"].expr)
    assert healthy == []


def test_rules_loaded_by_prometheus_evaluate_cleanly(observed: Observed) -> None:
    body = httpx.get(f"{observed.prometheus}/api/v1/rules", timeout=30).json()
    rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
    assert sorted(rule["name"] for rule in rules) == sorted(a.name for a in all_alerts())
    assert all(rule["health"] == "ok" for rule in rules), rules


def test_autoscaling_queries_return_data(observed: Observed) -> None:
    """The queries behind queue-depth scaling (Prometheus Adapter rule, KEDA triggers)."""
    adapter = yaml.safe_load((REPO / "deploy/prometheus-adapter/values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert query(observed.prometheus, rule["seriesQuery"])
    # The adapter fills these in per HPA: the pods of one Deployment in its namespace.
    metrics_query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", "mtc_queue_depth")
        .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}", pod="mtc-sentiment-0"')
        .replace("<<.GroupBy>>", "pod")
    )
    assert finite_values(query(observed.prometheus, metrics_query)), metrics_query
    scaled_objects = yaml.safe_load_all((REPO / "components/keda/scaledobjects.yaml").read_text())
    for scaled_object in scaled_objects:
        task = scaled_object["metadata"]["name"].removeprefix("mtc-")
        if task not in TASKS:
            continue  # the audio service is not part of the local stack
        (trigger,) = [t for t in scaled_object["spec"]["triggers"] if t["type"] == "prometheus"]
        assert finite_values(query(observed.prometheus, trigger["metadata"]["query"])), task


def test_redis_down_alert_fires_when_redis_stops(observed: Observed) -> None:
    # Last: it stops the stack's Redis.
    stop(observed.redis)
    with httpx.Client(timeout=60) as client:
        for number in range(3):
            response = client.post(
                f"{observed.services['sentiment']}/v1/sentiment/predict",
                json={"text": [f"redis is gone, request {number}"]},
            )
            assert response.status_code == 200, "a dead cache must not fail requests"
            time.sleep(1.0)
    redis_down = next(a for a in all_alerts() if a.name == "MtcRedisDown")
    deadline = time.monotonic() + 30
    firing: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not firing:
        firing = query(observed.prometheus, redis_down.expr)
        time.sleep(0.5)
    assert "sentiment" in [s["metric"]["task"] for s in firing], firing
