"""The gateway against real HTTP services: routing, relaying, errors, status, metrics,
logs and the OpenAPI document.

Fake model services and the gateway itself run in uvicorn on 127.0.0.1 (free ports, one
thread each); the tests call the gateway over HTTP like any client. Client timeouts are
generous, so a gateway that hangs fails a test instead of being measured.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.json_logging import JsonFormatter
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from tests.support.fake_services import FakeTextService
from tests.support.in_thread_servers import (
    CLIENT_TIMEOUT,
    bound_socket,
    connection_breaker,
    served_gateway,
    serving,
    url_of,
)

SLOW_TASK_TIMEOUT_SECONDS = 0.3
TIMEOUT_MARGIN_SECONDS = 0.2
BODY_LIMIT_BYTES = 1024


@pytest.fixture(scope="module")
def sentiment_service() -> FakeTextService:
    return FakeTextService("sentiment")


@pytest.fixture(scope="module")
def sentiment_url(sentiment_service: FakeTextService) -> Iterator[str]:
    with serving(sentiment_service.create_app()) as url:
        yield url


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    with serving(FakeTextService("slow", predict_delay_seconds=5.0).create_app()) as url:
        yield url


@pytest.fixture(scope="module")
def offline_url() -> Iterator[str]:
    # Bound but not listening: connections are refused, and no other process can take the port.
    with bound_socket() as sock:
        yield url_of(sock)


StartGateway = Callable[..., httpx.Client]


@pytest.fixture
def start_gateway(sentiment_url: str, slow_url: str, offline_url: str) -> Iterator[StartGateway]:
    """Start a gateway (by default: sentiment up, slow too slow, offline down) and a client."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> httpx.Client:
            values: dict[str, Any] = {
                "upstreams": {"sentiment": sentiment_url, "slow": slow_url, "offline": offline_url},
                "task_timeouts": {"slow": SLOW_TASK_TIMEOUT_SECONDS},
                "upstream_timeout_margin_seconds": TIMEOUT_MARGIN_SECONDS,
                "max_body_bytes": BODY_LIMIT_BYTES,
                # A single attempt keeps the counts of these tests exact; retries are tested
                # in test_gateway_resilience.py.
                "retry_attempts": 0,
            }
            values.update(overrides)
            return stack.enter_context(served_gateway(GatewaySettings(**values)))

        yield start


@pytest.fixture
def gateway(start_gateway: StartGateway) -> httpx.Client:
    return start_gateway()


