"""What one API key may hold in the job store, against a real redis-server and moto S3:
its queued and running jobs, its rows in flight, its inline bytes and kept results, and
inline inputs too large for the store going to S3. Jobs run through `JobRunner` in the
test against a scripted text service."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import redis

from services.core.errors import BatchTooLarge
from services.jobs.contracts import JobRequest
from services.jobs.errors import JobLimitReached, JobStoreFull
from services.jobs.metrics import WorkerMetrics
from services.jobs.prediction_client import PredictionClient
from services.jobs.runner import JobRunner
from services.jobs.s3_objects import JobObjects
from services.jobs.settings import JobsSettings
from services.jobs.store import JobState, OwnerLimits
from services.jobs.submission import JobDesk, create_job_desk
from services.wire.s3_locations import S3Scope
from tests.support.in_thread_servers import serving
from tests.support.job_text_service import JobTextService
from tests.support.jobs import object_exists, read_object, s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration

BUCKET = "limits"
EVERY_LOCATION = S3Scope(tenant=None)
"""The S3 locations of a caller with API keys off: the whole allow-list."""


@dataclass
class Limits:
    """Redis, S3, a text service, and a job desk whose settings a test may change."""

    base: JobsSettings
    s3: S3Client
    s3_endpoint: str
    service: JobTextService
    desks: list[JobDesk]

    def desk(self, **changes: object) -> JobDesk:
        settings = JobsSettings.model_validate({**self.base.model_dump(), **changes})
        desk = create_job_desk(settings)
        self.desks.append(desk)
        return desk

    def submit(self, desk: JobDesk, owner: str, **request: object) -> str:
        return desk.submit(owner, JobRequest.model_validate(request), EVERY_LOCATION).id

    def runner(self, desk: JobDesk) -> JobRunner:
        settings = desk.settings
        metrics = WorkerMetrics(settings.upstreams)
        client = PredictionClient(
            settings.upstreams, timeout_seconds=5, retry_attempts=0, retry_backoff_seconds=0
        )
        objects = JobObjects(
            input_allowlist=settings.input_allowlist,
            output_allowlist=settings.output_allowlist,
            endpoint_url=self.s3_endpoint,
        )
        return JobRunner(settings, desk.store, client, objects, metrics)


@pytest.fixture
def limits(
    redis_server: tuple[subprocess.Popen[bytes], int], s3_endpoint: str, aws_credentials: None
) -> Iterator[Limits]:
    _, port = redis_server
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    service = JobTextService()
    desks: list[JobDesk] = []
    with serving(service.create_app()) as service_url:
        base = JobsSettings(
            broker_url=f"redis://127.0.0.1:{port}/0",
            upstreams={"sentiment": service_url},
            chunk_size=4,
            input_allowlist=[f"{BUCKET}/in/"],
            output_allowlist=[f"{BUCKET}/out/"],
            s3_endpoint_url=s3_endpoint,
        )
        yield Limits(base, s3, s3_endpoint, service, desks)
    for desk in desks:
        desk.close()
    for listed in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=listed["Key"])
    s3.delete_bucket(Bucket=BUCKET)


def refusal(desk: JobDesk, owner: str, **request: object) -> str:
    """Submit; it must be refused with 429 `job_limit_reached`, whose detail is returned."""
    with pytest.raises(JobLimitReached) as refused:
        desk.submit(owner, JobRequest.model_validate(request), EVERY_LOCATION)
    assert (refused.value.status_code, refused.value.error_type) == (429, "job_limit_reached")
    return refused.value.detail


def test_a_key_may_hold_so_many_active_jobs_and_others_are_not_affected(limits: Limits) -> None:
    desk = limits.desk(max_active_jobs_per_owner=2)
    first = limits.submit(desk, "alice", task="sentiment", inputs=["good"])
    limits.submit(desk, "alice", task="sentiment", inputs=["good"])

    detail = refusal(desk, "alice", task="sentiment", inputs=["good"])
    assert "MTC_JOBS_MAX_ACTIVE_JOBS_PER_OWNER is 2" in detail
    limits.submit(desk, "bob", task="sentiment", inputs=["good"])

    desk.cancel("alice", first)
    limits.submit(desk, "alice", task="sentiment", inputs=["good"])


def test_a_finished_job_no_longer_counts_against_its_key(limits: Limits) -> None:
    desk = limits.desk(max_active_rows_per_owner=10)
    job_id = limits.submit(desk, "alice", task="sentiment", inputs=["good"] * 6)

    detail = refusal(desk, "alice", task="sentiment", inputs=["bad"] * 5)
    assert "this job's 5 items and the 6 of this key's queued and running jobs" in detail
    assert "MTC_JOBS_MAX_ACTIVE_ROWS_PER_OWNER" in detail

    limits.runner(desk).run(job_id)
    assert desk.store.state(job_id) == JobState.SUCCEEDED
    limits.submit(desk, "alice", task="sentiment", inputs=["bad"] * 5)


def test_inline_bytes_and_kept_results_count_until_the_results_expire(limits: Limits) -> None:
    texts = ["good " * 200] * 10  # about 10 KB of JSON
    stored = len(json.dumps(texts))
    desk = limits.desk(max_held_bytes_per_owner=stored + 100, result_retention_seconds=600)
    job_id = limits.submit(desk, "alice", task="sentiment", inputs=texts)

    detail = refusal(desk, "alice", task="sentiment", inputs=texts)
    assert "MTC_JOBS_MAX_HELD_BYTES_PER_OWNER" in detail
    assert f"the {stored} bytes this key holds" in detail

    # Finished, its results are kept for GET: they count now, instead of its inputs.
    limits.runner(desk).run(job_id)
    kept = desk.store.results_bytes(job_id)
    assert kept > 0
    admission = desk.store.admit(
        "alice",
        "probe",
        rows=1,
        stored_bytes=desk.settings.max_held_bytes_per_owner,
        limits=_limits_of(desk),
    )
    assert (admission.passed_limit, admission.held_bytes) == ("bytes", kept)

    # Once the results have expired, they are forgotten.
    later = desk.store.admit(
        "alice", "probe", rows=1, stored_bytes=0, limits=_limits_of(desk), now=time.time() + 601
    )
    assert (later.passed_limit, later.held_bytes) == (None, 0)


def test_jobs_that_ended_or_expired_without_being_released_are_reconciled(
    limits: Limits,
) -> None:
    desk = limits.desk(max_active_jobs_per_owner=2)
    crashed = limits.submit(desk, "alice", task="sentiment", inputs=["good"])
    expired = limits.submit(desk, "alice", task="sentiment", inputs=["good"])
    # A worker died between failing the job and releasing it; another job expired.
    desk.store.client.hset(desk.store.job_key(crashed), "state", "failed")
    desk.store.client.delete(desk.store.job_key(expired))
    assert sorted(desk.store.active_jobs("alice")) == sorted([crashed, expired])

    limits.submit(desk, "alice", task="sentiment", inputs=["good"])
    limits.submit(desk, "alice", task="sentiment", inputs=["good"])

    assert crashed not in desk.store.active_jobs("alice")
    assert len(desk.store.active_jobs("alice")) == 2
    refusal(desk, "alice", task="sentiment", inputs=["good"])


def test_a_file_over_the_row_budget_fails_when_the_worker_has_counted_it(limits: Limits) -> None:
    desk = limits.desk(max_active_rows_per_owner=10)
    limits.submit(desk, "alice", task="sentiment", inputs=["good"] * 4)
    lines = "text\n" + "good\n" * 7
    limits.s3.put_object(Bucket=BUCKET, Key="in/seven.csv", Body=lines.encode())
    job_id = limits.submit(
        desk,
        "alice",
        task="sentiment",
        input_uri=f"s3://{BUCKET}/in/seven.csv",
        output_uri=f"s3://{BUCKET}/out/seven.jsonl",
    )

    limits.runner(desk).run(job_id)

    job = desk.store.get(job_id)
    assert job is not None
    assert job.state == JobState.FAILED
    assert job.error is not None
    assert "the input has 7 rows and the key's other queued or running jobs 4" in job.error
    assert "MTC_JOBS_MAX_ACTIVE_ROWS_PER_OWNER" in job.error
    assert limits.service.chunks == []
    assert job_id not in desk.store.active_jobs("alice")


def test_inline_inputs_too_large_for_the_store_are_refused_without_a_staging_prefix(
    limits: Limits,
) -> None:
    desk = limits.desk(max_stored_inline_bytes=1000)

    with pytest.raises(BatchTooLarge) as refused:
        desk.submit(
            "alice", JobRequest(task="sentiment", inputs=["good " * 50] * 10), EVERY_LOCATION
        )

    assert refused.value.status_code == 413
    assert "MTC_JOBS_MAX_STORED_INLINE_BYTES" in refused.value.detail
    assert "upload them to S3" in refused.value.detail
    assert "input_uri" in refused.value.detail
    assert desk.store.active_jobs("alice") == []


def test_inline_inputs_too_large_for_the_store_go_to_the_staging_prefix(limits: Limits) -> None:
    desk = limits.desk(max_stored_inline_bytes=1000, staging_prefix=f"{BUCKET}/staging/")
    texts = [f"{'good' if n % 2 else 'bad'} film {n} " * 10 for n in range(10)]

    job_id = limits.submit(desk, "alice", task="sentiment", inputs=texts)

    job = desk.store.get(job_id)
    assert job is not None
    assert job.staged_input_uri == f"s3://{BUCKET}/staging/{job_id}.jsonl"
    assert not desk.store.client.exists(desk.store.inputs_key(job_id))
    staged = read_object(limits.s3, BUCKET, f"staging/{job_id}.jsonl").decode().splitlines()
    assert [json.loads(line)["text"] for line in staged] == texts

    limits.runner(desk).run(job_id)

    view = desk.get("alice", job_id)
    assert view.state == "succeeded"
    assert [result.label for result in view.results or []] == [
        "positive" if n % 2 else "negative" for n in range(10)
    ]
    assert not object_exists(limits.s3, BUCKET, f"staging/{job_id}.jsonl")


def test_a_finished_job_is_kept_for_the_result_retention_only(limits: Limits) -> None:
    desk = limits.desk(retention_seconds=7 * 24 * 3600, result_retention_seconds=120)
    job_id = limits.submit(desk, "alice", task="sentiment", inputs=["good"])
    assert desk.store.client.ttl(desk.store.job_key(job_id)) > 7 * 24 * 3600 - 10

    limits.runner(desk).run(job_id)

    for key in (desk.store.job_key(job_id), desk.store.chunks_key(job_id)):
        assert 0 < desk.store.client.ttl(key) <= 120


def _limits_of(desk: JobDesk) -> OwnerLimits:
    return OwnerLimits(
        max_jobs=desk.settings.max_active_jobs_per_owner,
        max_rows=desk.settings.max_active_rows_per_owner,
        max_bytes=desk.settings.max_held_bytes_per_owner,
    )


def test_a_store_near_its_memory_limit_takes_no_new_job_but_finishes_and_cancels(
    limits: Limits,
) -> None:
    """However many keys submit, the store keeps room for the jobs it holds."""
    desk = limits.desk(store_admission_ratio=0.5)
    client = redis.Redis.from_url(limits.base.broker_url, socket_timeout=30)
    running = limits.submit(desk, "alice", task="sentiment", inputs=["good"] * 3)
    queued = limits.submit(desk, "bob", task="sentiment", inputs=["good"])
    used, _ = desk.store.memory_use()
    client.config_set("maxmemory", str(used + 16 * 1024 * 1024))
    try:
        for _ in range(9):  # past half of maxmemory, 1 MiB per command (buffers count too)
            client.append("filler", b"x" * 1024 * 1024)
        with pytest.raises(JobStoreFull) as refused:
            desk.submit("carol", JobRequest(task="sentiment", inputs=["good"]), EVERY_LOCATION)
        assert refused.value.status_code == 503
        assert refused.value.headers["Retry-After"] == "30"
        assert "MTC_JOBS_STORE_ADMISSION_RATIO" in refused.value.detail

        limits.runner(desk).run(running)
        assert desk.store.state(running) == JobState.SUCCEEDED
        desk.cancel("bob", queued)
        assert desk.store.state(queued) == JobState.CANCELLED

        client.delete("filler")
        limits.submit(desk, "carol", task="sentiment", inputs=["good"])
    finally:
        client.config_set("maxmemory", "0")
        client.delete("filler")
