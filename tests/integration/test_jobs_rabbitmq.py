"""Batch jobs with RabbitMQ as the broker (`MTC_JOBS_BROKER_URL=amqp://...`) and Redis as
the job store: a real rabbitmq-server and redis-server on 127.0.0.1, worker processes, the
gateway in a thread of the test, a scripted text service over HTTP.

RabbitMQ redelivers the unacknowledged message of a worker whose connection drops, so a
worker SIGKILLed mid-job loses nothing there either.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings
from services.jobs.store import JobState, JobStore
from tests.support.in_thread_servers import serving
from tests.support.job_text_service import JobTextService, expected_label
from tests.support.jobs import jobs_env, start_jobs_worker, start_rabbitmq, wait_for_job
from tests.support.processes import free_port, stop

pytestmark = pytest.mark.integration

CHUNK = 8


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
class RabbitWorld:
    """The scripted text service and the jobs settings: RabbitMQ broker, Redis store."""

    service: JobTextService
    service_url: str
    settings: JobsSettings


@pytest.fixture
def rabbit(
    amqp_url: str, redis_server: tuple[subprocess.Popen[bytes], int]
) -> Iterator[RabbitWorld]:
    _, redis_port = redis_server
    text_service = JobTextService()
    with serving(text_service.create_app()) as url:
        settings = JobsSettings(
            broker_url=amqp_url,
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            upstreams={"sentiment": url},
            chunk_size=CHUNK,
        )
        yield RabbitWorld(text_service, url, settings)


def worker_env(settings: JobsSettings) -> dict[str, str]:
    return jobs_env(
        broker_url=settings.broker_url,
        redis_url=settings.store_url,
        upstreams=settings.upstreams,
        chunk_size=CHUNK,
        metrics_port=free_port(),
        metrics_host="127.0.0.1",
        retry_backoff_seconds=0,
        lease_seconds=2,
    )


def test_a_job_runs_through_rabbitmq(rabbit: RabbitWorld, tmp_path: Path) -> None:
    text_service, service_url, settings = rabbit.service, rabbit.service_url, rabbit.settings
    env = worker_env(settings)
    texts = [f"{'good' if n % 2 else 'meh'} text {n}" for n in range(30)]
    worker = start_jobs_worker(env, tmp_path / "worker.log")
    gateway = create_app(GatewaySettings(upstreams={"sentiment": service_url}), settings)
    try:
        with serving(gateway) as url, httpx.Client(base_url=url, timeout=15) as client:
            accepted = client.post("/v1/jobs", json={"task": "sentiment", "inputs": texts})
            assert accepted.status_code == 202, accepted.text
            job = wait_for_job(client, accepted.json()["id"])
            metrics = httpx.get(f"http://127.0.0.1:{env['MTC_JOBS_METRICS_PORT']}/metrics")
    finally:
        stop(worker)

    assert job["state"] == "succeeded", job
    assert [result["label"] for result in job["results"]] == [expected_label(t) for t in texts]
    assert len(text_service.chunks) == 30 // CHUNK + 1
    # The queue length is read from RabbitMQ itself.
    assert "mtc_jobs_queue_length 0.0" in metrics.text


def test_a_worker_killed_mid_job_loses_nothing_with_rabbitmq(
    rabbit: RabbitWorld, tmp_path: Path
) -> None:
    text_service, service_url, settings = rabbit.service, rabbit.service_url, rabbit.settings
    text_service.before_answer = lambda calls: time.sleep(0.2)
    env = worker_env(settings)
    store = JobStore.from_url(settings.store_url, retention_seconds=600)
    texts = [f"good text {n}" for n in range(64)]
    first = start_jobs_worker(env, tmp_path / "first.log")
    gateway = create_app(GatewaySettings(upstreams={"sentiment": service_url}), settings)
    try:
        with serving(gateway) as url, httpx.Client(base_url=url, timeout=15) as client:
            job_id = client.post("/v1/jobs", json={"task": "sentiment", "inputs": texts}).json()[
                "id"
            ]
            deadline = time.monotonic() + 60
            while (record := store.get(job_id)) is None or record.done == 0:
                assert time.monotonic() < deadline, "the job never started"
                time.sleep(0.05)
            stop(first, kill=True)
            at_kill = store.get(job_id)
            env["MTC_JOBS_METRICS_PORT"] = str(free_port())
            second = start_jobs_worker(env, tmp_path / "second.log")
            try:
                job = wait_for_job(client, job_id, timeout=120)
            finally:
                stop(second)
    finally:
        stop(first, kill=True)
        store.close()

    assert at_kill is not None
    assert at_kill.state == JobState.RUNNING
    assert 0 < at_kill.done < len(texts)
    assert job["state"] == "succeeded", job
    assert job["progress"] == {"done": 64, "total": 64}
    assert [result["index"] for result in job["results"]] == list(range(64))
