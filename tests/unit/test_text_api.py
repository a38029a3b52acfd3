"""The text service's HTTP contract, with a tiny real transformer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.core.cpu_features import has_native_bfloat16
from services.text.api import build_app
from services.text.models.sequence_classifier import SequenceClassifier, TextInput, TextPrediction
from services.text.settings import TextSettings
from tests.support.service_client import metric, wait_ready

URL = "/v1/sentiment/predict"


def settings_for(model_dir: Path, **overrides: Any) -> TextSettings:
    return TextSettings(task="sentiment", model_uri=str(model_dir), **overrides)


@pytest.fixture
def client(tiny_model_dir: Path) -> Iterator[TestClient]:
    with TestClient(build_app(settings_for(tiny_model_dir))) as test_client:
        wait_ready(test_client)
        yield test_client


def test_every_label_sorted_by_score(client: TestClient) -> None:
    response = client.post(URL, json={"text": ["good", "bad movie"]})
    assert response.status_code == 200
    body = response.json()
    assert body["model"]["name"].startswith("tiny-bert")
    assert body["model"]["version"].startswith("sha256-")
    assert body["truncated"] == []
    for scores in body["predictions"]:
        assert {entry["label"] for entry in scores} == {"NEGATIVE", "POSITIVE"}
        values = [entry["score"] for entry in scores]
        assert values == sorted(values, reverse=True)
        assert sum(values) == pytest.approx(1.0, abs=1e-5)
    assert "x-inference-time" in response.headers
    assert "x-queue-time" in response.headers


def test_input_order_is_kept(client: TestClient) -> None:
    texts = [f"review number {i} " + "word " * (i % 7) for i in range(40)]
    alone = [client.post(URL, json={"text": [t]}).json()["predictions"][0] for t in texts]
    together = client.post(URL, json={"text": list(reversed(texts))}).json()["predictions"]
    for single, batched in zip(alone, reversed(together), strict=True):
        assert single[0]["label"] == batched[0]["label"]
        assert single[0]["score"] == pytest.approx(batched[0]["score"], abs=1e-4)


def test_batch_of_1000_works_and_1025_is_refused(client: TestClient) -> None:
    texts = [f"text {i}" for i in range(1000)]
    response = client.post(URL, json={"text": texts})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1000
    refused = client.post(URL, json={"text": ["x"] * 1025})
    assert refused.status_code == 413
    assert refused.json()["error_type"] == "batch_too_large"
    assert "1024" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("body", "location", "kind"),
    [
        ({"text": []}, ["body", "text"], "too_short"),
        ({"text": "a string"}, ["body", "text"], "list_type"),
        ({"text": [1, 2]}, ["body", "text", 0], "string_type"),
        ({}, ["body", "text"], "missing"),
    ],
)
def test_invalid_bodies_get_fastapi_validation_errors(
    client: TestClient, body: dict[str, Any], location: list[Any], kind: str
) -> None:
    response = client.post(URL, json=body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert errors[0]["loc"] == location
    assert errors[0]["type"] == kind


def test_body_without_content_type_is_read_as_json(client: TestClient) -> None:
    response = client.post(URL, content=json.dumps({"text": ["fine"]}).encode())
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


def test_too_long_text_names_its_index(client: TestClient) -> None:
    response = client.post(URL, json={"text": ["ok", "x" * 10_001]})
    assert response.status_code == 413
    assert response.json()["error_type"] == "item_too_large"
    assert "text[1]" in response.json()["detail"]


def test_texts_over_the_token_limit_are_truncated_and_reported(client: TestClient) -> None:
    long_text = "word " * 500  # far beyond the tiny model's 64 positions
    response = client.post(URL, json={"text": ["short", long_text, "also short"]})
    assert response.status_code == 200
    assert response.json()["truncated"] == [1]


def test_body_over_the_byte_limit_is_refused(tiny_model_dir: Path) -> None:
    app = build_app(settings_for(tiny_model_dir, max_body_bytes=2048))
    with TestClient(app) as small:
        response = small.post(URL, json={"text": ["x" * 4000]})
    assert response.status_code == 413
    assert response.json()["error_type"] == "body_too_large"


def test_partly_cached_batch_runs_the_model_on_new_items_only(client: TestClient) -> None:
    assert client.post(URL, json={"text": ["alpha", "beta"]}).status_code == 200
    before = metric(client, "mtc_items_inferred_total", task="sentiment")
    response = client.post(URL, json={"text": ["alpha", "beta", "gamma", "delta", "gamma"]})
    assert response.status_code == 200
    assert metric(client, "mtc_items_inferred_total", task="sentiment") == before + 2
    assert metric(client, "mtc_cache_lookups_total", task="sentiment", result="hit") >= 2


def test_models_route_and_metrics(client: TestClient) -> None:
    models = client.get("/v1/models").json()["models"]
    assert models[0]["task"] == "sentiment"
    assert models[0]["ready"] is True
    assert models[0]["labels"] == ["NEGATIVE", "POSITIVE"]
    assert models[0]["limits"]["max_items_per_request"] == 1024
    # MTC_TORCH_DTYPE=auto: bfloat16 where the CPU computes in it natively.
    assert models[0]["runtime"] == ("openvino-bf16" if has_native_bfloat16() else "openvino")
    client.get("/health/live")
    client.get("/health/ready")
    client.post(URL, json={"text": ["counted"]})
    assert metric(client, "mtc_requests_total", task="sentiment", status_class="2xx") == 1
    assert metric(client, "mtc_model_ready", task="sentiment") == 1
    info = [line for line in client.get("/metrics").text.splitlines() if "mtc_model_info{" in line]
    assert len(info) == 1
    assert 'version="sha256-' in info[0]


class GatedClassifier(SequenceClassifier):
    """Loads only when its gate opens; predicts slowly when asked to."""

    def __init__(self, gate: threading.Event, delay: float = 0.0) -> None:
        super().__init__()
        self.gate = gate
        self.delay = delay

    def _load(self, model_dir: Path) -> Any:
        self.gate.wait(30)
        return super()._load(model_dir)

    def predict(self, batch: Sequence[TextInput]) -> list[TextPrediction]:
        time.sleep(self.delay)
        return super().predict(batch)


def test_ready_is_503_until_the_model_is_loaded(tiny_model_dir: Path) -> None:
    gate = threading.Event()
    app = build_app(settings_for(tiny_model_dir), GatedClassifier(gate))
    with TestClient(app) as loading:
        before = loading.get("/health/ready")
        assert before.status_code == 503
        assert before.json()["error_type"] == "model_not_ready"
        assert loading.get("/health/live").status_code == 200
        refused = loading.post(URL, json={"text": ["early"]})
        assert refused.status_code == 503
        assert loading.get("/v1/models").json()["models"][0]["status"] == "loading"
        gate.set()
        wait_ready(loading)
        assert loading.get("/health/ready").json() == {"status": "ready"}


def test_a_model_that_fails_to_load_stays_not_ready_with_the_reason(tmp_path: Path) -> None:
    with TestClient(build_app(settings_for(tmp_path / "nowhere"))) as broken:
        deadline = time.monotonic() + 10
        while broken.get("/v1/models").json()["models"][0]["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        response = broken.get("/health/ready")
        assert response.status_code == 503
        assert "no model directory" in response.json()["detail"]


def test_queue_bound_answers_429(tiny_model_dir: Path) -> None:
    gate = threading.Event()
    gate.set()
    slow = GatedClassifier(gate, delay=1.0)
    # One worker, so exactly one item is running and the other three wait in the queue.
    settings = settings_for(
        tiny_model_dir,
        max_queued_items=4,
        max_items_per_request=4,
        max_batch_size=1,
        inference_workers=1,
    )
    with TestClient(build_app(settings, slow)) as client:
        wait_ready(client)
        results: list[int] = []

        def fill() -> None:
            results.append(client.post(URL, json={"text": ["a", "b", "c", "d"]}).status_code)

        first = threading.Thread(target=fill)
        first.start()
        deadline = time.monotonic() + 10
        while metric(client, "mtc_queue_depth", task="sentiment") < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = client.post(URL, json={"text": ["e", "f"]})
        first.join()
    assert refused.status_code == 429
    assert refused.json()["error_type"] == "overloaded"
    assert refused.headers["retry-after"] == "1"
    assert results == [200]


def test_lone_surrogate_is_a_clear_400(client: TestClient) -> None:
    body = b'{"text": ["fine", "broken \\ud800 escape"]}'
    response = client.post(URL, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error_type"] == "invalid_input"
    assert "text[1]" in response.json()["detail"]
    assert client.post(URL, json={"text": ["still serving"]}).status_code == 200


def test_malformed_json_is_a_validation_error(client: TestClient) -> None:
    response = client.post(URL, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


class CrashingClassifier(SequenceClassifier):
    """A model whose forward pass fails (a bug or a broken runtime)."""

    def predict(self, batch: Sequence[TextInput]) -> list[TextPrediction]:
        raise RuntimeError("simulated inference failure")


def test_an_inference_failure_is_a_500_in_the_error_shape(tiny_model_dir: Path) -> None:
    app = build_app(settings_for(tiny_model_dir), CrashingClassifier())
    with TestClient(app, raise_server_exceptions=False) as crashing:
        wait_ready(crashing)
        response = crashing.post(URL, json={"text": ["boom"]})
        assert response.status_code == 500
        assert response.json() == {
            "detail": "internal error; see the service log",
            "error_type": "internal_error",
        }
        assert crashing.get("/health/live").status_code == 200
        assert metric(crashing, "mtc_requests_total", task="sentiment", status_class="5xx") == 1


def test_truncation_is_reported_for_answers_from_the_cache(client: TestClient) -> None:
    long_text = "word " * 500
    first = client.post(URL, json={"text": [long_text, "short"]})
    again = client.post(URL, json={"text": ["short", long_text]})

    assert first.json()["truncated"] == [0]
    assert again.json()["truncated"] == [1]
    assert metric(client, "mtc_cache_lookups_total", task="sentiment", result="hit") == 2
    assert again.json()["predictions"] == first.json()["predictions"][::-1]


def test_cache_entries_of_an_earlier_format_are_computed_again(tiny_model_dir: Path) -> None:
    """Entries written before predictions carried their token count hold the bare score
    list: they are misses, answered by the model as if the cache were empty."""
    model = SequenceClassifier()
    with TestClient(build_app(settings_for(tiny_model_dir), model=model)) as test_client:
        wait_ready(test_client)
        long_text = "word " * 500
        fresh = test_client.post(URL, json={"text": ["short", long_text]}).json()
        cache = test_client.app.state.dataplane.cache  # type: ignore[attr-defined]
        for key, (expires_at, value) in list(cache._entries.items()):
            scores = model.decode_prediction(value).scores
            legacy = json.dumps([[s.label, s.score] for s in scores]).encode()
            cache._entries[key] = (expires_at, legacy)
        cached = test_client.post(URL, json={"text": ["short", long_text]}).json()
        assert metric(test_client, "mtc_cache_lookups_total", task="sentiment", result="hit") == 0
        assert metric(test_client, "mtc_items_inferred_total", task="sentiment") == 4

    assert cached == fresh
    assert cached["truncated"] == [1]


def test_token_counts_match_the_tokenizer_call(tiny_model_dir: Path) -> None:
    model = SequenceClassifier()
    app = build_app(settings_for(tiny_model_dir), model=model)
    with TestClient(app) as test_client:
        wait_ready(test_client)
    texts = ["", "good", "word " * 300, "émoji 😀 ﬁ ㍿ tabs\tand\nnewlines", "Don't   stop!"]
    wrapped = model._tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)

    assert model.token_counts(texts) == [len(ids) for ids in wrapped["input_ids"]]
    assert model.costs(texts) == [min(len(ids), model.max_tokens) for ids in wrapped["input_ids"]]


class TokenizationLog:
    """Wraps a loaded model's tokenizers and counts how often each text is tokenized."""

    def __init__(self, model: SequenceClassifier) -> None:
        self.counts: dict[str, int] = {}
        backend = model._counting_tokenizer
        thread_tokenizer = model._thread_tokenizer
        log = self

        class CountingBackend:
            def encode_batch(self, texts: list[str], **options: Any) -> Any:
                log.saw(texts)
                return backend.encode_batch(texts, **options)

        def counting_thread_tokenizer() -> Any:
            tokenizer = thread_tokenizer()

            def call(texts: list[str], **options: Any) -> Any:
                log.saw(texts)
                return tokenizer(texts, **options)

            return call

        model._counting_tokenizer = CountingBackend()
        model._thread_tokenizer = counting_thread_tokenizer  # type: ignore[method-assign]

    def saw(self, texts: Sequence[str]) -> None:
        for text in texts:
            self.counts[text] = self.counts.get(text, 0) + 1


def test_each_uncached_text_is_tokenized_once_and_a_cached_one_never(
    tiny_model_dir: Path,
) -> None:
    """Counting a text's batching cost is its only tokenization: the encoding travels
    through the queue to the model. Only a text over the model's limit is tokenized again,
    with truncation."""
    model = SequenceClassifier()
    with TestClient(build_app(settings_for(tiny_model_dir), model=model)) as client:
        wait_ready(client)
        log = TokenizationLog(model)
        long_text = "word " * (model.max_tokens + 10)
        texts = ["alpha beta", "gamma", "alpha beta", "delta epsilon zeta", long_text]

        first = client.post(URL, json={"text": texts})
        assert first.status_code == 200
        assert first.json()["truncated"] == [4]
        assert log.counts == {
            "alpha beta": 1,
            "gamma": 1,
            "delta epsilon zeta": 1,
            long_text: 2,
        }

        log.counts.clear()
        again = client.post(URL, json={"text": texts})
        assert again.status_code == 200
        assert again.json()["truncated"] == [4]
        assert again.json()["predictions"] == first.json()["predictions"]
        assert log.counts == {}
