"""The VM recipe run for real, without systemd: every unit `python -m deploy.vm` writes
(for this checkout, on free ports) is started with its own command and environment, as
systemd would start it, and the stack answers through the gateway with API keys on, its
metrics on their own port, and batch jobs through the units' Redis and worker."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from deploy.vm import REPO, Machine, render
from gateway.api_keys import hash_api_key
from tests.support.processes import free_port, free_port_run, start, stop, wait_for_http
from tests.support.systemd_units import exec_start, unit_environment

pytestmark = pytest.mark.e2e

KEY = "mtc_vm_recipe_test_key"
SERVICES = 4  # sentiment, disaster, pose, audio
MODELS_DIR = REPO / ".mtc" / "models"


@dataclass
class VmStack:
    machine: Machine
    base: str


@pytest.fixture(scope="module")
def vm_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmStack]:
    if not all((MODELS_DIR / task / "manifest.json").is_file() for task in ("sentiment", "pose")):
        raise RuntimeError(f"the starter models are missing from {MODELS_DIR}: run `make models`")
    scratch = tmp_path_factory.mktemp("vm")
    keys = scratch / "api-keys"
    keys.write_text(f"vm-test {hash_api_key(KEY)}\n", encoding="utf-8")
    machine = Machine(
        prefix=REPO,
        gateway_port=free_port(),
        gateway_metrics_port=free_port(),
        first_service_port=free_port_run(SERVICES + 1),
        redis_port=free_port(),
    )
    # What systemd would provide: the cache directory the units name, here a scratch one.
    stand_ins = {
        "HOME": str(scratch),
        "XDG_CACHE_HOME": str(scratch / "cache"),
        "MTC_MODEL_CACHE_DIR": str(scratch / "cache" / "models"),
        "NUMBA_CACHE_DIR": str(scratch / "cache" / "numba"),
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, text in render(machine).items():
            if not name.endswith(".service"):
                continue
            environment = {**unit_environment(text), **stand_ins}
            if "MTC_GATEWAY_API_KEYS_FILE" in environment:
                environment["MTC_GATEWAY_API_KEYS_FILE"] = str(keys)
            processes.append(start(exec_start(text), env=environment, log=scratch / f"{name}.log"))
        base = f"http://127.0.0.1:{machine.gateway_port}"
        wait_for_http(f"{base}/health/ready", processes[-1], timeout=300)
        yield VmStack(machine, base)
    except Exception:
        for log in sorted(scratch.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        for process in reversed(processes):
            stop(process)


def test_the_units_serve_the_api_with_keys(vm_stack: VmStack) -> None:
    body = {"text": ["An absolute triumph, moving and beautifully acted"]}
    with httpx.Client(base_url=vm_stack.base, timeout=60) as client:
        refused = client.post("/v1/sentiment/predict", json=body)
        answered = client.post("/v1/sentiment/predict", json=body, headers={"x-api-key": KEY})
        models = client.get("/v1/models").json()["models"]

    assert refused.status_code == 401
    assert answered.status_code == 200, answered.text
    assert answered.json()["predictions"][0][0]["label"] in ("POSITIVE", "NEGATIVE")
    assert {model["task"] for model in models} == {"sentiment", "disaster", "pose", "audio"}
    assert all(model["ready"] for model in models)


def test_metrics_are_on_their_own_port_only(vm_stack: VmStack) -> None:
    on_api_port = httpx.get(f"{vm_stack.base}/metrics", timeout=10)
    on_metrics_port = httpx.get(
        f"http://127.0.0.1:{vm_stack.machine.gateway_metrics_port}/metrics", timeout=10
    )

    assert on_api_port.status_code == 404
    assert on_metrics_port.status_code == 200
    assert "mtc_gateway_requests_total" in on_metrics_port.text


def test_batch_jobs_run_through_the_units_redis_and_worker(vm_stack: VmStack) -> None:
    response = httpx.post(
        f"{vm_stack.base}/api/predict/",
        json={"text": "The support team solved my problem in minutes"},
        headers={"x-api-key": KEY},
        timeout=60,
    )

    assert response.status_code in (200, 202), response.text
    assert response.json().get("job_id", response.json().get("id"))
