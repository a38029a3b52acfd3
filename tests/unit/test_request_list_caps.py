"""Every JSON route caps its request list at the configured per-request limit, and refuses a
megabyte of `[1,1,1,...]` with one 413 instead of parsing and validating it (it used to
become 500,000 validation errors: half a gigabyte and seconds of CPU in the process that
parsed it). Only the routes' HTTP behaviour is used here; the schemas and the bound on JSON
values are in test_json_limits.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings
from services.text.api import build_app
from services.text.settings import TextSettings
from tests.support.fake_services import FakePoseService, FakeTextService
from tests.support.in_thread_servers import CLIENT_TIMEOUT, serving
from tests.support.processes import free_port
from tests.support.service_client import wait_ready

MEGABYTE_OF_INTS = b",".join([b"1"] * 500_000)
"""The inside of a 1 MB JSON list of 500,000 integers."""


@pytest.fixture(scope="module")
def text_service(tiny_model_dir: Path) -> Iterator[TestClient]:
    settings = TextSettings(
        task="sentiment", model_uri=str(tiny_model_dir), max_items_per_request=8
    )
    with TestClient(build_app(settings)) as client:
        wait_ready(client)
        yield client


def test_the_text_route_caps_its_list_at_the_configured_limit(text_service: TestClient) -> None:
    schema = text_service.get("/openapi.json").json()["components"]["schemas"]["TextPredictRequest"]
    nine = text_service.post("/v1/sentiment/predict", json={"text": ["a"] * 9})

    assert schema["properties"]["text"]["maxItems"] == 8
    assert text_service.post("/v1/sentiment/predict", json={"text": ["a"] * 8}).status_code == 200
    assert nine.status_code == 413
    assert nine.json() == {
        "detail": "9 texts in one request; the limit is 8 (MTC_MAX_ITEMS_PER_REQUEST)",
        "error_type": "batch_too_large",
    }


@pytest.mark.parametrize("content_type", [None, "application/json"])
def test_a_megabyte_of_integers_to_the_text_route_is_one_413(
    text_service: TestClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = text_service.post(
        "/v1/sentiment/predict", content=b'{"text": [' + MEGABYTE_OF_INTS + b"]}", headers=headers
    )

    assert response.status_code == 413
    assert response.json()["error_type"] == "batch_too_large"
    assert "at most 8 texts in one request (MTC_MAX_ITEMS_PER_REQUEST)" in response.json()["detail"]


def test_a_non_json_body_is_still_refused_for_its_type(text_service: TestClient) -> None:
    response = text_service.post(
        "/v1/sentiment/predict",
        content=b"[" + MEGABYTE_OF_INTS + b"]",
        headers={"content-type": "text/plain"},
    )

    assert response.status_code == 415


@pytest.fixture(scope="module")
def gateway() -> Iterator[httpx.Client]:
    jobs = JobsSettings(
        # Nothing listens there: a submission that got past validation would answer 503.
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
        upstreams={"sentiment": "http://127.0.0.1:9"},
        max_inline_items=5,
    )
    with (
        serving(FakeTextService("sentiment").create_app()) as sentiment_url,
        serving(FakePoseService().create_app()) as pose_url,
    ):
        settings = GatewaySettings(
            upstreams={"sentiment": sentiment_url, "pose": pose_url},
            task_kinds={"pose": "image"},
            max_texts_per_request=4,
            max_images_per_request=2,
            max_json_body_bytes=64 * 1024,
        )
        with (
            serving(create_app(settings, jobs)) as url,
            httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client,
        ):
            yield client


GATEWAY_ROUTES = {
    "/project/bulk-predict": (
        "text",
        {},
        4,
        "texts in one request",
        "MTC_GATEWAY_MAX_TEXTS_PER_REQUEST",
    ),
    "/api/v1/sentiment_analysis": (
        "text",
        {},
        4,
        "texts in one request",
        "MTC_GATEWAY_MAX_TEXTS_PER_REQUEST",
    ),
    "/api/v1/pose_classifier": (
        "images",
        {},
        2,
        "images in one request",
        "MTC_GATEWAY_MAX_IMAGES_PER_REQUEST",
    ),
    "/v1/jobs": (
        "inputs",
        {"task": "sentiment"},
        5,
        "inline inputs in one job",
        "MTC_JOBS_MAX_INLINE_ITEMS",
    ),
}


@pytest.mark.parametrize("path", sorted(GATEWAY_ROUTES))
def test_the_gateways_json_routes_cap_their_lists(gateway: httpx.Client, path: str) -> None:
    field, fields, limit, counted, setting = GATEWAY_ROUTES[path]

    response = gateway.post(path, json={**fields, field: ["aGk="] * (limit + 1)})

    assert response.status_code == 413
    assert response.json() == {
        "detail": f"{limit + 1} {counted}; the limit is {limit} ({setting})"
        + (": put larger batches in a file and give its input_uri" if path == "/v1/jobs" else ""),
        "error_type": "batch_too_large",
    }


@pytest.mark.parametrize("path", sorted(GATEWAY_ROUTES))
def test_a_megabyte_of_integers_to_a_gateway_route_is_one_413(
    gateway: httpx.Client, path: str
) -> None:
    field, fields, _, _, _ = GATEWAY_ROUTES[path]
    prefix = json.dumps({**fields, field: []}).encode()[:-2]

    response = gateway.post(path, content=prefix + b"[" + MEGABYTE_OF_INTS[:40_000] + b"]}")

    assert response.status_code == 413
    assert response.json()["error_type"] == "batch_too_large"


@pytest.mark.parametrize("path", sorted(GATEWAY_ROUTES))
def test_the_gateway_parses_no_json_body_over_its_limit(gateway: httpx.Client, path: str) -> None:
    field, fields, _, _, _ = GATEWAY_ROUTES[path]
    body = json.dumps({**fields, field: ["x" * (65 * 1024)]}).encode()

    declared = gateway.post(path, content=body)
    chunked = gateway.post(path, content=iter([body[:1000], body[1000:]]))

    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json() == {
            "detail": "request body is larger than 65536 bytes",
            "error_type": "body_too_large",
        }
