"""What public answers must not give away: internal addresses in `/metrics`, memory
addresses in error details, and, between API keys, which texts another key sent (the
services' timing headers are zero for an answer from the shared cache)."""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from gateway.api_keys import hash_api_key
from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from services.core.http_errors import without_locations
from services.pose.api import build_app as build_pose_app
from services.pose.settings import PoseSettings
from services.text.api import build_app as build_text_app
from services.text.settings import TextSettings
from tests.support.fake_services import FakeTextService
from tests.support.in_thread_servers import served_gateway, serving
from tests.support.pose_images import build_tiny_vit
from tests.support.processes import free_port
from tests.support.service_client import wait_ready

ALICE_KEY = "alice-exposure-key-0123456789"
BOB_KEY = "bob-exposure-key-0123456789"
MEMORY_ADDRESS = re.compile(r"0x[0-9a-f]{6,}", re.IGNORECASE)
TIMING_HEADERS = ("x-inference-time", "x-queue-time")


def test_public_metrics_name_replicas_by_position_not_by_url() -> None:
    with (
        serving(FakeTextService("sentiment").create_app()) as first,
        serving(FakeTextService("sentiment").create_app()) as second,
    ):
        settings = GatewaySettings(upstreams={"sentiment": [first, second]})
        with served_gateway(settings) as gateway:
            gateway.post("/v1/sentiment/predict", json={"text": ["x"]})
            metrics = gateway.get("/metrics").text

    assert "127.0.0.1" not in metrics
    assert 'mtc_gateway_upstream_in_flight{replica="1",task="sentiment"} 0.0' in metrics


def test_a_pillow_message_reaches_the_client_without_its_memory_address(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    model_dir = build_tiny_vit(tmp_path_factory.mktemp("exposure-vit"))
    # A PNG signature, then a chunk that is not the header: Pillow names the in-memory file
    # it could not read, by its repr, memory address included.
    not_a_png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"JUNK" + b"\x00" * 17
    with TestClient(build_pose_app(PoseSettings(task="pose", model_uri=str(model_dir)))) as pose:
        wait_ready(pose)
        response = pose.post("/v1/pose/predict", files=[("image", ("x.png", not_a_png))])

    assert response.status_code == 400
    assert "corrupt PNG header (cannot identify image file" in response.json()["detail"]
    assert not MEMORY_ADDRESS.search(response.text), response.text


@pytest.fixture(scope="module")
def text_service_url(tiny_model_dir: Path) -> Iterator[str]:
    app = build_text_app(TextSettings(task="sentiment", model_uri=str(tiny_model_dir)))
    with serving(app) as url:
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield url


def test_with_api_keys_an_answer_from_the_cache_looks_like_any_other(
    text_service_url: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"alice {hash_api_key(ALICE_KEY)}\nbob {hash_api_key(BOB_KEY)}\n")
    settings = GatewaySettings(upstreams={"sentiment": text_service_url}, api_keys_file=keys)
    text = {"text": ["what alice asked about, and only alice"]}

    with served_gateway(settings) as gateway:
        computed = gateway.post(
            "/v1/sentiment/predict", json=text, headers={"x-api-key": ALICE_KEY}
        )
        cached = gateway.post("/v1/sentiment/predict", json=text, headers={"x-api-key": BOB_KEY})

    assert computed.status_code == cached.status_code == 200
    for response in (computed, cached):
        assert not set(TIMING_HEADERS) & set(response.headers), response.headers
        assert "x-total-time" in response.headers
    assert set(computed.headers) == set(cached.headers)


def test_without_api_keys_the_timing_headers_are_relayed(text_service_url: str) -> None:
    settings = GatewaySettings(upstreams={"sentiment": text_service_url})

    with served_gateway(settings) as gateway:
        response = gateway.post("/v1/sentiment/predict", json={"text": ["one tenant only"]})

    assert set(TIMING_HEADERS) <= set(response.headers)


def test_only_long_hex_numbers_count_as_addresses() -> None:
    assert (
        without_locations("byte 0xff of <Foo object at 0x7f3a2c001a40> in /srv/models/x")
        == "byte 0xff of <Foo object at <address>> in <redacted>"
    )


def test_with_a_metrics_port_the_gateway_api_port_serves_no_metrics() -> None:
    metrics_port = free_port()
    settings = GatewaySettings(
        upstreams={"sentiment": "http://127.0.0.1:9"}, metrics_port=metrics_port
    )

    with TestClient(create_gateway(settings)) as gateway:
        on_api_port = gateway.get("/metrics")
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")

    assert on_api_port.status_code == 404
    assert "/metrics" not in gateway.get("/openapi.json").json()["paths"]
    assert scraped.status_code == 200
    assert 'mtc_gateway_upstream_circuit_open{replica="0",task="sentiment"} 0.0' in scraped.text
    with pytest.raises(httpx.ConnectError):  # closed with the app
        httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")


def test_with_a_metrics_port_a_service_api_port_serves_no_metrics(tiny_model_dir: Path) -> None:
    metrics_port = free_port()
    settings = TextSettings(
        task="sentiment", model_uri=str(tiny_model_dir), metrics_port=metrics_port
    )

    with TestClient(build_text_app(settings)) as service:
        on_api_port = service.get("/metrics")
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")

    assert on_api_port.status_code == 404
    assert scraped.status_code == 200
    assert 'mtc_model_ready{task="sentiment"}' in scraped.text


def test_without_a_metrics_port_metrics_stay_on_the_api_port_for_local_runs() -> None:
    settings = GatewaySettings(upstreams={"sentiment": "http://127.0.0.1:9"})
    with TestClient(create_gateway(settings)) as gateway:
        assert gateway.get("/metrics").status_code == 200


def test_the_metrics_port_must_differ_from_the_api_port() -> None:
    with pytest.raises(ValidationError, match="metrics_port must differ"):
        GatewaySettings(upstreams={"sentiment": "http://s"}, port=8080, metrics_port=8080)
    with pytest.raises(ValidationError, match="metrics_port must differ"):
        TextSettings(port=8000, metrics_port=8000)
