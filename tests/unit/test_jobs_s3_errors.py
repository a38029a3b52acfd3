"""S3 errors no retry can fix fail a job at once with S3's reason; the ones that pass are
retried by the worker, a bounded number of times, and then fail it too.

S3 answers come from botocore's Stubber (no network); the worker's task runs eagerly
(no broker), with runners that raise what S3 or Redis would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import redis
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber

from services.jobs.errors import JobFailure
from services.jobs.queue import RUN_JOB_TASK, create_celery_app
from services.jobs.runner import Finished, RunOutcome
from services.jobs.s3_objects import JobObjects, is_permanent
from services.jobs.settings import JobsSettings
from services.jobs.worker import register_job_task
from services.wire.s3_locations import UNRESTRICTED, S3Scope

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

JOB_ID = "0" * 32


def stubbed_objects() -> tuple[JobObjects, Stubber]:
    client: S3Client = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    objects = JobObjects(
        input_allowlist=["batch/in/"], output_allowlist=["batch/out/"], client=client
    )
    return objects, Stubber(client)


PERMANENT = [
    ("NoSuchBucket", 404),
    ("NoSuchKey", 404),
    ("AccessDenied", 403),
    ("InvalidBucketName", 400),
    ("InvalidObjectState", 403),
    ("InvalidArgument", 400),
    ("EntityTooLarge", 400),
]
TRANSIENT = [
    ("InternalError", 500),
    ("ServiceUnavailable", 503),
    ("SlowDown", 503),
    ("Throttling", 400),
    ("RequestTimeout", 400),
    ("TooManyRequests", 429),
]


@pytest.mark.parametrize(("code", "status"), PERMANENT)
def test_a_permanent_error_writing_the_output_fails_the_job_with_its_reason(
    code: str, status: int
) -> None:
    objects, stub = stubbed_objects()
    stub.add_client_error(
        "put_object", service_error_code=code, service_message="as S3 says", http_status_code=status
    )

    with stub, pytest.raises(JobFailure) as failure:
        objects.write_output(
            "s3://batch/out/x.csv", b"index\r\n", "text/csv", scope=UNRESTRICTED, job_id=JOB_ID
        )

    assert str(failure.value) == f"S3 refused to write s3://batch/out/x.csv: {code} (as S3 says)"


@pytest.mark.parametrize(("code", "status"), PERMANENT)
def test_a_permanent_error_reading_the_input_fails_the_job(code: str, status: int) -> None:
    objects, stub = stubbed_objects()
    stub.add_client_error("head_object", service_error_code=code, http_status_code=status)

    with stub, pytest.raises(JobFailure, match=re.escape("s3://batch/in/x.csv")):
        objects.open_input("s3://batch/in/x.csv", max_bytes=1000, scope=UNRESTRICTED)


@pytest.mark.parametrize(("code", "status"), TRANSIENT)
def test_an_error_that_may_pass_is_left_to_the_worker(code: str, status: int) -> None:
    objects, stub = stubbed_objects()
    stub.add_client_error("put_object", service_error_code=code, http_status_code=status)

    with stub, pytest.raises(ClientError) as raised:
        objects.write_output(
            "s3://batch/out/x.csv", b"index\r\n", "text/csv", scope=UNRESTRICTED, job_id=JOB_ID
        )

    assert not is_permanent(raised.value)


def test_connection_errors_may_pass() -> None:
    assert not is_permanent(EndpointConnectionError(endpoint_url="http://s3"))


def _conditional_put(stub: Stubber) -> None:
    stub.add_response(
        "put_object",
        {},
        expected_params={
            "Bucket": "batch",
            "Key": "out/x.csv",
            "Body": b"index\r\n",
            "ContentType": "text/csv",
            "IfNoneMatch": "*",
            "Metadata": {"mtc-job-id": JOB_ID},
        },
    )


def test_an_output_is_written_only_if_no_object_has_its_name() -> None:
    objects, stub = stubbed_objects()
    _conditional_put(stub)

    with stub:
        objects.write_output(
            "s3://batch/out/x.csv", b"index\r\n", "text/csv", scope=UNRESTRICTED, job_id=JOB_ID
        )
        stub.assert_no_pending_responses()


def test_an_existing_output_of_another_job_fails_the_job_and_is_left_alone() -> None:
    objects, stub = stubbed_objects()
    stub.add_client_error(
        "put_object", service_error_code="PreconditionFailed", http_status_code=412
    )
    stub.add_response("head_object", {"Metadata": {"mtc-job-id": "f" * 32}})

    with stub, pytest.raises(JobFailure) as failure:
        objects.write_output(
            "s3://batch/out/x.csv", b"index\r\n", "text/csv", scope=UNRESTRICTED, job_id=JOB_ID
        )

    assert str(failure.value) == (
        "the output object s3://batch/out/x.csv already exists; a job never replaces an "
        "object: give a new output_uri"
    )


def test_an_output_this_job_already_wrote_counts_as_written() -> None:
    # The worker died after its put: the job, delivered again, finds its own output.
    objects, stub = stubbed_objects()
    stub.add_client_error(
        "put_object", service_error_code="PreconditionFailed", http_status_code=412
    )
    stub.add_response("head_object", {"Metadata": {"mtc-job-id": JOB_ID}})

    with stub:
        objects.write_output(
            "s3://batch/out/x.csv", b"index\r\n", "text/csv", scope=UNRESTRICTED, job_id=JOB_ID
        )
        stub.assert_no_pending_responses()


def test_the_worker_checks_the_owners_locations_again_before_any_s3_call() -> None:
    objects, stub = stubbed_objects()
    alice = S3Scope("alice")

    with stub:
        with pytest.raises(JobFailure) as reading:
            objects.open_input("s3://batch/in/bob/x.csv", max_bytes=1000, scope=alice)
        with pytest.raises(JobFailure) as writing:
            objects.write_output(
                "s3://batch/out/bob/x.csv", b"index\r\n", "text/csv", scope=alice, job_id=JOB_ID
            )

    # The reason a missing input gives, word for word.
    assert str(reading.value) == (
        "s3://batch/in/bob/x.csv: no such object in the S3 locations this caller may read"
    )
    assert str(writing.value).startswith("s3://batch/out/bob/x.csv is outside the S3 locations")


def test_a_missing_input_and_one_s3_hides_give_the_same_reason() -> None:
    reasons = []
    for code, status in (("NoSuchKey", 404), ("AccessDenied", 403)):
        objects, stub = stubbed_objects()
        stub.add_client_error("head_object", service_error_code=code, http_status_code=status)
        with stub, pytest.raises(JobFailure) as failure:
            objects.open_input("s3://batch/in/alice/x.csv", max_bytes=1000, scope=S3Scope("alice"))
        reasons.append(str(failure.value))

    assert (
        reasons
        == ["s3://batch/in/alice/x.csv: no such object in the S3 locations this caller may read"]
        * 2
    )


# --------------------------------------------------------------------------- the worker


@dataclass
class FailingRunner:
    """Raises `error` on each of its first `times` runs, then finishes; records failures."""

    error: Exception
    times: int
    runs: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def run(self, job_id: str) -> RunOutcome:
        self.runs += 1
        if self.runs <= self.times:
            raise self.error
        return Finished()

    def fail(self, job_id: str, reason: str) -> None:
        self.failed.append((job_id, reason))


def run_eagerly(runner: Any, max_transient_retries: int) -> None:
    settings = JobsSettings(broker_url="redis://127.0.0.1:1/0", upstreams={"s": "http://s"})
    app = create_celery_app(settings)
    register_job_task(app, runner, max_transient_retries=max_transient_retries)
    app.tasks[RUN_JOB_TASK].apply(args=[JOB_ID])


@pytest.mark.parametrize(
    "error",
    [
        ClientError({"Error": {"Code": "ServiceUnavailable"}}, "GetObject"),
        EndpointConnectionError(endpoint_url="http://minio:9000/batch"),
        redis.ConnectionError("Redis went away"),
    ],
)
def test_an_error_that_keeps_coming_back_fails_the_job_after_the_retries(
    error: Exception,
) -> None:
    # It would keep failing for 50 runs; the worker gives up after 1 + 3.
    runner = FailingRunner(error, times=50)

    run_eagerly(runner, max_transient_retries=3)

    assert runner.runs == 4
    assert runner.failed == [
        (
            JOB_ID,
            f"S3 or the job store stayed unavailable through 4 attempts "
            f"({type(error).__name__}); submit the job again later",
        )
    ]
    assert "minio" not in runner.failed[0][1], "the endpoint stays in the log"


def test_an_error_that_passes_within_the_retries_does_not_fail_the_job() -> None:
    runner = FailingRunner(EndpointConnectionError(endpoint_url="http://s3"), times=2)

    run_eagerly(runner, max_transient_retries=3)

    assert (runner.runs, runner.failed) == (3, [])
