"""Batch jobs end to end, as real processes on 127.0.0.1: redis-server, the moto S3
server, the text service with the sentiment starter model, the gateway with API keys, and
the worker (`python -m services.jobs.worker`), stopped and SIGKILLed by PID.

Waits poll the gateway; their timeouts only keep a broken stack from hanging the suite.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from gateway.api_keys import hash_api_key
from tests.support.gateway_processes import free_ports
from tests.support.jobs import (
    AWS_TEST_ENV,
    FINAL_STATES,
    jobs_env,
    object_exists,
    read_object,
    s3_client,
    start_jobs_worker,
    start_moto,
    wait_for_job,
)
from tests.support.processes import start, start_redis, stop, wait_for_http

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SENTIMENT_MODEL = REPO / ".mtc" / "models" / "sentiment"
BUCKET = "batch"
ROWS = 5000
LABELS = {"NEGATIVE", "POSITIVE"}
ALICE_KEY = "alice-test-key-0123456789"
BOB_KEY = "bob-test-key-0123456789"
# Short, so a job whose worker was killed is delivered again within seconds.
VISIBILITY_TIMEOUT_SECONDS = 5
LEASE_SECONDS = 3
JOB_TIMEOUT = 600.0

PHRASES = (
    "a moving, beautifully acted triumph",
    "dull, lifeless and far too long",
    "the best film I have seen this year",
    "a tedious mess with no redeeming qualities",
    "charming and funny from start to finish",
)


@dataclass
class JobStack:
    """The processes, the clients of two API keys and the S3 emulator."""

    logs: Path
    worker_env: dict[str, str]
    s3_endpoint: str
    gateway_url: str
    s3: S3Client
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    workers_started: int = 0

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.gateway_url,
            headers={"authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(30.0),
        )

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.workers_started += 1
        log = self.logs / f"worker-{self.workers_started}.log"
        worker = start_jobs_worker(self.worker_env, log, s3_endpoint=self.s3_endpoint)
        self.processes["worker"] = worker
        return worker

    def worker_metric(self, name: str) -> float | None:
        port = self.worker_env["MTC_JOBS_METRICS_PORT"]
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return None

    def upload_csv(self, key: str, rows: list[tuple[str, str]]) -> str:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(["id", "text", "source"])
        writer.writerows((row_id, text, "e2e") for row_id, text in rows)
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue().encode())
        return f"s3://{BUCKET}/{key}"


def sample_rows(count: int, batch: str) -> list[tuple[str, str]]:
    """Rows whose texts differ from every other batch's, so no test is served from the
    text service's cache of an earlier one."""
    return [
        (f"r{n:05d}", f"{PHRASES[n % len(PHRASES)]} ({batch} review {n})") for n in range(count)
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobStack]:
    logs = tmp_path_factory.mktemp("jobs-e2e")
    redis_port, moto_port, service_port, gateway_port, metrics_port = free_ports(5)
    keys_file = logs / "api-keys"
    keys_file.write_text(
        f"alice {hash_api_key(ALICE_KEY)} rate=1000 burst=1000\n"
        f"bob {hash_api_key(BOB_KEY)} rate=1000 burst=1000\n"
    )
    s3_endpoint = f"http://127.0.0.1:{moto_port}"
    service_url = f"http://127.0.0.1:{service_port}"
    settings = jobs_env(
        broker_url=f"redis://127.0.0.1:{redis_port}/0",
        upstreams={"sentiment": service_url},
        input_allowlist=[f"{BUCKET}/in/"],
        output_allowlist=[f"{BUCKET}/out/"],
        visibility_timeout_seconds=VISIBILITY_TIMEOUT_SECONDS,
        lease_seconds=LEASE_SECONDS,
        metrics_port=metrics_port,
        metrics_host="127.0.0.1",
        retry_backoff_seconds=0.2,
    )
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        processes["redis"] = start_redis(redis_port)
        processes["moto"] = start_moto(moto_port, logs / "moto.log")
        processes["sentiment"] = start(
            [sys.executable, "-m", "services.text"],
            env={
                "MTC_TASK": "sentiment",
                "MTC_MODEL_URI": str(SENTIMENT_MODEL),
                "MTC_HOST": "127.0.0.1",
                "MTC_PORT": str(service_port),
            },
            log=logs / "sentiment.log",
        )
        wait_for_http(f"{service_url}/health/ready", processes["sentiment"], timeout=180)
        # The gateway reads the same MTC_JOBS_* settings as the worker.
        processes["gateway"] = start(
            [sys.executable, "-m", "gateway"],
            env={
                "MTC_GATEWAY_HOST": "127.0.0.1",
                "MTC_GATEWAY_PORT": str(gateway_port),
                "MTC_GATEWAY_UPSTREAMS": json.dumps({"sentiment": service_url}),
                "MTC_GATEWAY_API_KEYS_FILE": str(keys_file),
                **settings,
                **AWS_TEST_ENV,
                "MTC_S3_ENDPOINT_URL": s3_endpoint,
            },
            log=logs / "gateway.log",
        )
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        wait_for_http(f"{gateway_url}/health/ready", processes["gateway"], timeout=60)
        s3 = s3_client(s3_endpoint)
        s3.create_bucket(Bucket=BUCKET)
        stack = JobStack(logs, settings, s3_endpoint, gateway_url, s3, processes)
        stack.start_worker()
        yield stack
    finally:
        # Newest first: the worker and the gateway go before the Redis they use.
        for process in reversed(list(processes.values())):
            stop(process)