def test_predict_relays_body_and_timing_headers(
    gateway: httpx.Client, sentiment_service: FakeTextService
) -> None:
    raw_body = b'{ "text" : ["great film", "dull film"] }'

    response = gateway.post(
        "/v1/sentiment/predict", content=raw_body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 200
    assert response.json() == sentiment_service.prediction_body(["great film", "dull film"])
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-inference-time"] == "12.5"
    assert response.headers["x-queue-time"] == "0.5"
    assert float(response.headers["x-total-time"]) >= 0
    last = sentiment_service.received[-1]
    assert (last.content_type, last.body) == ("application/json", raw_body)


def test_predict_accepts_json_without_content_type(
    gateway: httpx.Client, sentiment_service: FakeTextService
) -> None:
    raw_body = b'{"text": ["no header"]}'

    response = gateway.post("/v1/sentiment/predict", content=raw_body)

    assert "content-type" not in response.request.headers
    assert response.status_code == 200
    assert response.json() == sentiment_service.prediction_body(["no header"])
    last = sentiment_service.received[-1]
    assert (last.content_type, last.body) == ("application/json", raw_body)


def test_predict_keeps_the_client_content_type(
    gateway: httpx.Client, sentiment_service: FakeTextService
) -> None:
    # Multipart uploads (images, audio) only parse with their own boundary parameter.
    content_type = "multipart/form-data; boundary=mtc-test-boundary"
    raw_body = b"--mtc-test-boundary--\r\n"

    gateway.post("/v1/sentiment/predict", content=raw_body, headers={"content-type": content_type})

    last = sentiment_service.received[-1]
    assert (last.content_type, last.body) == (content_type, raw_body)


@pytest.mark.parametrize("raw_body", [b'{"text": []}', b"{}", b"not json", b""])
def test_service_validation_error_is_relayed_unchanged(
    gateway: httpx.Client, sentiment_url: str, raw_body: bytes
) -> None:
    direct = httpx.post(
        f"{sentiment_url}/v1/sentiment/predict",
        content=raw_body,
        headers={"content-type": "application/json"},
        timeout=CLIENT_TIMEOUT,
    )

    response = gateway.post("/v1/sentiment/predict", content=raw_body)

    assert direct.status_code == 422
    assert response.status_code == 422
    assert response.content == direct.content
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_service_error_is_relayed_with_retry_after(gateway: httpx.Client) -> None:
    response = gateway.post("/v1/sentiment/predict", json={"text": ["overload me"]})

    assert response.status_code == 429
    assert response.json() == {"detail": "queue full", "error_type": "overloaded"}
    assert response.headers["retry-after"] == "1"


def test_unknown_task_is_404_listing_known_tasks(gateway: httpx.Client) -> None:
    response = gateway.post("/v1/weather/predict", json={"text": ["sunny"]})

    assert response.status_code == 404
    assert response.json() == {
        "detail": "unknown task 'weather'; known tasks: offline, sentiment, slow",
        "error_type": "unknown_task",
    }


def test_unreachable_service_is_503_naming_the_task(gateway: httpx.Client) -> None:
    response = gateway.post("/v1/offline/predict", json={"text": ["hello"]})

    assert response.status_code == 503
    assert response.json() == {
        "detail": "the service for task 'offline' is unavailable: could not connect to it",
        "error_type": "upstream_unavailable",
    }


def test_service_dropping_the_connection_is_503(start_gateway: StartGateway) -> None:
    with connection_breaker() as broken_url:
        gateway = start_gateway(upstreams={"broken": broken_url}, task_timeouts={})

        response = gateway.post("/v1/broken/predict", json={"text": ["hello"]})

    assert response.status_code == 503
    assert response.json() == {
        "detail": "the service for task 'broken' is unavailable: the connection broke "
        "before it answered",
        "error_type": "upstream_unavailable",
    }


def test_slow_service_is_504_naming_task_and_timeout(gateway: httpx.Client) -> None:
    response = gateway.post("/v1/slow/predict", json={"text": ["hello"]})

    assert response.status_code == 504
    assert response.json() == {
        # The task's timeout plus the margin the gateway leaves the service.
        "detail": "the service for task 'slow' did not answer within 0.5 seconds",
        "error_type": "upstream_timeout",
    }


def test_models_merges_ready_and_unreachable_services(
    gateway: httpx.Client, sentiment_service: FakeTextService
) -> None:
    response = gateway.get("/v1/models")

    one_ready_replica = {"kind": "text", "replicas": 1, "replicas_ready": 1}
    assert response.status_code == 200
    assert response.json() == {
        "models": [
            {**sentiment_service.model_entry(), **one_ready_replica},
            {**FakeTextService("slow").model_entry(), **one_ready_replica},
            {
                "task": "offline",
                "name": None,
                "version": None,
                "labels": None,
                "limits": None,
                "ready": False,
                "status": "unreachable",
                "reason": "could not connect to the service",
                "kind": "text",
                "replicas": 1,
                "replicas_ready": 0,
            },
        ]
    }


def test_models_is_ready_when_one_replica_is(
    start_gateway: StartGateway, sentiment_url: str, offline_url: str
) -> None:
    gateway = start_gateway(
        upstreams={"sentiment": [offline_url, sentiment_url]},
        task_kinds={"sentiment": "image"},
        task_timeouts={},
    )

    (entry,) = gateway.get("/v1/models").json()["models"]
    ready = gateway.get("/health/ready")

    assert entry["ready"] is True
    assert entry["name"] == "sentiment-tiny"
    assert (entry["kind"], entry["replicas"], entry["replicas_ready"]) == ("image", 2, 1)
    assert ready.status_code == 200


def test_models_reports_a_service_that_drops_the_connection(start_gateway: StartGateway) -> None:
    with connection_breaker() as broken_url:
        gateway = start_gateway(upstreams={"broken": broken_url}, task_timeouts={})

        response = gateway.get("/v1/models")

    assert response.status_code == 200
    assert response.json() == {
        "models": [
            {
                "task": "broken",
                "name": None,
                "version": None,
                "labels": None,
                "limits": None,
                "ready": False,
                "status": "unreachable",
                "reason": "the connection to the service broke before it answered",
                "kind": "text",
                "replicas": 1,
                "replicas_ready": 0,
            }
        ]
    }


def test_ready_is_503_while_a_service_is_down(gateway: httpx.Client) -> None:
    response = gateway.get("/health/ready")

    assert response.status_code == 503
    assert response.json() == {
        "detail": "not ready: offline (unreachable)",
        "error_type": "not_ready",
        "tasks": {"sentiment": "ready", "slow": "ready", "offline": "unreachable"},
    }


def test_ready_is_200_when_every_service_is_ready(
    start_gateway: StartGateway, sentiment_url: str, slow_url: str
) -> None:
    gateway = start_gateway(
        upstreams={"sentiment": sentiment_url, "slow": slow_url}, task_timeouts={}
    )

    response = gateway.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "tasks": {"sentiment": "ready", "slow": "ready"}}


