"""The async tone project's `POST /api/predict/` on the jobs machinery: the text goes
through the broker to a worker process and back, with RabbitMQ as the broker (as that
project ran it) and with the default, Redis. Real rabbitmq-server and redis-server on
127.0.0.1, a worker process, the gateway in a thread of the test, a scripted text service."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings
from tests.support.in_thread_servers import serving
from tests.support.job_text_service import JobTextService, expected_label
from tests.support.jobs import jobs_env, start_jobs_worker, start_rabbitmq, wait_for_job
from tests.support.processes import free_port, stop

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def amqp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    epmd, broker = start_rabbitmq(
        port, free_port(), free_port(), tmp_path_factory.mktemp("rabbitmq")
    )
    try:
        yield f"amqp://guest:guest@127.0.0.1:{port}//"
    finally:
        stop(broker)
        stop(epmd)


@dataclass
class ToneWorld:
    """A worker and a gateway (waiting `wait_seconds` for jobs) in front of the service."""

    service: JobTextService
    client: httpx.Client


@contextmanager
def tone_world(
    broker_url: str, redis_url: str, logs: Path, *, wait_seconds: float = 20.0
) -> Iterator[ToneWorld]:
    text_service = JobTextService()
    with serving(text_service.create_app()) as service_url:
        jobs = JobsSettings(
            broker_url=broker_url, redis_url=redis_url, upstreams={"sentiment": service_url}
        )
        env = jobs_env(
            broker_url=broker_url,
            redis_url=redis_url,
            upstreams=jobs.upstreams,
            metrics_port=free_port(),
            metrics_host="127.0.0.1",
            retry_backoff_seconds=0,
        )
        worker = start_jobs_worker(env, logs / "worker.log")
        gateway = create_app(
            GatewaySettings(
                upstreams={"sentiment": service_url}, compat_async_wait_seconds=wait_seconds
            ),
            jobs,
        )
        try:
            with serving(gateway) as url, httpx.Client(base_url=url, timeout=60) as client:
                yield ToneWorld(text_service, client)
        finally:
            stop(worker)


@pytest.fixture(params=["rabbitmq", "redis"])
def world(
    request: pytest.FixtureRequest,
    redis_server: tuple[subprocess.Popen[bytes], int],
    tmp_path: Path,
) -> Iterator[ToneWorld]:
    redis_url = f"redis://127.0.0.1:{redis_server[1]}/0"
    broker_url = request.getfixturevalue("amqp_url") if request.param == "rabbitmq" else redis_url
    with tone_world(broker_url, redis_url, tmp_path) as built:
        yield built


def test_the_prediction_comes_back_in_the_response(world: ToneWorld) -> None:
    # What the project's client sent: JSON to the path with its trailing slash.
    response = world.client.post("/api/predict/", json={"text": "a good day at the office"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"text", "label", "score", "job_id"}
    assert body["text"] == "a good day at the office"
    assert body["label"] == expected_label("a good day at the office") == "positive"
    assert body["score"] == pytest.approx(0.9)
    assert world.service.chunks == [["a good day at the office"]]
    # The job is the caller's, like any other.
    job = world.client.get(f"/v1/jobs/{body['job_id']}").json()
    assert job["state"] == "succeeded"


def test_json_without_a_content_type_is_read(world: ToneWorld) -> None:
    response = world.client.post("/api/predict/", content=b'{"text": "meh"}')

    assert "content-type" not in response.request.headers
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "negative"


def test_a_slow_prediction_answers_202_with_the_jobs_location(
    redis_server: tuple[subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    redis_url = f"redis://127.0.0.1:{redis_server[1]}/0"
    with tone_world(redis_url, redis_url, tmp_path, wait_seconds=0.3) as slow:
        slow.service.before_answer = lambda calls: time.sleep(1.5)

        response = slow.client.post("/api/predict/", json={"text": "good things take time"})
        assert response.status_code == 202, response.text
        location = response.headers["location"]
        job = wait_for_job(slow.client, response.json()["id"])

    assert location == f"/v1/jobs/{response.json()['id']}"
    assert response.json()["state"] in ("queued", "running")
    assert job["state"] == "succeeded"
    assert job["results"][0]["label"] == "positive"


def test_errors_have_the_error_shape(world: ToneWorld) -> None:
    too_long = world.client.post("/api/predict/", json={"text": "x" * 20_000})
    not_text = world.client.post("/api/predict/", json={"text": ["a list"]})

    assert too_long.status_code == 413
    assert too_long.json()["error_type"] == "item_too_large"
    assert not_text.status_code == 422
    assert not_text.json()["detail"][0]["loc"] == ["body", "text"]
