"""Tenant isolation through the real gateway process: two API keys (alice, bob), redis-server
(quotas, job queue and store), the moto S3 server, and the jobs worker as processes; the
text and audio services in threads of the test.

Every cross-tenant access is refused: predict-s3 of bob's recording, a job on bob's input,
a job writing into bob's folder; a forbidden object answers exactly like a missing one; a
job never replaces an existing object; and quotas charge by work, in Redis.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from gateway.api_keys import hash_api_key
from services.audio.api import build_app
from services.audio.settings import AudioSettings
from services.jobs.store import JobRecord, JobState, JobStore
from services.wire.s3_locations import S3Scope
from tests.support.audio_clips import build_tiny_call_model, encode, tone
from tests.support.gateway_processes import free_ports
from tests.support.in_thread_servers import serving
from tests.support.job_text_service import JobTextService
from tests.support.jobs import (
    AWS_TEST_ENV,
    jobs_env,
    read_object,
    s3_client,
    start_jobs_worker,
    wait_for_job,
)
from tests.support.processes import start, start_redis, stop, wait_for_http

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration

ALICE_KEY = "mtc_alice-tenant-key-0123456789"
BOB_KEY = "mtc_bob-tenant-key-9876543210"
CAROL_KEY = "mtc_carol-tenant-key-5555555555"
CAROL_BURST = 40
NOT_FOUND = "no such object in the S3 locations this caller may read"


@dataclass
class Stack:
    gateway_url: str
    s3: S3Client

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.gateway_url, headers={"x-api-key": key}, timeout=httpx.Timeout(60.0)
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("tenant-isolation")
    redis_port, gateway_port, metrics_port = free_ports(3)
    keys_file = logs / "api-keys"
    keys_file.write_text(
        f"alice {hash_api_key(ALICE_KEY)} rate=1000 burst=1000\n"
        f"bob {hash_api_key(BOB_KEY)} rate=1000 burst=1000\n"
        f"carol {hash_api_key(CAROL_KEY)} rate=0.01 burst={CAROL_BURST}\n"
    )
    s3 = s3_client(s3_endpoint)
    for bucket in ("calls", "batch"):
        s3.create_bucket(Bucket=bucket)
    for owner in ("alice", "bob"):
        s3.put_object(Bucket="calls", Key=f"incoming/{owner}/call.wav", Body=encode(tone(1.0)))
        s3.put_object(
            Bucket="batch", Key=f"in/{owner}/reviews.csv", Body=b"id,text\n1,good film\n2,bad\n"
        )
    s3.put_object(Bucket="batch", Key="out/bob/results.jsonl", Body=b"bob's results\n")
    s3.put_object(Bucket="batch", Key="out/alice/taken.jsonl", Body=b"written before\n")
    model_dir = build_tiny_call_model(logs / "tiny-call")
    audio_settings = AudioSettings(
        task="calls",
        model_uri=str(model_dir),
        asr_enabled=False,
        s3_input_allowlist=["calls/incoming"],
        s3_endpoint_url=s3_endpoint,
    )
    processes: dict[str, subprocess.Popen[bytes]] = {}
    with pytest.MonkeyPatch.context() as environment:
        # The audio service runs in this process and reads moto with these.
        for name, value in AWS_TEST_ENV.items():
            environment.setenv(name, value)
        with (
            serving(JobTextService().create_app()) as text_url,
            serving(build_app(audio_settings)) as audio_url,
        ):
            jobs_settings = jobs_env(
                broker_url=f"redis://127.0.0.1:{redis_port}/0",
                upstreams={"sentiment": text_url},
                input_allowlist=["batch/in/"],
                output_allowlist=["batch/out/"],
                metrics_port=metrics_port,
                metrics_host="127.0.0.1",
            )
            try:
                processes["redis"] = start_redis(redis_port)
                processes["gateway"] = start(
                    [sys.executable, "-m", "gateway"],
                    env={
                        "MTC_GATEWAY_HOST": "127.0.0.1",
                        "MTC_GATEWAY_PORT": str(gateway_port),
                        "MTC_GATEWAY_UPSTREAMS": json.dumps(
                            {"sentiment": text_url, "calls": audio_url}
                        ),
                        "MTC_GATEWAY_TASK_KINDS": json.dumps({"calls": "audio"}),
                        "MTC_GATEWAY_API_KEYS_FILE": str(keys_file),
                        "MTC_GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/1",
                        **jobs_settings,
                    },
                    log=logs / "gateway.log",
                )
                gateway_url = f"http://127.0.0.1:{gateway_port}"
                wait_for_http(f"{gateway_url}/health/ready", processes["gateway"], timeout=120)
                processes["worker"] = start_jobs_worker(
                    jobs_settings, logs / "worker.log", s3_endpoint=s3_endpoint
                )
                yield Stack(gateway_url, s3)
            finally:
                for process in reversed(list(processes.values())):
                    stop(process)
    for bucket in ("calls", "batch"):
        for listed in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=listed["Key"])
        s3.delete_bucket(Bucket=bucket)


def predict_s3(client: httpx.Client, uri: str, **headers: str) -> httpx.Response:
    return client.post(
        "/v1/calls/predict-s3", json={"s3_uri": uri, "transcript": "help"}, headers=headers
    )


def not_found(uri: str) -> dict[str, Any]:
    return {"detail": f"{uri}: {NOT_FOUND}", "error_type": "input_not_found"}


def test_predict_s3_reads_a_keys_own_recording_only(stack: Stack) -> None:
    with stack.client(ALICE_KEY) as alice, stack.client(BOB_KEY) as bob:
        own = predict_s3(alice, "s3://calls/incoming/alice/call.wav")
        bobs = predict_s3(alice, "s3://calls/incoming/bob/call.wav")
        # A client cannot widen its own scope: the gateway replaces the header.
        forged = predict_s3(
            alice, "s3://calls/incoming/bob/call.wav", **{"x-mtc-s3-scope": '{"tenant":null}'}
        )
        missing = predict_s3(alice, "s3://calls/incoming/alice/none.wav")
        bob_own = predict_s3(bob, "s3://calls/incoming/bob/call.wav")

    assert own.status_code == 200, own.text
    assert bob_own.status_code == 200, bob_own.text
    # Bob's recording exists, alice's `none.wav` does not: the answers are the same.
    assert (bobs.status_code, bobs.json()) == (404, not_found("s3://calls/incoming/bob/call.wav"))
    assert (forged.status_code, forged.json()) == (bobs.status_code, bobs.json())
    assert (missing.status_code, missing.json()) == (
        404,
        not_found("s3://calls/incoming/alice/none.wav"),
    )


def test_a_job_on_another_keys_input_is_refused_with_the_missing_inputs_words(
    stack: Stack,
) -> None:
    with stack.client(ALICE_KEY) as alice:
        refused = alice.post(
            "/v1/jobs", json={"task": "sentiment", "input_uri": "s3://batch/in/bob/reviews.csv"}
        )
        accepted = alice.post(
            "/v1/jobs", json={"task": "sentiment", "input_uri": "s3://batch/in/alice/none.csv"}
        )
        assert accepted.status_code == 202, accepted.text
        job = wait_for_job(alice, accepted.json()["id"])

    assert (refused.status_code, refused.json()) == (
        404,
        not_found("s3://batch/in/bob/reviews.csv"),
    )
    # A missing input of her own is only found missing by the worker, in the same words.
    assert job["state"] == "failed"
    assert job["error"] == not_found("s3://batch/in/alice/none.csv")["detail"]


def test_a_job_writing_over_another_keys_object_is_refused(stack: Stack) -> None:
    with stack.client(ALICE_KEY) as alice:
        response = alice.post(
            "/v1/jobs",
            json={
                "task": "sentiment",
                "input_uri": "s3://batch/in/alice/reviews.csv",
                "output_uri": "s3://batch/out/bob/results.jsonl",
            },
        )

    assert response.status_code == 403
    assert response.json()["error_type"] == "forbidden"
    assert read_object(stack.s3, "batch", "out/bob/results.jsonl") == b"bob's results\n"


def test_a_job_never_replaces_an_existing_object(stack: Stack) -> None:
    with stack.client(ALICE_KEY) as alice:
        taken = alice.post(
            "/v1/jobs",
            json={
                "task": "sentiment",
                "input_uri": "s3://batch/in/alice/reviews.csv",
                "output_uri": "s3://batch/out/alice/taken.jsonl",
            },
        )
        fresh = alice.post(
            "/v1/jobs",
            json={
                "task": "sentiment",
                "input_uri": "s3://batch/in/alice/reviews.csv",
                "output_uri": "s3://batch/out/alice/fresh.jsonl",
            },
        )
        taken_job = wait_for_job(alice, taken.json()["id"])
        fresh_job = wait_for_job(alice, fresh.json()["id"])

    assert taken_job["state"] == "failed"
    assert taken_job["error"] == (
        "the output object s3://batch/out/alice/taken.jsonl already exists; a job never "
        "replaces an object: give a new output_uri"
    )
    assert read_object(stack.s3, "batch", "out/alice/taken.jsonl") == b"written before\n"
    assert fresh_job["state"] == "succeeded", fresh_job
    head = stack.s3.head_object(Bucket="batch", Key="out/alice/fresh.jsonl")
    assert head["Metadata"] == {"mtc-job-id": fresh_job["id"]}


def test_quotas_in_redis_charge_a_1024_text_request_32_times_a_1_text_one(stack: Stack) -> None:
    texts = {"text": ["fine"] * 1024}
    with stack.client(CAROL_KEY) as carol:
        large = carol.post("/project/bulk-predict", json=texts)
        statuses = []
        for _ in range(CAROL_BURST):
            statuses.append(
                carol.post("/v1/sentiment/predict", json={"text": ["fine"]}).status_code
            )
            if statuses[-1] == 429:
                break
            time.sleep(0.01)

    assert large.status_code == 200, large.text
    # 40 tokens: 32 for the large request, then 8 one-text requests.
    assert statuses == [200] * (CAROL_BURST - 32) + [429]


def test_a_job_keeps_its_owners_locations_and_an_old_record_gets_the_owners_folder(
    redis_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    _, port = redis_server
    store = JobStore.from_url(f"redis://127.0.0.1:{port}/0", retention_seconds=600)
    team = S3Scope("team", ("batch/in/shared",))
    job = JobRecord(
        id="1" * 32,
        owner="team",
        task="sentiment",
        state=JobState.QUEUED,
        created_at=time.time(),
        chunk_size=8,
        s3_scope=team,
    )
    try:
        store.create(job, ["fine"])
        kept = store.get(job.id)
        # A record stored before the locations were kept with jobs.
        store.client.hdel(JobStore.job_key(job.id), "s3_scope")
        old = store.get(job.id)
    finally:
        store.close()

    assert kept is not None
    assert kept.s3_scope == team
    assert old is not None
    assert old.s3_scope == S3Scope("team")
