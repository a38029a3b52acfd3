"""Error bodies say what went wrong, never where: no tracebacks, file paths or upstream URLs.

Each test provokes a real failure (a model directory that is not there, a model that
raises, a service nobody listens for) and reads both the body and the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.settings import GatewaySettings
from services.text.api import build_app
from services.text.models.sequence_classifier import SequenceClassifier, TextInput, TextPrediction
from services.text.settings import TextSettings
from tests.support.in_thread_servers import bound_socket, served_gateway, url_of
from tests.support.service_client import wait_ready

URL = "/v1/sentiment/predict"


def assert_no_internals(text: str, *secrets: str) -> None:
    for internal in ("Traceback", 'File "', "site-packages", *secrets):
        assert internal not in text, f"{internal!r} leaked into {text!r}"


def test_a_model_directory_that_fails_to_load_is_reported_without_its_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "private-models" / "nowhere"
    settings = TextSettings(task="sentiment", model_uri=str(missing))
    with caplog.at_level(logging.ERROR), TestClient(build_app(settings)) as broken:
        deadline = time.monotonic() + 10
        while broken.get("/v1/models").json()["models"][0]["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        ready = broken.get("/health/ready")
        models = broken.get("/v1/models")
        predict = broken.post(URL, json={"text": ["hello"]})
    assert ready.status_code == 503
    assert predict.status_code == 503
    # The reason is still useful to whoever calls...
    assert "no model directory" in ready.json()["detail"]
    for response in (ready, models, predict):
        assert_no_internals(response.text, str(tmp_path), "private-models")
    # ...and the operator finds the full path in the log.
    assert str(missing) in caplog.text


class ExplodingModel(SequenceClassifier):
    """A model whose every batch fails with a message naming a file on the server."""

    def predict(self, batch: Sequence[TextInput]) -> list[TextPrediction]:
        raise RuntimeError("cannot read /srv/secret/weights.bin")


def test_a_failing_model_answers_500_in_the_error_shape_without_its_message(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = TextSettings(task="sentiment", model_uri=str(tiny_model_dir))
    with TestClient(build_app(settings, ExplodingModel()), raise_server_exceptions=False) as client:
        wait_ready(client)
        with caplog.at_level(logging.ERROR):
            response = client.post(URL, json={"text": ["boom"]})
    assert response.status_code == 500
    assert response.json() == {
        "detail": "internal error; see the service log",
        "error_type": "internal_error",
    }
    assert_no_internals(response.text, "/srv/secret", "RuntimeError")
    assert "/srv/secret/weights.bin" in caplog.text


def test_an_unreachable_service_is_named_by_task_not_by_url() -> None:
    # Bound but not listening: every connection is refused.
    nobody = bound_socket()
    upstream = url_of(nobody)
    settings = GatewaySettings(
        upstreams={"sentiment": upstream}, retry_attempts=0, circuit_failure_threshold=100
    )
    try:
        with served_gateway(settings) as gateway:
            predict = gateway.post(URL, json={"text": ["hello"]})
            models = gateway.get("/v1/models")
            ready = gateway.get("/health/ready")
            other_route = gateway.get("/v1/sentiment/anything")
    finally:
        nobody.close()
    assert predict.status_code == 503
    assert predict.json()["error_type"] == "upstream_unavailable"
    assert "sentiment" in predict.json()["detail"]
    port = upstream.rsplit(":", 1)[1]
    for response in (predict, models, ready, other_route):
        assert_no_internals(response.text, upstream, f":{port}", "127.0.0.1")
