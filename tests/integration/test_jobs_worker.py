"""Batch jobs against real servers: redis-server, the moto S3 server and a scripted text
service over HTTP. The gateway runs in a thread of the test; the worker runs as its own
process (`python -m services.jobs.worker`) where the Celery path matters, and as a
`JobRunner` in the test where a test needs to step through a job."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.jobs.contracts import JobRequest
from services.jobs.metrics import WorkerMetrics
from services.jobs.prediction_client import PredictionClient
from services.jobs.runner import Busy, Finished, JobRunner
from services.jobs.s3_objects import JobObjects
from services.jobs.settings import JobsSettings
from services.jobs.store import JobState, JobStore
from services.jobs.submission import create_job_desk
from services.wire.s3_locations import UNRESTRICTED
from tests.support.in_thread_servers import serving
from tests.support.job_text_service import JobTextService, expected_label
from tests.support.jobs import (
    jobs_env,
    object_exists,
    read_object,
    s3_client,
    start_jobs_worker,
    wait_for_job,
)
from tests.support.processes import free_port, stop

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration

BUCKET = "batch"
CHUNK = 8


@dataclass
class JobWorld:
    """Redis, S3 and a scripted text service, with settings pointing at them."""

    settings: JobsSettings
    service: JobTextService
    s3: S3Client
    s3_endpoint: str
    store: JobStore

    def runner(self) -> tuple[JobRunner, WorkerMetrics]:
        metrics = WorkerMetrics(self.settings.upstreams)
        client = PredictionClient(
            self.settings.upstreams,
            timeout_seconds=5,
            retry_attempts=self.settings.retry_attempts,
            retry_backoff_seconds=0,
            on_retry=metrics.retried,
        )
        objects = JobObjects(
            input_allowlist=self.settings.input_allowlist,
            output_allowlist=self.settings.output_allowlist,
            endpoint_url=self.s3_endpoint,
        )
        return JobRunner(self.settings, self.store, client, objects, metrics), metrics

    def submit(self, owner: str = "anonymous", **request: object) -> str:
        desk = create_job_desk(self.settings)
        try:
            # Keys off: every allow-listed location (tests/integration/test_tenant_isolation.py
            # has the per-key ones).
            return desk.submit(owner, JobRequest.model_validate(request), UNRESTRICTED).id
        finally:
            desk.close()

    def upload(self, key: str, body: bytes) -> str:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        return f"s3://{BUCKET}/{key}"


@pytest.fixture
def world(
    redis_server: tuple[subprocess.Popen[bytes], int], s3_endpoint: str, aws_credentials: None
) -> Iterator[JobWorld]:
    _, port = redis_server
    service = JobTextService()
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    with serving(service.create_app()) as service_url:
        settings = JobsSettings(
            broker_url=f"redis://127.0.0.1:{port}/0",
            upstreams={"sentiment": service_url, "pose": service_url},
            task_kinds={"pose": "image"},
            chunk_size=CHUNK,
            max_inline_results=50,
            retry_attempts=3,
            retry_backoff_seconds=0,
            input_allowlist=[f"{BUCKET}/in/"],
            output_allowlist=[f"{BUCKET}/out/"],
            s3_endpoint_url=s3_endpoint,
            lease_seconds=5,
        )
        store = JobStore.from_url(settings.store_url, retention_seconds=600)
        yield JobWorld(settings, service, s3, s3_endpoint, store)
        store.close()
    for listed in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=listed["Key"])
    s3.delete_bucket(Bucket=BUCKET)


def failure_of(runner: JobRunner, world: JobWorld, job_id: str) -> str:
    """Run the job; it must fail, and its reason is returned."""
    runner.run(job_id)
    job = world.store.get(job_id)
    assert job is not None
    assert job.state == JobState.FAILED
    assert job.error is not None
    return job.error


def csv_rows(count: int) -> bytes:
    lines = ["id,text,extra"]
    lines += [f"row-{n},{'good' if n % 3 == 0 else 'bad'} film number {n},x" for n in range(count)]
    return ("\n".join(lines) + "\n").encode()


def test_a_csv_job_writes_every_row_once_in_input_order(world: JobWorld) -> None:
    source = world.upload("in/films.csv", csv_rows(100))
    job_id = world.submit(
        task="sentiment", input_uri=source, output_uri=f"s3://{BUCKET}/out/a.jsonl"
    )
    runner, metrics = world.runner()

    assert runner.run(job_id) == Finished()

    job = world.store.get(job_id)
    assert job is not None
    assert (job.state, job.done, job.total, job.error) == (JobState.SUCCEEDED, 100, 100, None)
    rows = [json.loads(line) for line in read_object(world.s3, BUCKET, "out/a.jsonl").splitlines()]
    assert [row["index"] for row in rows] == list(range(100))
    assert [row["id"] for row in rows] == [f"row-{n}" for n in range(100)]
    assert [row["label"] for row in rows] == [
        expected_label(f"{'good' if n % 3 == 0 else 'bad'} film") for n in range(100)
    ]
    assert rows[0]["scores"] == [
        {"label": "positive", "score": 0.9},
        {"label": "negative", "score": 0.1},
    ]
    assert [len(chunk) for chunk in world.service.chunks] == [CHUNK] * 12 + [4]
    assert metrics.items.labels(task="sentiment")._value.get() == 100
    # Results written to S3 are not kept in Redis as well.
    assert world.store.results(job_id) == []


def test_a_json_lines_job_can_write_csv(world: JobWorld) -> None:
    lines = [json.dumps({"text": "good", "id": 7}), "", json.dumps({"text": "bad"})]
    source = world.upload("in/two.jsonl", "\n".join(lines).encode())
    job_id = world.submit(task="sentiment", input_uri=source, output_uri=f"s3://{BUCKET}/out/t.csv")
    runner, _ = world.runner()

    runner.run(job_id)

    output = read_object(world.s3, BUCKET, "out/t.csv").decode().splitlines()
    assert output[0] == "index,id,label,score,scores"
    assert output[1].startswith("0,7,positive,0.9,")
    assert output[2].startswith("1,,negative,0.9,")


def test_a_503_from_the_service_is_retried_and_counted(world: JobWorld) -> None:
    world.service.failures = [503, 503]
    job_id = world.submit(task="sentiment", inputs=["good one", "bad one"])
    runner, metrics = world.runner()

    runner.run(job_id)

    job = world.store.get(job_id)
    assert job is not None
    assert job.state == JobState.SUCCEEDED
    assert world.service.refused == 2
    assert metrics.retries.labels(task="sentiment")._value.get() == 2
    assert [result["label"] for result in world.store.results(job_id)] == ["positive", "negative"]


def test_a_422_from_the_service_fails_the_job_without_retrying(world: JobWorld) -> None:
    world.service.failures = [422, 503]
    job_id = world.submit(task="sentiment", inputs=["good one"])
    runner, metrics = world.runner()

    runner.run(job_id)

    job = world.store.get(job_id)
    assert job is not None
    assert job.state == JobState.FAILED
    assert job.error == (
        "rows 1-1 (chunk 0): the sentiment service refused a chunk (422: scripted: scripted 422)"
    )
    assert world.service.refused == 1
    assert metrics.retries.labels(task="sentiment")._value.get() == 0


def test_a_service_down_through_every_retry_fails_the_job(world: JobWorld) -> None:
    world.service.failures = [503] * 4
    job_id = world.submit(task="sentiment", inputs=["good one"])
    runner, _ = world.runner()

    error = failure_of(runner, world, job_id)
    assert "answered 503" in error
    assert "after 4 attempts" in error


def test_a_resumed_job_computes_only_the_missing_chunks(world: JobWorld) -> None:
    source = world.upload("in/resume.csv", csv_rows(40))
    job_id = world.submit(
        task="sentiment", input_uri=source, output_uri=f"s3://{BUCKET}/out/r.jsonl"
    )
    first, _ = world.runner()
    # A first delivery dies after two chunks: they are stored, the job stays running.
    first.predictions = DyingPredictions(first.predictions, chunks_before_death=2)
    with pytest.raises(WorkerDied):
        first.run(job_id)
    stored_before = world.store.saved_chunks(job_id)
    world.service.chunks.clear()

    second, _ = world.runner()
    second.run(job_id)

    rows = [json.loads(line) for line in read_object(world.s3, BUCKET, "out/r.jsonl").splitlines()]
    assert stored_before == {0, 1}
    assert [len(chunk) for chunk in world.service.chunks] == [CHUNK] * 3
    assert [row["id"] for row in rows] == [f"row-{n}" for n in range(40)]


class WorkerDied(Exception):
    """Stands for a worker killed while a chunk was in flight."""


class DyingPredictions(PredictionClient):
    """Classifies `chunks_before_death` chunks, then dies in the middle of the next one."""

    def __init__(self, inner: PredictionClient, chunks_before_death: int) -> None:
        self.inner = inner
        self.remaining = chunks_before_death

    def classify(self, task: str, texts: list[str]) -> list[list[dict[str, Any]]]:
        if self.remaining == 0:
            raise WorkerDied
        self.remaining -= 1
        return self.inner.classify(task, texts)


def test_a_job_held_by_a_live_lease_is_left_to_its_holder(world: JobWorld) -> None:
    job_id = world.submit(task="sentiment", inputs=["good"])
    assert world.store.acquire_lease(job_id, "another-worker", 5)
    runner, _ = world.runner()

    outcome = runner.run(job_id)

    assert isinstance(outcome, Busy)
    assert 1 <= outcome.retry_in_seconds <= 6
    assert world.store.state(job_id) == JobState.QUEUED
    assert world.service.chunks == []


def test_a_job_cancelled_while_running_stops_and_writes_nothing(world: JobWorld) -> None:
    source = world.upload("in/cancel.csv", csv_rows(40))
    job_id = world.submit(
        task="sentiment", input_uri=source, output_uri=f"s3://{BUCKET}/out/c.jsonl"
    )

    def cancel_at_second_chunk(calls: int) -> None:
        if calls == 1:
            world.store.cancel(job_id)

    world.service.before_answer = cancel_at_second_chunk
    runner, _ = world.runner()

    runner.run(job_id)

    job = world.store.get(job_id)
    assert job is not None
    assert job.state == JobState.CANCELLED
    assert len(world.service.chunks) == 2
    assert not object_exists(world.s3, BUCKET, "out/c.jsonl")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"title,body\na,b\n", "CSV has no 'text' column (columns: title, body)"),
        (b"text\nfine\nbad \xff byte\n", "input line 3: not valid UTF-8 (byte 14 of the file)"),
        (b"text\n" + b"x" * 10_001 + b"\n", "input row 1: the text has 10001 characters"),
    ],
)
def test_bad_input_files_fail_the_job_and_write_nothing(
    world: JobWorld, body: bytes, reason: str
) -> None:
    source = world.upload("in/bad.csv", body)
    job_id = world.submit(task="sentiment", input_uri=source, output_uri=f"s3://{BUCKET}/out/b.csv")
    runner, _ = world.runner()

    error = failure_of(runner, world, job_id)
    assert error.startswith(reason)
    assert world.service.chunks == []
    assert not object_exists(world.s3, BUCKET, "out/b.csv")


def test_a_missing_input_object_fails_the_job(world: JobWorld) -> None:
    job_id = world.submit(task="sentiment", input_uri=f"s3://{BUCKET}/in/none.csv")
    runner, _ = world.runner()

    runner.run(job_id)

    job = world.store.get(job_id)
    assert job is not None
    assert job.state == JobState.FAILED
    # The words a job on another key's input gets at submission (test_tenant_isolation.py).
    assert job.error == (
        f"s3://{BUCKET}/in/none.csv: no such object in the S3 locations this caller may read"
    )


def test_an_input_file_larger_than_inline_results_needs_an_output_uri(world: JobWorld) -> None:
    source = world.upload("in/large.csv", csv_rows(51))
    job_id = world.submit(task="sentiment", input_uri=source)
    runner, _ = world.runner()

    error = failure_of(runner, world, job_id)
    assert "give an output_uri" in error


@pytest.fixture
def worker_and_gateway(world: JobWorld, tmp_path: Path) -> Iterator[tuple[httpx.Client, int]]:
    metrics_port = free_port()
    env = jobs_env(
        broker_url=world.settings.broker_url,
        upstreams=world.settings.upstreams,
        task_kinds=world.settings.task_kinds,
        chunk_size=CHUNK,
        metrics_port=metrics_port,
        metrics_host="127.0.0.1",
        retry_backoff_seconds=0,
        output_allowlist=world.settings.output_allowlist,
    )
    worker = start_jobs_worker(env, tmp_path / "worker.log", s3_endpoint=world.s3_endpoint)
    gateway = create_app(
        GatewaySettings(upstreams={"sentiment": world.settings.upstreams["sentiment"]}),
        world.settings,
    )
    try:
        with serving(gateway) as url, httpx.Client(base_url=url, timeout=15) as client:
            yield client, metrics_port
    finally:
        stop(worker)


def test_jobs_through_the_gateway_and_a_worker_process(
    world: JobWorld, worker_and_gateway: tuple[httpx.Client, int]
) -> None:
    client, metrics_port = worker_and_gateway
    texts = [f"{'good' if n % 2 else 'meh'} text {n}" for n in range(30)]
    world.service.failures = [503]

    accepted = client.post("/v1/jobs", json={"task": "sentiment", "inputs": texts})
    job = wait_for_job(client, accepted.json()["id"])

    assert accepted.status_code == 202
    assert accepted.headers["location"] == f"/v1/jobs/{accepted.json()['id']}"
    assert accepted.json()["state"] == "queued"
    assert job["state"] == "succeeded", job
    assert job["progress"] == {"done": 30, "total": 30}
    assert [result["label"] for result in job["results"]] == [expected_label(t) for t in texts]
    assert [result["index"] for result in job["results"]] == list(range(30))
    assert job["started_at"] is not None
    assert job["finished_at"] is not None
    worker_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    assert 'mtc_jobs_total{state="running"} 1.0' in worker_metrics
    assert 'mtc_jobs_total{state="succeeded"} 1.0' in worker_metrics
    assert 'mtc_job_items_total{task="sentiment"} 30.0' in worker_metrics
    assert 'mtc_job_upstream_retries_total{task="sentiment"} 1.0' in worker_metrics
    assert "mtc_jobs_running 0.0" in worker_metrics
    assert "mtc_jobs_queue_length 0.0" in worker_metrics
    gateway_metrics = client.get("/metrics").text
    assert 'mtc_jobs_total{state="queued"} 1.0' in gateway_metrics


def test_a_finished_job_cannot_be_cancelled(
    world: JobWorld, worker_and_gateway: tuple[httpx.Client, int]
) -> None:
    client, _ = worker_and_gateway
    job_id = client.post("/v1/jobs", json={"task": "sentiment", "inputs": ["good"]}).json()["id"]
    wait_for_job(client, job_id)

    refused = client.delete(f"/v1/jobs/{job_id}")

    assert refused.status_code == 409
    assert refused.json() == {
        "detail": f"job {job_id} has already succeeded",
        "error_type": "job_finished",
    }


def test_a_queued_job_cancelled_before_a_worker_takes_it_never_runs(world: JobWorld) -> None:
    job_id = world.submit(task="sentiment", inputs=["good"])
    world.store.cancel(job_id)
    runner, _ = world.runner()

    assert runner.run(job_id) == Finished()
    assert world.service.chunks == []


def test_a_second_delivery_while_the_job_runs_leaves_it_to_the_first(world: JobWorld) -> None:
    source = world.upload("in/race.csv", csv_rows(64))
    job_id = world.submit(
        task="sentiment", input_uri=source, output_uri=f"s3://{BUCKET}/out/x.jsonl"
    )
    in_first_chunk = threading.Event()
    second_delivery_done = threading.Event()

    def hold_the_first_chunk(calls: int) -> None:
        if calls == 0:
            in_first_chunk.set()
            second_delivery_done.wait(timeout=30)

    world.service.before_answer = hold_the_first_chunk
    first, second = world.runner()[0], world.runner()[0]
    outcomes: list[object] = []
    running = threading.Thread(target=lambda: outcomes.append(first.run(job_id)))
    running.start()
    try:
        assert in_first_chunk.wait(timeout=30), "the first delivery never reached a chunk"
        duplicate = second.run(job_id)
    finally:
        second_delivery_done.set()
        running.join(timeout=60)

    job = world.store.get(job_id)
    assert isinstance(duplicate, Busy)
    assert outcomes == [Finished()]
    assert job is not None
    assert (job.state, job.done) == (JobState.SUCCEEDED, 64)
    assert len(world.service.chunks) == 8


def test_a_worker_stopped_with_sigterm_puts_its_job_back_at_once(
    world: JobWorld, tmp_path: Path
) -> None:
    # A redelivery by visibility timeout would take an hour: only a requeue explains a resume.
    world.service.before_answer = lambda calls: time.sleep(0.2)
    env = jobs_env(
        broker_url=world.settings.broker_url,
        upstreams=world.settings.upstreams,
        chunk_size=CHUNK,
        metrics_port=free_port(),
        metrics_host="127.0.0.1",
        visibility_timeout_seconds=3600,
        lease_seconds=2,
    )
    texts = [f"good text {n}" for n in range(48)]
    job_id = world.submit(task="sentiment", inputs=texts)
    first = start_jobs_worker(env, tmp_path / "first.log")
    try:
        until_running(world, job_id)
        stop(first)
        assert first.returncode == 0
        interrupted = world.store.get(job_id)
        env["MTC_JOBS_METRICS_PORT"] = str(free_port())
        second = start_jobs_worker(env, tmp_path / "second.log")
        try:
            deadline = time.monotonic() + 60
            while world.store.state(job_id) != JobState.SUCCEEDED:
                assert time.monotonic() < deadline, "the job was not resumed"
                time.sleep(0.1)
        finally:
            stop(second)
    finally:
        stop(first, kill=True)

    assert interrupted is not None
    assert interrupted.state == JobState.RUNNING
    assert 0 < interrupted.done < len(texts)
    assert [result["index"] for result in world.store.results(job_id)] == list(range(48))


def until_running(world: JobWorld, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        job = world.store.get(job_id)
        if job is not None and job.done > 0:
            return
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)


def test_a_job_whose_workers_keep_dying_fails_at_its_next_delivery(world: JobWorld) -> None:
    job_id = world.submit(task="sentiment", inputs=["good one", "bad one"])
    # What each worker killed while running the job (out of memory, SIGKILL, a crash in
    # native code) leaves behind: a start that never ended.
    for _ in range(world.settings.max_deliveries):
        assert world.store.start(job_id).changed
    runner, _ = world.runner()

    assert runner.run(job_id) == Finished()

    job = world.store.get(job_id)
    assert job is not None
    assert job.state == JobState.FAILED
    assert job.error is not None
    assert job.error.startswith(
        f"the job was started {world.settings.max_deliveries} times by a worker that died "
        "while running it"
    )
    assert world.service.chunks == [], "the model never saw it again"


def test_deliveries_a_worker_came_back_from_do_not_count(world: JobWorld) -> None:
    job_id = world.submit(task="sentiment", inputs=[f"good text {n}" for n in range(20)])
    runner, metrics = world.runner()
    stopping = threading.Event()
    stopping.set()
    leaving = JobRunner(
        world.settings, world.store, runner.predictions, runner.objects, metrics, stopping
    )
    # One worker died with it; many others were stopped cleanly (SIGTERM) and put it back.
    assert world.store.start(job_id).changed
    outcomes = [leaving.run(job_id) for _ in range(world.settings.max_deliveries + 2)]

    runner.run(job_id)

    job = world.store.get(job_id)
    assert job is not None
    assert {type(outcome).__name__ for outcome in outcomes} == {"Interrupted"}
    assert (job.state, job.done, job.unfinished_deliveries) == (JobState.SUCCEEDED, 20, 1)