def output_rows(stack: JobStack, key: str) -> list[dict[str, Any]]:
    body = read_object(stack.s3, BUCKET, key)
    return [json.loads(line) for line in body.decode().splitlines()]


def submit(client: httpx.Client, **request: object) -> str:
    response = client.post("/v1/jobs", json=request)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    return job_id


def test_a_5000_row_csv_job_writes_every_row_in_order(stack: JobStack) -> None:
    rows = sample_rows(ROWS, "first")
    source = stack.upload_csv("in/alice/reviews.csv", rows)
    with stack.client(ALICE_KEY) as alice:
        job_id = submit(
            alice, task="sentiment", input_uri=source, output_uri=f"s3://{BUCKET}/out/alice/a.jsonl"
        )
        job = wait_for_job(alice, job_id, timeout=JOB_TIMEOUT)

    assert job["state"] == "succeeded", job
    assert job["progress"] == {"done": ROWS, "total": ROWS}
    assert job["output_uri"] == f"s3://{BUCKET}/out/alice/a.jsonl"
    assert job["results"] is None
    written = output_rows(stack, "out/alice/a.jsonl")
    assert [row["id"] for row in written] == [row_id for row_id, _ in rows]
    assert [row["index"] for row in written] == list(range(ROWS))
    assert {row["label"] for row in written} == LABELS
    assert all(row["label"] == row["scores"][0]["label"] for row in written)
    # The starter model tells the two kinds of phrases apart.
    assert written[0]["label"] == "POSITIVE"
    assert written[1]["label"] == "NEGATIVE"


def test_a_job_survives_its_worker_being_killed_half_way(stack: JobStack) -> None:
    rows = sample_rows(ROWS, "killed")
    source = stack.upload_csv("in/alice/killed.csv", rows)
    with stack.client(ALICE_KEY) as alice:
        job_id = submit(
            alice, task="sentiment", input_uri=source, output_uri=f"s3://{BUCKET}/out/alice/k.jsonl"
        )
        half = wait_for_job(
            alice,
            job_id,
            until=lambda job: job["progress"]["done"] >= ROWS // 2 or job["state"] in FINAL_STATES,
            timeout=JOB_TIMEOUT,
        )
        stop(stack.processes["worker"], kill=True)
        at_kill = wait_for_job(alice, job_id, until=lambda job: True)
        stack.start_worker()
        job = wait_for_job(alice, job_id, timeout=JOB_TIMEOUT)

    assert half["state"] == "running", half
    assert at_kill["state"] == "running"
    assert 0 < at_kill["progress"]["done"] < ROWS
    assert job["state"] == "succeeded", job
    assert job["progress"] == {"done": ROWS, "total": ROWS}
    written = output_rows(stack, "out/alice/k.jsonl")
    assert len(written) == ROWS
    assert [row["id"] for row in written] == [row_id for row_id, _ in rows]
    assert {row["label"] for row in written} == LABELS


