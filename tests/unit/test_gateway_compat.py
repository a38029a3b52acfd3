"""The compatibility routes against fake services over real HTTP: exact body shapes, the
422 bodies earlier clients parse, reshaped answers, and relayed service errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.settings import GatewaySettings
from tests.support.fake_services import FakePoseService, FakeTextService
from tests.support.in_thread_servers import bound_socket, served_gateway, serving, url_of


@pytest.fixture(scope="module")
def sentiment_service() -> FakeTextService:
    # Lower-case labels, lowest score listed first by the model: the route fixes both.
    return FakeTextService("sentiment", labels=("negative", "positive"), scores=(0.2, 0.8))


@pytest.fixture(scope="module")
def disaster_service() -> FakeTextService:
    return FakeTextService("disaster", labels=("not_disaster", "disaster"), scores=(0.3, 0.7))


@pytest.fixture(scope="module")
def pose_service() -> FakePoseService:
    return FakePoseService()


@pytest.fixture(scope="module")
def gateway(
    sentiment_service: FakeTextService,
    disaster_service: FakeTextService,
    pose_service: FakePoseService,
) -> Iterator[httpx.Client]:
    with (
        serving(sentiment_service.create_app()) as sentiment_url,
        serving(disaster_service.create_app()) as disaster_url,
        serving(pose_service.create_app()) as pose_url,
    ):
        settings = GatewaySettings(
            upstreams={"sentiment": sentiment_url, "disaster": disaster_url, "pose": pose_url},
            task_kinds={"pose": "image"},
        )
        with served_gateway(settings) as client:
            yield client


# --------------------------------------------------------------------------- /project


def test_bulk_predict_returns_both_labels_upper_case_highest_first(
    gateway: httpx.Client, sentiment_service: FakeTextService
) -> None:
    response = gateway.post("/project/bulk-predict", json={"text": ["loved it", "meh"]})

    assert response.status_code == 200
    assert response.json() == {
        "predictions": [
            [{"label": "POSITIVE", "score": 0.8}, {"label": "NEGATIVE", "score": 0.2}],
            [{"label": "POSITIVE", "score": 0.8}, {"label": "NEGATIVE", "score": 0.2}],
        ]
    }
    assert response.headers["x-inference-time"] == "12.5"
    assert "x-total-time" in response.headers
    last = sentiment_service.predicted[-1]
    assert last.path == "/v1/sentiment/predict"
    assert last.body == b'{"text":["loved it","meh"]}'


def test_bulk_predict_reads_json_sent_without_content_type(gateway: httpx.Client) -> None:
    response = gateway.post("/project/bulk-predict", content=b'{"text": ["no header"]}')

    assert "content-type" not in response.request.headers
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


def test_bulk_predict_answers_a_thousand_texts(gateway: httpx.Client) -> None:
    response = gateway.post("/project/bulk-predict", json={"text": [f"t{n}" for n in range(1000)]})

    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1000


def test_text_as_a_string_is_422_located_at_body_text(gateway: httpx.Client) -> None:
    response = gateway.post("/project/bulk-predict", json={"text": "a string"})

    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "text"]
    assert error["type"] == "list_type"
    assert error["input"] == "a string"


def test_missing_text_is_422_field_required(gateway: httpx.Client) -> None:
    response = gateway.post("/project/bulk-predict", json={})

    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {"type": "missing", "loc": ["body", "text"], "msg": "Field required", "input": {}}
        ]
    }


@pytest.mark.parametrize(
    ("body", "error_type", "location"),
    [
        ({"text": []}, "too_short", ["body", "text"]),
        ({"text": ["ok", 3]}, "string_type", ["body", "text", 1]),
    ],
)
def test_bad_text_lists_are_422(
    gateway: httpx.Client, body: dict[str, Any], error_type: str, location: list[Any]
) -> None:
    response = gateway.post("/project/bulk-predict", json=body)

    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert (error["type"], error["loc"]) == (error_type, location)


def test_invalid_json_is_422(gateway: httpx.Client) -> None:
    response = gateway.post("/project/bulk-predict", content=b'{"text": [')

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_service_errors_are_relayed(gateway: httpx.Client) -> None:
    response = gateway.post("/project/bulk-predict", json={"text": ["overload me"]})

    assert response.status_code == 429
    assert response.json() == {"detail": "queue full", "error_type": "overloaded"}
    assert response.headers["retry-after"] == "1"


def test_project_health_is_healthy(gateway: httpx.Client) -> None:
    response = gateway.get("/project/health")

    assert response.status_code == 200
    assert response.json() == {"status": "healthy"}


def test_project_health_is_503_while_the_sentiment_service_is_down() -> None:
    with bound_socket() as sock:
        settings = GatewaySettings(upstreams={"sentiment": url_of(sock)})
        with served_gateway(settings) as gateway:
            response = gateway.get("/project/health")

    assert response.status_code == 503
    assert response.json() == {
        "detail": "the sentiment model is unreachable: could not connect to the service",
        "error_type": "model_not_ready",
    }


def test_project_docs_cover_the_project_routes_only(gateway: httpx.Client) -> None:
    document = gateway.get("/project/openapi.json").json()
    docs_page = gateway.get("/project/docs")

    assert sorted(document["paths"]) == ["/project/bulk-predict", "/project/health"]
    bulk = document["paths"]["/project/bulk-predict"]["post"]
    body_ref = bulk["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request_schema = document["components"]["schemas"][body_ref.rsplit("/", 1)[-1]]
    assert request_schema["required"] == ["text"]
    assert {"200", "413", "422", "429", "503", "504"} <= set(bulk["responses"])
    assert docs_page.status_code == 200
    assert "/project/openapi.json" in docs_page.text


def test_root_stays_the_framework_not_found(gateway: httpx.Client) -> None:
    response = gateway.get("/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


# --------------------------------------------------------------------------- /api/v1


@pytest.mark.parametrize(
    ("path", "model_name", "label", "score"),
    [
        ("/api/v1/sentiment_analysis", "sentiment-tiny", "positive", 0.8),
        ("/api/v1/disaster_classifier", "disaster-tiny", "disaster", 0.7),
    ],
)
def test_text_classifiers_return_the_top_label_per_text(
    gateway: httpx.Client, path: str, model_name: str, label: str, score: float
) -> None:
    texts = ["Forest fire near La Ronge", "what a lovely day"]

    response = gateway.post(path, json={"text": texts})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model_name", "text", "labels", "scores", "prediction_time"}
    assert body["model_name"] == model_name
    assert body["text"] == texts
    assert body["labels"] == [label, label]
    assert body["scores"] == [score, score]
    assert isinstance(body["prediction_time"], int)
    assert body["prediction_time"] >= 0


@pytest.mark.parametrize("path", ["/api/v1/sentiment_analysis", "/api/v1/disaster_classifier"])
def test_text_classifiers_validate_like_fastapi(gateway: httpx.Client, path: str) -> None:
    response = gateway.post(path, json={"text": "one string"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "text"]


def test_pose_classifier_returns_the_top_label_per_image(
    gateway: httpx.Client, pose_service: FakePoseService
) -> None:
    response = gateway.post("/api/v1/pose_classifier", json={"images": ["aGVsbG8=", "d29ybGQ="]})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model_name", "labels", "scores", "prediction_time"}
    assert body["model_name"] == "pose-fake"
    assert body["labels"] == ["standing", "standing"]
    assert body["scores"] == [0.9, 0.9]
    assert isinstance(body["prediction_time"], int)
    assert pose_service.received[-1].images == ["aGVsbG8=", "d29ybGQ="]


def test_pose_classifier_needs_images(gateway: httpx.Client) -> None:
    response = gateway.post("/api/v1/pose_classifier", json={"images": []})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "images"]


def test_compat_routes_are_counted_as_their_task(gateway: httpx.Client) -> None:
    gateway.post("/api/v1/disaster_classifier", json={"text": ["smoke"]})

    metrics = gateway.get("/metrics").text

    assert 'mtc_gateway_requests_total{status_class="2xx",task="disaster"}' in metrics


def test_routes_of_unconfigured_tasks_are_left_out() -> None:
    with bound_socket() as sock:
        settings = GatewaySettings(upstreams={"disaster": url_of(sock)})
        with served_gateway(settings) as gateway:
            bulk = gateway.post("/project/bulk-predict", json={"text": ["x"]})
            paths = gateway.get("/openapi.json").json()["paths"]

    assert bulk.status_code == 404
    assert "/api/v1/disaster_classifier" in paths
    assert "/api/v1/sentiment_analysis" not in paths
    assert "/project/bulk-predict" not in paths
