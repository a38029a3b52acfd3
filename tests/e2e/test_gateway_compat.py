"""Contract tests of every compatibility route, over real HTTP against the local stack
(`python -m gateway.local_stack` with the starter models, the sentiment service running as
two replicas)."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_processes import consecutive_free_ports, free_ports
from tests.support.pose_images import opencv_doc_data, pedestrian_crop
from tests.support.processes import local_stack_command, start, stop, wait_for_http

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / ".mtc" / "models"
# The 1,000-text request takes seconds on an idle machine but can take minutes on a busy CI
# one; the stack's own timeouts are raised to match, so only a hang fails a test.
REQUEST_TIMEOUT_SECONDS = 300
TIMEOUT = httpx.Timeout(REQUEST_TIMEOUT_SECONDS + 30.0)
POSITIVE_TEXT = "An absolute triumph, moving and beautifully acted"
NEGATIVE_TEXT = "a tedious, badly written mess"


def starter_model(task: str) -> Path:
    """The starter model directory `make models` builds."""
    model_dir = MODELS_DIR / task
    if not (model_dir / "manifest.json").is_file():
        raise RuntimeError(f"{model_dir} is missing: run `make models` first")
    return model_dir


@dataclass
class Stack:
    base: str
    sentiment_ports: tuple[int, int]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    (gateway_port,) = free_ports(1)
    first_service_port = consecutive_free_ports(4)
    command = local_stack_command(
        gateway_port,
        first_service_port,
        "--model",
        f"sentiment={starter_model('sentiment')}",
        "--model",
        f"disaster={starter_model('disaster')}",
        "--pose-model",
        f"pose={starter_model('pose')}",
        "--replicas",
        "sentiment=2",
    )
    log = tmp_path_factory.mktemp("compat-stack") / "stack.log"
    timeouts = {
        "MTC_GATEWAY_REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT_SECONDS),
        "MTC_REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT_SECONDS),
    }
    # The runner passes its environment on to the gateway and the services it starts.
    process: subprocess.Popen[bytes] = start(command, env=timeouts, log=log)
    base = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_for_http(f"{base}/health/ready", process, timeout=300)
        # The gateway is ready once each task has one loaded replica; tests that spread
        # requests over both sentiment replicas need both loaded.
        for port in (first_service_port, first_service_port + 1):
            wait_for_http(f"http://127.0.0.1:{port}/health/ready", process, timeout=300)
        yield Stack(base, (first_service_port, first_service_port + 1))
    except Exception:
        print(log.read_text())
        raise
    finally:
        stop(process)


def _bulk(stack: Stack, body: object = None, *, content: bytes | None = None) -> httpx.Response:
    """POST /project/bulk-predict with `body` as JSON, or `content` sent with no type."""
    url = f"{stack.base}/project/bulk-predict"
    if content is not None:
        return httpx.post(url, content=content, timeout=TIMEOUT)
    return httpx.post(url, json=body, timeout=TIMEOUT)


# --------------------------------------------------------------------------- /project


def test_bulk_predict_rates_each_text_with_both_labels(stack: Stack) -> None:
    response = _bulk(stack, {"text": [POSITIVE_TEXT, NEGATIVE_TEXT]})

    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["predictions"]
    assert [[entry["label"] for entry in item] for item in body["predictions"]] == [
        ["POSITIVE", "NEGATIVE"],
        ["NEGATIVE", "POSITIVE"],
    ]
    for item in body["predictions"]:
        assert set(item[0]) == {"label", "score"}
        assert item[0]["score"] >= item[1]["score"]
        assert item[0]["score"] + item[1]["score"] == pytest.approx(1.0, abs=1e-4)


def test_bulk_predict_accepts_json_without_content_type(stack: Stack) -> None:
    response = _bulk(stack, content=json.dumps({"text": [POSITIVE_TEXT]}).encode())

    assert "content-type" not in response.request.headers
    assert response.status_code == 200
    assert response.json()["predictions"][0][0]["label"] == "POSITIVE"


def test_bulk_predict_text_as_a_string_is_422_at_body_text(stack: Stack) -> None:
    response = _bulk(stack, {"text": "a string"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "text"]


def test_bulk_predict_without_text_is_422_field_required(stack: Stack) -> None:
    response = _bulk(stack, {})

    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert (error["loc"], error["msg"]) == (["body", "text"], "Field required")


def test_bulk_predict_with_no_texts_is_422(stack: Stack) -> None:
    response = _bulk(stack, {"text": []})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "text"]


def test_bulk_predict_answers_a_thousand_texts(stack: Stack) -> None:
    texts = [f"review number {index}: {POSITIVE_TEXT.lower()}" for index in range(1000)]

    response = _bulk(stack, {"text": texts})

    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 1000
    assert all(len(item) == 2 for item in predictions)


def test_project_health_docs_and_openapi(stack: Stack) -> None:
    health = httpx.get(f"{stack.base}/project/health", timeout=TIMEOUT)
    docs = httpx.get(f"{stack.base}/project/docs", timeout=TIMEOUT)
    document = httpx.get(f"{stack.base}/project/openapi.json", timeout=TIMEOUT)

    assert health.status_code == 200
    assert health.json() == {"status": "healthy"}
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    assert sorted(document.json()["paths"]) == ["/project/bulk-predict", "/project/health"]


def test_root_is_not_found(stack: Stack) -> None:
    response = httpx.get(f"{stack.base}/", timeout=TIMEOUT)

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


# --------------------------------------------------------------------------- /api/v1


def test_sentiment_analysis_gives_the_top_label_per_text(stack: Stack) -> None:
    texts = [POSITIVE_TEXT, NEGATIVE_TEXT]

    response = httpx.post(
        f"{stack.base}/api/v1/sentiment_analysis", json={"text": texts}, timeout=TIMEOUT
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert sorted(body) == ["labels", "model_name", "prediction_time", "scores", "text"]
    assert body["model_name"] == "mtc-sentiment-minilm"
    assert body["text"] == texts
    assert body["labels"] == ["POSITIVE", "NEGATIVE"]
    assert all(0.5 <= score <= 1.0 for score in body["scores"])
    assert isinstance(body["prediction_time"], int)


def test_disaster_classifier_gives_the_top_label_per_text(stack: Stack) -> None:
    texts = [
        "this mixtape is fire",
        "Evacuation ordered as wildfire jumps the highway, homes burning on Ridge Road",
    ]

    response = httpx.post(
        f"{stack.base}/api/v1/disaster_classifier", json={"text": texts}, timeout=TIMEOUT
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "mtc-disaster-minilm"
    assert body["labels"] == ["not_disaster", "disaster"]
    assert len(body["scores"]) == 2
    assert isinstance(body["prediction_time"], int)


@pytest.mark.parametrize("path", ["/api/v1/sentiment_analysis", "/api/v1/disaster_classifier"])
def test_text_classifiers_refuse_a_string_with_422(stack: Stack, path: str) -> None:
    response = httpx.post(f"{stack.base}{path}", json={"text": "one string"}, timeout=TIMEOUT)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "text"]


def test_pose_classifier_gives_the_top_label_per_image(stack: Stack) -> None:
    walker = base64.b64encode(pedestrian_crop(opencv_doc_data())).decode()

    response = httpx.post(
        f"{stack.base}/api/v1/pose_classifier", json={"images": [walker]}, timeout=TIMEOUT
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert sorted(body) == ["labels", "model_name", "prediction_time", "scores"]
    assert body["model_name"] == "pose-landmark-rules"
    assert body["labels"] == ["standing"]
    assert isinstance(body["prediction_time"], int)


def test_pose_classifier_relays_the_services_refusal(stack: Stack) -> None:
    not_an_image = base64.b64encode(b"just some text").decode()

    response = httpx.post(
        f"{stack.base}/api/v1/pose_classifier", json={"images": [not_an_image]}, timeout=TIMEOUT
    )

    assert response.status_code == 415
    assert response.json()["error_type"] == "unsupported_media_type"


# --------------------------------------------------------------------------- replicas


def test_the_local_stack_runs_and_balances_two_sentiment_replicas(stack: Stack) -> None:
    (entry,) = [
        model
        for model in httpx.get(f"{stack.base}/v1/models", timeout=TIMEOUT).json()["models"]
        if model["task"] == "sentiment"
    ]
    before = [_served(port) for port in stack.sentiment_ports]

    for index in range(6):
        _bulk(stack, {"text": [f"replica check {index}"]}).raise_for_status()

    after = [_served(port) for port in stack.sentiment_ports]
    assert (entry["replicas"], entry["replicas_ready"]) == (2, 2)
    assert [served > earlier for earlier, served in zip(before, after, strict=True)] == [True, True]


def _served(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mtc_requests_total{") and 'status_class="2xx"' in line
    )
