"""Model releases through the gateway: weighted upstreams (a canary's share of the traffic),
the model version named in every answer, and answers counted per version in bounded series.

The release flow with real services and processes runs in tests/e2e/test_model_release.py."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from gateway.local_stack import (
    TEXT_SERVICE,
    Canary,
    all_replicas_ready,
    canaries_from,
    gateway_environment,
    jobs_environment,
    plan_services,
)
from gateway.metrics import MAX_MODEL_VERSIONS_PER_TASK, GatewayMetrics
from gateway.replicas import CircuitBreaker, ReplicaSet
from gateway.settings import GatewaySettings
from services.text.api import build_app
from services.text.settings import TextSettings
from tests.support.fake_services import FakeTextService
from tests.support.in_thread_servers import bound_socket, served_gateway, serving, url_of
from tests.support.service_client import wait_ready

STABLE = "http://mtc-sentiment"
CANARY = "http://mtc-sentiment-canary"


def _weighted(weights: dict[str, float], threshold: int = 1) -> ReplicaSet:
    return ReplicaSet(list(weights), lambda: CircuitBreaker(threshold, 60), weights=weights)


def _chosen_urls(replicas: ReplicaSet, count: int) -> list[str]:
    urls = []
    for _ in range(count):
        replica = replicas.choose()
        assert replica is not None
        urls.append(replica.url)
    return urls


# --------------------------------------------------------------------------- weighted replicas


def test_a_weighted_task_splits_its_traffic_exactly_by_weight() -> None:
    urls = _chosen_urls(_weighted({STABLE: 90, CANARY: 10}), 100)

    assert Counter(urls) == {STABLE: 90, CANARY: 10}
    # Interleaved, not ten canary requests in a row: a canary sees steady traffic.
    assert "".join("c" if url == CANARY else "s" for url in urls).count("cc") == 0


def test_a_replica_of_weight_zero_gets_nothing_even_when_the_others_are_down() -> None:
    replicas = _weighted({STABLE: 0, CANARY: 100})
    assert set(_chosen_urls(replicas, 20)) == {CANARY}

    replicas.replicas[1].breaker.record_failure()  # The only replica in service fails.

    assert replicas.choose() is None
    assert replicas.seconds_until_probe() > 0


def test_a_weighted_replica_whose_circuit_is_open_sits_out_and_the_rest_take_over() -> None:
    replicas = _weighted({STABLE: 50, CANARY: 50})
    replicas.replicas[1].breaker.record_failure()

    assert set(_chosen_urls(replicas, 10)) == {STABLE}


def test_a_retry_goes_to_the_other_weighted_replica() -> None:
    replicas = _weighted({STABLE: 99, CANARY: 1})
    replica = replicas.choose(tried=[STABLE])
    assert replica is not None
    assert replica.url == CANARY


# --------------------------------------------------------------------------- settings


def _settings(weights: object) -> GatewaySettings:
    return GatewaySettings(
        upstreams={"sentiment": [STABLE, CANARY], "pose": "http://mtc-pose"},
        upstream_weights=weights,
    )


def test_weights_name_the_urls_as_the_upstreams_spell_them() -> None:
    settings = _settings({"sentiment": {STABLE + "/": 90, CANARY: 10}})
    assert settings.upstream_weights == {"sentiment": {STABLE: 90, CANARY: 10}}


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"weather": {STABLE: 1}}, "names task 'weather', which has no upstream"),
        ({"sentiment": {STABLE: 90, "http://elsewhere": 10}}, "not among its upstreams"),
        ({"sentiment": {STABLE: 100}}, "gives no weight to http://mtc-sentiment-canary"),
        ({"sentiment": {STABLE: 100, CANARY: -1}}, "finite and >= 0"),
        ({"sentiment": {STABLE: 100, CANARY: float("nan")}}, "finite and >= 0"),
        ({"sentiment": {STABLE: 0, CANARY: 0}}, "every weight is 0"),
    ],
)
def test_invalid_weights_stop_the_gateway_with_the_reason(weights: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(weights)


def test_weights_are_read_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTC_GATEWAY_UPSTREAMS", json.dumps({"sentiment": [STABLE, CANARY]}))
    monkeypatch.setenv(
        "MTC_GATEWAY_UPSTREAM_WEIGHTS", json.dumps({"sentiment": {STABLE: 90, CANARY: 10}})
    )
    assert GatewaySettings().upstream_weights == {"sentiment": {STABLE: 90.0, CANARY: 10.0}}


# --------------------------------------------------------------------------- versions counted


def _answers_by_version(exposition: bytes | str) -> dict[tuple[str, str, str], float]:
    text = exposition.decode() if isinstance(exposition, bytes) else exposition
    return {
        (sample.labels["task"], sample.labels["model_version"], sample.labels["status_class"]): (
            sample.value
        )
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mtc_gateway_model_responses_total"
    }


def test_answers_are_counted_per_version_in_a_bounded_number_of_series() -> None:
    metrics = GatewayMetrics(["sentiment"])
    metrics.observe_model_answer("sentiment", "minilm/1.0.0", 200)
    metrics.observe_model_answer("sentiment", "minilm/1.1.0", 500)
    metrics.observe_model_answer("sentiment", None, 503)
    for number in range(50):  # A service inventing versions cannot grow the series.
        metrics.observe_model_answer("sentiment", f"minilm/{number}", 200)
    metrics.observe_model_answer("sentiment", "x" * 1000, 200)

    counts = _answers_by_version(metrics.exposition()[0])

    assert counts[("sentiment", "minilm/1.0.0", "2xx")] == 1
    assert counts[("sentiment", "minilm/1.1.0", "5xx")] == 1
    assert counts[("sentiment", "none", "5xx")] == 1
    versions = {version for _, version, _ in counts}
    assert len(versions - {"none", "other"}) == MAX_MODEL_VERSIONS_PER_TASK
    assert counts[("sentiment", "other", "2xx")] == 50 - (MAX_MODEL_VERSIONS_PER_TASK - 2) + 1


def _versioned_service(version: str) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/sentiment/predict")
    async def predict(response: Response) -> dict[str, Any]:
        response.headers["x-model-version"] = f"minilm/{version}"
        return {"model": {"name": "minilm", "version": version}, "predictions": [[]]}

    return app


@pytest.fixture(scope="module")
def stable_and_canary() -> Iterator[tuple[str, str]]:
    with (
        serving(_versioned_service("1.0.0")) as stable,
        serving(_versioned_service("1.1.0")) as canary,
    ):
        yield stable, canary


@pytest.mark.parametrize(
    ("stable_weight", "canary_weight", "expected"),
    [
        (75, 25, {"minilm/1.0.0": 15, "minilm/1.1.0": 5}),
        (0, 100, {"minilm/1.1.0": 20}),  # promoted
        (100, 0, {"minilm/1.0.0": 20}),  # rolled back
    ],
)
def test_the_gateway_splits_by_weight_and_names_each_answers_version(
    stable_and_canary: tuple[str, str],
    stable_weight: float,
    canary_weight: float,
    expected: dict[str, int],
) -> None:
    stable, canary = stable_and_canary
    settings = GatewaySettings(
        upstreams={"sentiment": [stable, canary]},
        upstream_weights={"sentiment": {stable: stable_weight, canary: canary_weight}},
    )
    with served_gateway(settings) as gateway:
        answers = [
            gateway.post("/v1/sentiment/predict", json={"text": ["fine"]}) for _ in range(20)
        ]
        scraped = gateway.get("/metrics").text

    versions = [answer.headers["x-model-version"] for answer in answers]
    assert Counter(versions) == expected
    for answer, version in zip(answers, versions, strict=True):
        body = answer.json()["model"]
        assert version == f"{body['name']}/{body['version']}"
    counted = _answers_by_version(scraped)
    assert {version: int(counted[("sentiment", version, "2xx")]) for version in expected} == (
        expected
    )


def test_a_url_of_weight_zero_is_out_of_service_for_readiness_too() -> None:
    with bound_socket() as refused, serving(FakeTextService("sentiment").create_app()) as up:
        down = url_of(refused)
        in_service = GatewaySettings(
            upstreams={"sentiment": [down, up]}, upstream_weights={"sentiment": {down: 0, up: 1}}
        )
        with served_gateway(in_service) as gateway:
            assert gateway.get("/health/ready").status_code == 200
            (model,) = gateway.get("/v1/models").json()["models"]
            assert (model["replicas"], model["replicas_ready"]) == (1, 1)
        # The only URL that would get traffic is down: not ready, whatever the other says.
        out_of_service = in_service.model_copy(
            update={"upstream_weights": {"sentiment": {down: 1, up: 0}}}
        )
        with served_gateway(out_of_service) as gateway:
            assert gateway.get("/health/ready").status_code == 503


# --------------------------------------------------------------------------- the services


def test_a_service_names_its_model_version_on_every_prediction(tiny_model_dir: Path) -> None:
    settings = TextSettings(task="sentiment", model_uri=str(tiny_model_dir))
    with TestClient(build_app(settings)) as client:
        wait_ready(client)
        answer = client.post("/v1/sentiment/predict", json={"text": ["good"]})
        refused = client.post("/v1/sentiment/predict", json={"text": []})
        health = client.get("/health/ready")

    model = answer.json()["model"]
    assert answer.headers["x-model-version"] == f"{model['name']}/{model['version']}"
    # An error of the same version is that version's error: the canary's error rate needs it.
    assert refused.status_code == 422
    assert refused.headers["x-model-version"] == answer.headers["x-model-version"]
    assert "x-model-version" not in health.headers


# --------------------------------------------------------------------------- the local stack


MODELS = {"sentiment": (TEXT_SERVICE, "/models/sentiment-1.0.0")}


def test_a_canary_option_names_the_task_the_model_and_its_weight() -> None:
    assert canaries_from(["sentiment=s3://models/sentiment/1.1.0:10"], ["sentiment"]) == {
        "sentiment": Canary("s3://models/sentiment/1.1.0", 10.0)
    }


@pytest.mark.parametrize(
    "option", ["sentiment=/m", "sentiment=/m:ten", "sentiment=/m:101", "weather=/m:10", "/m:10"]
)
def test_bad_canary_options_stop_with_a_message(option: str) -> None:
    with pytest.raises(SystemExit, match="--canary expects TASK=URI:WEIGHT"):
        canaries_from([option], ["sentiment"])


def test_the_canary_runs_after_the_stable_replicas_and_gets_its_weight() -> None:
    canaries = {"sentiment": Canary("/models/sentiment-1.1.0", 10)}
    services = plan_services(MODELS, {"sentiment": 2}, 8101, canaries)

    assert [(service.port, service.canary) for service in services] == [
        (8101, False),
        (8102, False),
        (8103, True),
    ]
    assert services[-1].model_uri == "/models/sentiment-1.1.0"
    assert services[-1].name == "sentiment canary service"

    environment = gateway_environment(services, "127.0.0.1", 8080, canaries)
    settings = GatewaySettings(
        upstreams=json.loads(environment["MTC_GATEWAY_UPSTREAMS"]),
        upstream_weights=json.loads(environment["MTC_GATEWAY_UPSTREAM_WEIGHTS"]),
    )
    assert settings.upstream_weights == {
        "sentiment": {
            "http://127.0.0.1:8101": 45,
            "http://127.0.0.1:8102": 45,
            "http://127.0.0.1:8103": 10,
        }
    }
    # Batch jobs are not weighted: they stay on the stable version.
    jobs = jobs_environment(services, "127.0.0.1", 6379, 9100)
    assert json.loads(jobs["MTC_JOBS_UPSTREAMS"]) == {
        "sentiment": ["http://127.0.0.1:8101", "http://127.0.0.1:8102"]
    }


def test_without_a_canary_the_gateway_is_not_weighted() -> None:
    services = plan_services(MODELS, {}, 8101)
    assert "MTC_GATEWAY_UPSTREAM_WEIGHTS" not in gateway_environment(services, "127.0.0.1", 8080)


def test_the_local_stack_is_up_once_every_replica_has_loaded_its_model() -> None:
    def models(*replicas: tuple[int, int]) -> dict[str, Any]:
        return {
            "models": [
                {"task": f"t{n}", "ready": ready > 0, "replicas": total, "replicas_ready": ready}
                for n, (total, ready) in enumerate(replicas)
            ]
        }

    assert all_replicas_ready(models((2, 2), (1, 1)))
    # The gateway is ready with the stable replica, but the canary would answer 503.
    assert not all_replicas_ready(models((2, 1), (1, 1)))
    assert not all_replicas_ready(models((1, 0)))
    assert not all_replicas_ready({"detail": "unexpected"})