def test_live_does_not_depend_on_services(gateway: httpx.Client) -> None:
    response = gateway.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def _oversized_chunks() -> Iterator[bytes]:
    yield b'{"text": ["'
    yield b"x" * BODY_LIMIT_BYTES
    yield b'"]}'


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"content": b'{"text": ["' + b"x" * BODY_LIMIT_BYTES + b'"]}'}, id="length"),
        pytest.param({"content": _oversized_chunks}, id="chunked"),
    ],
)
def test_body_over_limit_is_413_and_not_forwarded(
    gateway: httpx.Client, sentiment_service: FakeTextService, body: dict[str, Any]
) -> None:
    forwarded_before = len(sentiment_service.received)
    content = body["content"]() if callable(body["content"]) else body["content"]

    response = gateway.post("/v1/sentiment/predict", content=content)

    assert response.status_code == 413
    assert response.json() == {
        "detail": f"request body is larger than {BODY_LIMIT_BYTES} bytes",
        "error_type": "body_too_large",
    }
    assert len(sentiment_service.received) == forwarded_before


def test_root_keeps_the_framework_not_found(gateway: httpx.Client) -> None:
    response = gateway.get("/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def _samples(gateway: httpx.Client, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    response = gateway.get("/metrics")
    assert response.status_code == 200
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name
    }


def test_metrics_count_predict_requests_only(gateway: httpx.Client) -> None:
    for path in ("/health/live", "/health/ready", "/metrics", "/docs", "/v1/models"):
        gateway.get(path)
    gateway.post("/v1/sentiment/predict", json={"text": ["fine"]})
    gateway.post("/v1/offline/predict", json={"text": ["fine"]})
    gateway.post("/v1/made-up-task/predict", json={"text": ["fine"]})

    requests = _samples(gateway, "mtc_gateway_requests_total")
    durations = _samples(gateway, "mtc_gateway_request_duration_seconds_count")
    upstream_errors = _samples(gateway, "mtc_gateway_upstream_errors_total")

    assert requests == {
        (("status_class", "2xx"), ("task", "sentiment")): 1.0,
        (("status_class", "5xx"), ("task", "offline")): 1.0,
        (("status_class", "4xx"), ("task", "unknown")): 1.0,
    }
    assert durations == {
        (("task", "sentiment"),): 1.0,
        (("task", "offline"),): 1.0,
        (("task", "unknown"),): 1.0,
    }
    assert upstream_errors == {(("kind", "connect"), ("task", "offline")): 1.0}


def test_metrics_label_unconfigured_tasks_as_unknown() -> None:
    metrics = GatewayMetrics(["sentiment"])

    assert metrics.task_label("sentiment") == "sentiment"
    assert metrics.task_label("anything-a-client-types") == "unknown"


