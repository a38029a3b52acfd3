"""Names and keys from requests never escape where they are meant to point, and nothing
is fetched from a URL unless an operator allows it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.audio.api import build_app as build_audio_app
from services.audio.settings import AudioSettings
from services.pose.api import build_app as build_pose_app
from services.pose.settings import PoseSettings
from tests.support.audio_clips import build_tiny_call_model
from tests.support.fake_services import FakeTextService
from tests.support.in_thread_servers import serving
from tests.support.pose_images import build_tiny_vit
from tests.support.service_client import wait_ready


@pytest.fixture(scope="module")
def upstream() -> FakeTextService:
    return FakeTextService("sentiment")


@pytest.fixture(scope="module")
def gateway(upstream: FakeTextService) -> Iterator[TestClient]:
    with serving(upstream.create_app()) as url:
        app = create_app(GatewaySettings(upstreams={"sentiment": url}))
        with TestClient(app) as client:
            yield client


@pytest.mark.parametrize(
    "path",
    [
        "/v1/sentiment/..%2f..%2fmetrics",
        "/v1/sentiment/%2e%2e/%2e%2e/health/live",
        "/v1/sentiment/a/../../../etc/passwd",
        "/v1/..%2fsentiment/predict",
        "/v1/%2e%2e/predict",
        "/ui/..%2f..%2fsettings.py",
        "/ui/%2e%2e%2fweb_page.py",
    ],
)
def test_traversal_in_a_gateway_path_is_refused_and_never_forwarded(
    gateway: TestClient, upstream: FakeTextService, path: str
) -> None:
    before = len(upstream.received)
    for method in ("GET", "POST"):
        response = gateway.request(method, path, content=b"{}")
        assert response.status_code in (404, 405), (method, path, response.status_code)
    assert len(upstream.received) == before


@pytest.fixture(scope="module")
def audio_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_call_model(tmp_path_factory.mktemp("paths-call"))


@pytest.mark.parametrize(
    "uri",
    [
        "s3://calls/incoming/../private/secret.wav",
        "s3://calls/incoming/./../../secret.wav",
        "s3://calls/incoming//secret.wav",
        "s3://calls/incoming/..\\private\\secret.wav",
    ],
)
def test_traversal_in_an_s3_key_is_refused_before_any_fetch(
    audio_model_dir: Path, uri: str
) -> None:
    settings = AudioSettings(
        model_uri=str(audio_model_dir),
        asr_enabled=False,
        s3_input_allowlist=["calls/incoming/"],
        # Nothing listens here: a fetch would fail with 503, not the 403 expected below.
        s3_endpoint_url="http://127.0.0.1:9",
    )
    with TestClient(build_audio_app(settings)) as client:
        wait_ready(client)
        response = client.post("/v1/audio/predict-s3", json={"s3_uri": uri})
    assert response.status_code == 403
    assert response.json()["error_type"] == "forbidden"
    # Refused for its shape, not because it falls outside the allow-list.
    assert "segments" in response.json()["detail"]


def test_s3_fetching_is_off_by_default(audio_model_dir: Path) -> None:
    settings = AudioSettings(model_uri=str(audio_model_dir), asr_enabled=False)
    assert settings.s3_input_allowlist == []
    with TestClient(build_audio_app(settings)) as client:
        wait_ready(client)
        response = client.post("/v1/audio/predict-s3", json={"s3_uri": "s3://any/clip.wav"})
    assert response.status_code == 403
    assert response.json()["error_type"] == "forbidden"


def test_an_image_url_is_never_fetched(tmp_path: Path) -> None:
    hits: list[str] = []
    bait = FastAPI()

    @bait.get("/{name}")
    async def record(name: str, request: Request) -> dict[str, str]:
        hits.append(str(request.url))
        return {}

    settings = PoseSettings(task="pose", model_uri=str(build_tiny_vit(tmp_path / "vit")))
    with serving(bait) as bait_url, TestClient(build_pose_app(settings)) as client:
        wait_ready(client)
        response = client.post("/v1/pose/predict", json={"images": [f"{bait_url}/photo.png"]})
    assert 400 <= response.status_code < 500
    assert hits == []
