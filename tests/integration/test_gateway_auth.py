"""API keys and quotas with real processes: two gateway processes sharing one quota through
a real redis-server, in front of a real text service (tiny random BERT)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.api_keys import hash_api_key
from tests.support.gateway_processes import free_ports, start_gateway, start_model_service
from tests.support.processes import stop, wait_for_http

pytestmark = pytest.mark.integration

ALICE_KEY = "mtc_integration-alice-3b6f0e"
BOB_KEY = "mtc_integration-bob-91c2aa"
SHARED_BURST = 4
TIMEOUT = httpx.Timeout(30.0)


@pytest.fixture(scope="module")
def text_service(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    (port,) = free_ports(1)
    log = tmp_path_factory.mktemp("auth-service") / "sentiment.log"
    process = start_model_service("services.text", "sentiment", tiny_model_dir, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health/ready", process, timeout=180)
        yield url
    finally:
        stop(process)


@dataclass
class Gateways:
    urls: list[str]
    processes: list[subprocess.Popen[bytes]]


@pytest.fixture
def gateways(
    text_service: str, redis_server: tuple[subprocess.Popen[bytes], int], tmp_path: Path
) -> Iterator[Gateways]:
    """Two gateway processes with the same keys file and the same Redis."""
    _, redis_port = redis_server
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(
        f"alice {hash_api_key(ALICE_KEY)}\nbob {hash_api_key(BOB_KEY)}\n", encoding="utf-8"
    )
    ports = free_ports(2)
    processes = [
        start_gateway(
            port,
            tmp_path / f"gateway-{port}.log",
            upstreams={"sentiment": text_service},
            api_keys_file=str(keys_file),
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            # One token per 1,000 s: nothing refills during the test.
            rate_limit_per_second=0.001,
            rate_limit_burst=SHARED_BURST,
            redis_retry_seconds=0.5,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url, process in zip(urls, processes, strict=True):
            wait_for_http(f"{url}/health/ready", process, timeout=60)
        yield Gateways(urls, processes)
    finally:
        for process in processes:
            stop(process)


def _predict(gateway: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{gateway}/v1/sentiment/predict",
        json={"text": ["a fine film"]},
        headers=headers,
        timeout=TIMEOUT,
    )


def test_keys_are_checked(gateways: Gateways) -> None:
    gateway = gateways.urls[0]

    missing = _predict(gateway, {})
    wrong = _predict(gateway, {"authorization": "Bearer mtc_not-a-key"})
    good = _predict(gateway, {"authorization": f"Bearer {ALICE_KEY}"})

    assert missing.status_code == 401
    assert missing.json()["error_type"] == "missing_api_key"
    assert wrong.status_code == 401
    assert wrong.json()["error_type"] == "invalid_api_key"
    assert good.status_code == 200, good.text
    assert len(good.json()["predictions"]) == 1


def test_health_metrics_and_docs_stay_public(gateways: Gateways) -> None:
    for path in ("/health/live", "/health/ready", "/metrics", "/docs", "/openapi.json"):
        assert httpx.get(f"{gateways.urls[0]}{path}", timeout=TIMEOUT).status_code == 200


def test_the_quota_is_shared_by_gateway_replicas_through_redis(gateways: Gateways) -> None:
    first, second = gateways.urls
    alice = {"x-api-key": ALICE_KEY}

    allowed = [_predict(url, alice).status_code for url in (first, second) * (SHARED_BURST // 2)]
    over_quota = [_predict(url, alice) for url in (first, second)]
    bob = _predict(second, {"x-api-key": BOB_KEY})

    assert allowed == [200] * SHARED_BURST
    for response in over_quota:
        assert response.status_code == 429
        assert response.json()["error_type"] == "rate_limited"
        assert int(response.headers["retry-after"]) >= 1
    assert bob.status_code == 200


def test_quotas_fall_back_to_each_gateway_while_redis_is_down(
    gateways: Gateways, redis_server: tuple[subprocess.Popen[bytes], int]
) -> None:
    redis_process, _ = redis_server
    stop(redis_process, kill=True)
    first, second = gateways.urls
    bob = {"x-api-key": BOB_KEY}

    # Each gateway now counts on its own: a full burst on each, then 429.
    on_first = [_predict(first, bob).status_code for _ in range(SHARED_BURST + 1)]
    on_second = [_predict(second, bob).status_code for _ in range(SHARED_BURST + 1)]
    metrics = httpx.get(f"{first}/metrics", timeout=TIMEOUT).text

    assert on_first == [200] * SHARED_BURST + [429]
    assert on_second == [200] * SHARED_BURST + [429]
    assert "mtc_gateway_quota_store_errors_total" in metrics
    errors = next(
        line for line in metrics.splitlines() if line.startswith("mtc_gateway_quota_store_errors")
    )
    assert float(errors.rsplit(" ", 1)[1]) >= SHARED_BURST + 1