def test_one_json_ready_access_log_record_per_predict(
    gateway: httpx.Client, sentiment_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")

    gateway.get("/health/live")
    gateway.post("/v1/sentiment/predict", json={"text": ["fine"]})

    records = [record for record in caplog.records if record.name == "gateway.access"]
    assert len(records) == 1
    fields = records[0].__dict__["fields"]
    assert {key: fields[key] for key in ("task", "status", "upstream")} == {
        "task": "sentiment",
        "status": 200,
        "upstream": sentiment_url,
    }
    assert isinstance(fields["duration_ms"], float)


def test_openapi_documents_each_task_with_the_schemas_of_its_kind(
    start_gateway: StartGateway, sentiment_url: str
) -> None:
    gateway = start_gateway(
        upstreams={"sentiment": sentiment_url, "pose": sentiment_url, "audio": sentiment_url},
        task_kinds={"pose": "image", "audio": "audio"},
        task_timeouts={},
    )

    response = gateway.get("/openapi.json")

    assert response.status_code == 200
    document = response.json()
    paths, components = document["paths"], document["components"]["schemas"]
    assert "/v1/{task}/predict" not in paths
    text = paths["/v1/sentiment/predict"]["post"]
    assert text["requestBody"]["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/TextPredictRequest"}}
    }
    assert components["TextPredictRequest"]["required"] == ["text"]
    assert components["TextPredictRequest"]["properties"]["text"]["minItems"] == 1
    assert _response_schema(text, "200") == {"$ref": "#/components/schemas/TextPredictResponse"}
    assert set(text["responses"]) == {"200", "400", "413", "422", "429", "503", "504"}
    # One 422 shape for the gateway and the services: FastAPI's body, documented once.
    assert _response_schema(text, "422") == {"$ref": "#/components/schemas/ValidationErrorBody"}
    assert "ValidationErrorBody" in components
    assert _response_schema(text, "503") == {"$ref": "#/components/schemas/ErrorBody"}
    assert "upstream_unavailable" in text["responses"]["503"]["description"]
    assert "security" not in text

    image = paths["/v1/pose/predict"]["post"]
    image_bodies = image["requestBody"]["content"]
    assert image_bodies["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PoseJsonRequest"
    }
    assert image_bodies["multipart/form-data"]["schema"]["properties"]["image"]["items"] == {
        "type": "string",
        "format": "binary",
    }
    assert _response_schema(image, "200") == {"$ref": "#/components/schemas/PosePredictResponse"}
    assert "415" in image["responses"]

    audio = paths["/v1/audio/predict"]["post"]
    form = audio["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["audio"]
    assert set(form["properties"]) == {"audio", "transcript"}
    assert _response_schema(audio, "200") == {"$ref": "#/components/schemas/AudioPredictResponse"}
    clip = components["AudioClipDetail"]["properties"]
    assert set(clip) == {
        "audio",
        "text",
        "transcript",
        "transcript_source",
        "transcript_language",
        "duration_seconds",
    }
    assert "unusable_content" in audio["responses"]["422"]["description"]
    from_s3 = paths["/v1/audio/predict-s3"]["post"]
    assert from_s3["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AudioS3Request"
    }
    assert components["AudioS3Request"]["required"] == ["s3_uri"]
    assert {"403", "404"} <= set(from_s3["responses"])
    assert gateway.get("/docs").status_code == 200


def _response_schema(operation: dict[str, Any], status: str) -> Any:
    return operation["responses"][status]["content"]["application/json"]["schema"]


# --------------------------------------------------------------------------- other task routes


def test_other_routes_of_a_task_are_forwarded_with_their_query(
    gateway: httpx.Client, sentiment_service: FakeTextService
) -> None:
    response = gateway.get("/v1/sentiment/about", params={"verbose": "1"})

    assert response.status_code == 200
    assert response.json() == {"task": "sentiment", "query": "verbose=1"}
    assert sentiment_service.received[-1].path == "/v1/sentiment/about"
    assert "x-total-time" in response.headers


def test_a_route_the_service_lacks_is_its_404(gateway: httpx.Client) -> None:
    response = gateway.post("/v1/sentiment/explain", json={"text": ["x"]})

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize("path", ["/v1/sentiment/predict/../../metrics", "/v1/sentiment/a//b"])
def test_routes_that_could_escape_the_task_are_refused(
    gateway: httpx.Client, sentiment_service: FakeTextService, path: str
) -> None:
    forwarded_before = len(sentiment_service.received)

    request = gateway.build_request("GET", "/")
    # The request target is sent as is: httpx would otherwise normalise the dots away.
    request.extensions["target"] = path.encode()
    response = gateway.send(request)

    assert response.status_code == 404
    assert len(sentiment_service.received) == forwarded_before


# --------------------------------------------------------------------------- request ids


def test_request_id_is_generated_passed_upstream_and_returned(
    gateway: httpx.Client, sentiment_service: FakeTextService
) -> None:
    response = gateway.post("/v1/sentiment/predict", json={"text": ["fine"]})

    request_id = response.headers["x-request-id"]
    assert len(request_id) == 32
    assert sentiment_service.received[-1].headers["x-request-id"] == request_id
    assert gateway.get("/health/live").headers["x-request-id"] != request_id


def test_client_request_id_is_kept(
    gateway: httpx.Client, sentiment_service: FakeTextService
) -> None:
    response = gateway.post(
        "/v1/sentiment/predict", json={"text": ["fine"]}, headers={"x-request-id": "job-42.7"}
    )

    assert response.headers["x-request-id"] == "job-42.7"
    assert sentiment_service.received[-1].headers["x-request-id"] == "job-42.7"


@pytest.mark.parametrize("offered", ["has spaces", "x" * 129, 'quote"d'])
def test_unsafe_request_id_is_replaced(gateway: httpx.Client, offered: str) -> None:
    response = gateway.get("/health/live", headers={"x-request-id": offered})

    assert response.headers["x-request-id"] != offered
    assert len(response.headers["x-request-id"]) == 32


def test_json_log_lines_carry_the_request_id(
    gateway: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    formatter = JsonFormatter()

    response = gateway.post(
        "/v1/sentiment/predict", json={"text": ["fine"]}, headers={"x-request-id": "trace-1"}
    )

    (record,) = [record for record in caplog.records if record.name == "gateway.access"]
    line = json.loads(formatter.format(record))
    assert response.status_code == 200
    assert line["request_id"] == "trace-1"
    assert line["message"] == "request"
    assert (line["task"], line["status"], line["method"]) == ("sentiment", 200, "POST")