def test_a_running_job_cancelled_stops_and_writes_nothing(stack: JobStack) -> None:
    source = stack.upload_csv("in/alice/cancel.csv", sample_rows(ROWS, "cancelled"))
    with stack.client(ALICE_KEY) as alice:
        job_id = submit(
            alice, task="sentiment", input_uri=source, output_uri=f"s3://{BUCKET}/out/alice/c.jsonl"
        )
        wait_for_job(alice, job_id, until=lambda job: job["progress"]["done"] > 0)
        cancelled = alice.delete(f"/v1/jobs/{job_id}")
        # The worker stops after the chunk it is on; then it runs no job at all.
        wait_until(lambda: stack.worker_metric("mtc_jobs_running") == 0)
        after = alice.get(f"/v1/jobs/{job_id}").json()
        again = alice.delete(f"/v1/jobs/{job_id}")
        gateway_metrics = alice.get("/metrics").text

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert after["state"] == "cancelled"
    assert after["progress"]["done"] < ROWS
    assert not object_exists(stack.s3, BUCKET, "out/alice/c.jsonl")
    assert again.status_code == 409
    assert again.json()["error_type"] == "job_finished"
    # The gateway counts the cancellation where it happens.
    assert 'mtc_jobs_total{state="cancelled"} 1.0' in gateway_metrics


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"id,review\n1,great\n", "CSV has no 'text' column (columns: id, review)"),
        (b"id,text\n1,fine\n2,caf\xe9 au lait\n", "input line 3: not valid UTF-8"),
    ],
    ids=["wrong-columns", "invalid-utf8"],
)
def test_a_bad_input_file_fails_the_job_with_its_reason(
    stack: JobStack, body: bytes, reason: str
) -> None:
    stack.s3.put_object(Bucket=BUCKET, Key="in/alice/bad.csv", Body=body)
    with stack.client(ALICE_KEY) as alice:
        job_id = submit(
            alice,
            task="sentiment",
            input_uri=f"s3://{BUCKET}/in/alice/bad.csv",
            output_uri=f"s3://{BUCKET}/out/alice/bad.csv",
        )
        job = wait_for_job(alice, job_id)

    assert job["state"] == "failed"
    assert job["error"].startswith(reason)
    assert job["finished_at"] is not None
    assert not object_exists(stack.s3, BUCKET, "out/alice/bad.csv")


def test_a_job_is_invisible_to_other_keys_and_unknown_ids_are_404(stack: JobStack) -> None:
    with stack.client(ALICE_KEY) as alice, stack.client(BOB_KEY) as bob:
        texts = [PHRASES[0], PHRASES[1]]
        job_id = submit(alice, task="sentiment", inputs=texts)
        by_bob = bob.get(f"/v1/jobs/{job_id}")
        cancel_by_bob = bob.delete(f"/v1/jobs/{job_id}")
        unknown = alice.get("/v1/jobs/0123456789abcdef0123456789abcdef")
        job = wait_for_job(alice, job_id)
        direct = alice.post("/v1/sentiment/predict", json={"text": texts}).json()

    assert by_bob.status_code == 404
    assert by_bob.json() == {"detail": f"no job with id {job_id}", "error_type": "job_not_found"}
    assert cancel_by_bob.status_code == 404
    assert unknown.status_code == 404
    assert unknown.json()["error_type"] == "job_not_found"
    assert job["state"] == "succeeded"
    # Inline results are what the service answers for the same texts, in the same order.
    assert [result["scores"] for result in job["results"]] == direct["predictions"]
    assert [result["label"] for result in job["results"]] == [
        scores[0]["label"] for scores in direct["predictions"]
    ]


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll `condition`; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")
