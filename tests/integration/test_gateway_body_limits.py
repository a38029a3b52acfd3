"""A body too large for a task, through the gateway to a real text service process
(`python -m services.text`, tiny model, `MTC_MAX_BODY_BYTES` of 256 KiB).

A body over the gateway's limit for the task is refused by the gateway, unread and
unforwarded; one the gateway lets through but the service refuses gets the service's own
413, every time: the service answers it from the headers, and the gateway (which sends a
body over 1 MiB with `Expect: 100-continue`) relays that answer instead of losing it to a
connection closed while it was still sending.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.settings import GatewaySettings
from tests.support.gateway_processes import free_ports, start_model_service
from tests.support.in_thread_servers import served_gateway
from tests.support.processes import stop, wait_for_http

pytestmark = pytest.mark.integration

SERVICE_BODY_LIMIT = 256 * 1024
URL = "/v1/sentiment/predict"


@pytest.fixture(scope="module")
def service_url(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    (port,) = free_ports(1)
    process: subprocess.Popen[bytes] = start_model_service(
        "services.text",
        "sentiment",
        tiny_model_dir,
        port,
        tmp_path_factory.mktemp("body-limits") / "service.log",
        settings={"MTC_MAX_BODY_BYTES": str(SERVICE_BODY_LIMIT)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health/ready", process, timeout=180)
        yield url
    finally:
        stop(process)


def one_text_of(size: int) -> bytes:
    return json.dumps({"text": ["x" * size]}).encode()


def test_a_body_over_the_tasks_limit_is_refused_by_the_gateway(service_url: str) -> None:
    settings = GatewaySettings(
        upstreams={"sentiment": service_url}, task_max_body_bytes={"sentiment": 128 * 1024}
    )
    # Within the service's limit: had it been forwarded, the service would have read it.
    body = one_text_of(200_000)

    with served_gateway(settings) as gateway:
        declared = gateway.post(URL, content=body)
        streamed = gateway.post(URL, content=iter([body[:50_000], body[50_000:]]))

    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json() == {
            "detail": "request body is larger than 131072 bytes, the limit for task "
            "'sentiment' (MTC_GATEWAY_TASK_MAX_BODY_BYTES)",
            "error_type": "body_too_large",
        }


def test_the_services_own_413_is_relayed_every_time(service_url: str) -> None:
    settings = GatewaySettings(
        upstreams={"sentiment": service_url},
        # The gateway lets 4 MiB through to a service that takes 256 KiB.
        task_max_body_bytes={"sentiment": 4 * 1024 * 1024},
    )
    bodies = [one_text_of(300_000), one_text_of(3_000_000)]
    service_refusal = {
        "detail": f"request body is larger than {SERVICE_BODY_LIMIT} bytes",
        "error_type": "body_too_large",
    }

    with served_gateway(settings) as gateway:
        one_by_one = [gateway.post(URL, content=body) for body in bodies * 10]
        with ThreadPoolExecutor(10) as pool:
            together = list(pool.map(lambda body: gateway.post(URL, content=body), bodies * 10))
        still_served = gateway.post(URL, json={"text": ["a small request after them"]})

    for response in one_by_one + together:
        assert (response.status_code, response.json()) == (413, service_refusal)
    assert still_served.status_code == 200
