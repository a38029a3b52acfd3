"""CORS at the gateway: closed unless origins are configured, then open to those only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from gateway.api_keys import hash_api_key
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.support.fake_services import FakeTextService
from tests.support.in_thread_servers import serving

ALLOWED = "https://app.example.com"
STRANGER = "https://evil.example.net"
KEY = "mtc_cors-test-key-0123456789"


@contextmanager
def gateway(**settings: Any) -> Iterator[TestClient]:
    with serving(FakeTextService("sentiment").create_app()) as upstream:
        app = create_app(GatewaySettings(upstreams={"sentiment": upstream}, **settings))
        with TestClient(app) as client:
            yield client


def preflight(client: TestClient, origin: str) -> Any:
    return client.options(
        "/v1/sentiment/predict",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-api-key",
        },
    )


def test_by_default_no_origin_gets_cors_headers() -> None:
    with gateway() as client:
        simple = client.get("/v1/models", headers={"origin": STRANGER})
        predict = client.post(
            "/v1/sentiment/predict", json={"text": ["hi"]}, headers={"origin": ALLOWED}
        )
        checked = preflight(client, ALLOWED)
    assert simple.status_code == 200
    assert predict.status_code == 200
    for response in (simple, predict, checked):
        assert not any(name.startswith("access-control-") for name in response.headers)


def test_configured_origins_are_allowed_and_others_are_not() -> None:
    with gateway(cors_origins=[ALLOWED]) as client:
        allowed = client.post(
            "/v1/sentiment/predict", json={"text": ["hi"]}, headers={"origin": ALLOWED}
        )
        stranger = client.post(
            "/v1/sentiment/predict", json={"text": ["hi"]}, headers={"origin": STRANGER}
        )
        allowed_preflight = preflight(client, ALLOWED)
        stranger_preflight = preflight(client, STRANGER)
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "x-request-id" in allowed.headers["access-control-expose-headers"]
    assert "access-control-allow-origin" not in stranger.headers
    assert allowed_preflight.status_code == 200
    assert "POST" in allowed_preflight.headers["access-control-allow-methods"]
    assert stranger_preflight.status_code == 400
    assert "access-control-allow-origin" not in stranger_preflight.headers
    # Cookies are never accepted cross-origin: the API authenticates with keys only.
    assert "access-control-allow-credentials" not in allowed.headers


def test_a_preflight_needs_no_api_key_but_the_request_still_does(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"web {hash_api_key(KEY)}\n")
    with gateway(cors_origins=[ALLOWED], api_keys_file=keys) as client:
        checked = preflight(client, ALLOWED)
        without_key = client.post(
            "/v1/sentiment/predict", json={"text": ["hi"]}, headers={"origin": ALLOWED}
        )
        with_key = client.post(
            "/v1/sentiment/predict",
            json={"text": ["hi"]},
            headers={"origin": ALLOWED, "x-api-key": KEY},
        )
    assert checked.status_code == 200
    assert without_key.status_code == 401
    # The refusal is readable by the allowed page, so it can tell its user why.
    assert without_key.headers["access-control-allow-origin"] == ALLOWED
    assert with_key.status_code == 200


@pytest.mark.parametrize(
    "origin", ["app.example.com", "https://app.example.com/", "https://a.example/path", ""]
)
def test_an_origin_that_could_never_match_is_refused_at_start(origin: str) -> None:
    with pytest.raises(ValidationError, match="CORS origin"):
        GatewaySettings(upstreams={"sentiment": "http://127.0.0.1:1"}, cors_origins=[origin])
