"""The gateway against real HTTP services.

Fake model services and the gateway itself run in uvicorn on 127.0.0.1 (free ports, one
thread each); the tests call the gateway over HTTP like any client. Client timeouts are
generous, so a gateway that hangs fails a test instead of being measured.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field
from starlette.types import ASGIApp

from gateway.app import create_app
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings

CLIENT_TIMEOUT = httpx.Timeout(15.0)
SLOW_TASK_TIMEOUT_SECONDS = 0.3
BODY_LIMIT_BYTES = 1024


class PredictBody(BaseModel):
    """The services' request schema."""

    text: list[str] = Field(min_length=1)


@dataclass
class FakeTextService:
    """A text service that honours the service contract with canned answers.

    It records what each accepted predict request looked like on arrival, so tests can check
    what the gateway forwarded. The text "overload me" gets the service's 429.
    """

    task: str
    predict_delay_seconds: float = 0.0
    received: list[tuple[str | None, bytes]] = field(default_factory=list)

    def model_entry(self) -> dict[str, Any]:
        """This service's entry in `/v1/models`."""
        return {
            "task": self.task,
            "name": f"{self.task}-tiny",
            "version": "3",
            "labels": ["positive", "negative"],
            "limits": {"max_items": 32, "max_chars": 2000},
            "ready": True,
            "status": "ready",
            "reason": None,
        }

    def prediction_body(self, texts: list[str]) -> dict[str, Any]:
        """The answer to a successful predict request for `texts`."""
        scores = [{"label": "positive", "score": 0.75}, {"label": "negative", "score": 0.25}]
        return {
            "model": {"name": f"{self.task}-tiny", "version": "3"},
            "predictions": [scores for _ in texts],
            "truncated": [],
        }

    def create_app(self) -> FastAPI:
        """The service's FastAPI app."""
        app = FastAPI()

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Any:
            # Recorded before validation, so bodies the route would refuse are seen too.
            if request.url.path.endswith("/predict"):
                self.received.append((request.headers.get("content-type"), await request.body()))
            return await call_next(request)

        @app.post(f"/v1/{self.task}/predict", response_model=None)
        async def predict(
            payload: PredictBody, request: Request, response: Response
        ) -> dict[str, Any] | JSONResponse:
            await asyncio.sleep(self.predict_delay_seconds)
            if "overload me" in payload.text:
                return JSONResponse(
                    {"detail": "queue full", "error_type": "overloaded"},
                    status_code=429,
                    headers={"retry-after": "1"},
                )
            response.headers["x-inference-time"] = "12.5"
            response.headers["x-queue-time"] = "0.5"
            return self.prediction_body(payload.text)

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"models": [self.model_entry()]}

        @app.get("/health/ready")
        async def ready() -> dict[str, str]:
            return {"status": "ready"}

        return app


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """Run `app` in uvicorn on a free 127.0.0.1 port in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {port} did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def connection_breaker() -> Iterator[str]:
    """A TCP server that accepts each connection and closes it without answering."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.05)
    stop = threading.Event()

    def accept_and_close() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.close()

    thread = threading.Thread(target=accept_and_close, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


StartGateway = Callable[..., httpx.Client]


@pytest.fixture
def start_gateway(sentiment_url: str, slow_url: str, offline_url: str) -> Iterator[StartGateway]:
    """Start a gateway (by default: sentiment up, slow too slow, offline down) and a client."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> httpx.Client:
            values: dict[str, Any] = {
                "upstreams": {"sentiment": sentiment_url, "slow": slow_url, "offline": offline_url},
                "task_timeouts": {"slow": SLOW_TASK_TIMEOUT_SECONDS},
                "max_body_bytes": BODY_LIMIT_BYTES,
            }
            values.update(overrides)
            base_url = stack.enter_context(serving(create_app(GatewaySettings(**values))))
            client = httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT)
            return stack.enter_context(client)

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
    assert sentiment_service.received[-1] == ("application/json", raw_body)


def test_predict_accepts_json_without_content_type(
    gateway: httpx.Client, sentiment_service: FakeTextService
) -> None:
    raw_body = b'{"text": ["no header"]}'

    response = gateway.post("/v1/sentiment/predict", content=raw_body)

    assert "content-type" not in response.request.headers
    assert response.status_code == 200
    assert response.json() == sentiment_service.prediction_body(["no header"])
    assert sentiment_service.received[-1] == ("application/json", raw_body)


def test_predict_keeps_the_client_content_type(
    gateway: httpx.Client, sentiment_service: FakeTextService
) -> None:
    # Multipart uploads (images, audio) only parse with their own boundary parameter.
    content_type = "multipart/form-data; boundary=mtc-test-boundary"
    raw_body = b"--mtc-test-boundary--\r\n"

    gateway.post("/v1/sentiment/predict", content=raw_body, headers={"content-type": content_type})

    assert sentiment_service.received[-1] == (content_type, raw_body)


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
        "detail": "the service for task 'slow' did not answer within 0.3 seconds",
        "error_type": "upstream_timeout",
    }


def test_models_merges_ready_and_unreachable_services(
    gateway: httpx.Client, sentiment_service: FakeTextService
) -> None:
    response = gateway.get("/v1/models")

    assert response.status_code == 200
    assert response.json() == {
        "models": [
            sentiment_service.model_entry(),
            FakeTextService("slow").model_entry(),
            {
                "task": "offline",
                "name": None,
                "version": None,
                "labels": None,
                "limits": None,
                "ready": False,
                "status": "unreachable",
                "reason": "could not connect to the service",
            },
        ]
    }


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


def test_openapi_documents_the_predict_contract(gateway: httpx.Client) -> None:
    response = gateway.get("/openapi.json")

    assert response.status_code == 200
    operation = response.json()["paths"]["/v1/{task}/predict"]["post"]
    content = operation["requestBody"]["content"]
    text_schema, images_schema = content["application/json"]["schema"]["oneOf"]
    assert text_schema["required"] == ["text"]
    assert text_schema["properties"]["text"]["type"] == "array"
    assert text_schema["properties"]["text"]["items"] == {"type": "string"}
    assert text_schema["properties"]["text"]["minItems"] == 1
    assert images_schema["required"] == ["images"]
    image_parts = content["multipart/form-data"]["schema"]["properties"]["image"]
    assert image_parts["items"] == {"type": "string", "format": "binary"}
    answers = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/TextPredictResponse"} in answers["anyOf"]
    assert {"$ref": "#/components/schemas/PosePredictResponse"} in answers["anyOf"]
    assert {"404", "413", "415", "422", "429", "503", "504"} <= set(operation["responses"])
    assert gateway.get("/docs").status_code == 200
