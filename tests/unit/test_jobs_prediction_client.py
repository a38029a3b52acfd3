"""The worker's calls to the model services: which failures are retried, how long it
waits, and what a job is told when it gives up. Answers come from httpx's mock
transport; sleeping is recorded, not done."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from services.jobs.errors import JobFailure
from services.jobs.prediction_client import PredictionClient

PREDICTION = [{"label": "POSITIVE", "score": 0.9}, {"label": "NEGATIVE", "score": 0.1}]


class Script:
    """Answers requests from a list of (status or exception) in turn; 200 after them."""

    def __init__(self, *steps: int | Exception, headers: dict[str, str] | None = None) -> None:
        self.steps = list(steps)
        self.headers = headers or {}
        self.urls: list[str] = []
        self.bodies: list[object] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        self.bodies.append(json.loads(request.content))
        step = self.steps.pop(0) if self.steps else 200
        if isinstance(step, Exception):
            raise step
        if step == 200:
            texts = json.loads(request.content)["text"]
            body = {
                "model": {"name": "m", "version": "1"},
                "predictions": [PREDICTION] * len(texts),
            }
            return httpx.Response(200, json=body)
        error = {"detail": f"status {step}", "error_type": "scripted"}
        return httpx.Response(step, json=error, headers=self.headers)


def client_for(
    script: Callable[[httpx.Request], httpx.Response],
    sleeps: list[float],
    retried: list[str],
    urls: list[str] | None = None,
) -> PredictionClient:
    return PredictionClient(
        {"sentiment": urls or ["http://text-a:8000"]},
        timeout_seconds=5,
        retry_attempts=3,
        retry_backoff_seconds=0.5,
        on_retry=retried.append,
        sleep=sleeps.append,
        client=httpx.Client(transport=httpx.MockTransport(script)),
    )


@pytest.mark.parametrize(
    "failure",
    [503, 504, 429, httpx.ConnectError("refused"), httpx.ReadTimeout("slow")],
    ids=["503", "504", "429", "connect-error", "timeout"],
)
def test_passing_failures_are_retried_with_jittered_backoff(failure: int | Exception) -> None:
    script = Script(failure, failure)
    sleeps: list[float] = []
    retried: list[str] = []

    predictions = client_for(script, sleeps, retried).classify("sentiment", ["a", "b"])

    assert predictions == [PREDICTION, PREDICTION]
    assert len(script.urls) == 3
    assert script.bodies[-1] == {"text": ["a", "b"]}
    assert retried == ["sentiment", "sentiment"]
    assert 0 <= sleeps[0] <= 0.5
    assert 0 <= sleeps[1] <= 1.0


@pytest.mark.parametrize("status", [400, 413, 422, 404, 500])
def test_refusals_fail_the_job_at_once(status: int) -> None:
    script = Script(status)
    sleeps: list[float] = []
    retried: list[str] = []

    with pytest.raises(JobFailure) as failure:
        client_for(script, sleeps, retried).classify("sentiment", ["a"])

    assert str(failure.value) == (
        f"the sentiment service refused a chunk ({status}: scripted: status {status})"
    )
    assert (len(script.urls), retried, sleeps) == (1, [], [])


def test_retry_after_from_the_service_sets_the_wait() -> None:
    script = Script(429, headers={"retry-after": "2"})
    sleeps: list[float] = []

    client_for(script, sleeps, []).classify("sentiment", ["a"])

    assert sleeps == [2.0]


def test_the_job_fails_with_the_last_problem_after_every_attempt() -> None:
    script = Script(503, 503, 503, 503, 503)

    with pytest.raises(JobFailure) as failure:
        client_for(script, [], []).classify("sentiment", ["a"])

    assert str(failure.value) == (
        "the sentiment service answered 503 (scripted: status 503), after 4 attempts"
    )
    assert len(script.urls) == 4


def test_retries_go_to_the_next_replica() -> None:
    script = Script(httpx.ConnectError("refused"))

    client_for(script, [], [], urls=["http://a:1", "http://b:1"]).classify("sentiment", ["a"])

    assert script.urls == ["http://a:1/v1/sentiment/predict", "http://b:1/v1/sentiment/predict"]


def test_an_answer_for_the_wrong_number_of_texts_fails_the_job() -> None:
    def short(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"predictions": [PREDICTION]})

    with pytest.raises(JobFailure, match="different number of texts"):
        client_for(short, [], []).classify("sentiment", ["a", "b"])
