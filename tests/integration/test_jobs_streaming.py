"""Inputs read and outputs written as streams, against a real moto S3 server (and a real
redis-server for a whole job): an output larger than a part goes up as a multipart
upload that is visible whole or not at all, and an input replaced between the worker's two
readings fails the job."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from botocore.exceptions import ResponseStreamingError

from services.jobs.contracts import JobRequest
from services.jobs.errors import JobFailure
from services.jobs.metrics import WorkerMetrics
from services.jobs.prediction_client import PredictionClient
from services.jobs.runner import InputSurvey, JobRunner
from services.jobs.s3_objects import OUTPUT_PART_BYTES, JobObjects
from services.jobs.settings import JobsSettings
from services.jobs.store import JobRecord, JobState
from services.jobs.submission import create_job_desk
from services.wire.s3_locations import S3Scope
from tests.support.in_thread_servers import serving
from tests.support.job_text_service import JobTextService
from tests.support.jobs import object_exists, read_object, s3_client

pytestmark = pytest.mark.integration

BUCKET = "streams"
EVERY_LOCATION = S3Scope(tenant=None)
MIB = 1024 * 1024


@pytest.fixture
def objects(s3_endpoint: str, aws_credentials: None) -> Iterator[JobObjects]:
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    yield JobObjects(
        input_allowlist=[f"{BUCKET}/in/"],
        output_allowlist=[f"{BUCKET}/out/"],
        endpoint_url=s3_endpoint,
    )
    for upload in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
    for listed in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=listed["Key"])
    s3.delete_bucket(Bucket=BUCKET)


def pieces(count: int, size: int) -> Iterator[bytes]:
    for number in range(count):
        yield bytes([65 + number]) * size


def test_an_output_larger_than_a_part_is_uploaded_in_parts(objects: JobObjects) -> None:
    expected = b"".join(pieces(5, 3 * MIB))
    assert len(expected) > OUTPUT_PART_BYTES

    objects.write_output_parts(
        f"s3://{BUCKET}/out/large.jsonl",
        pieces(5, 3 * MIB),
        "application/x-ndjson",
        scope=EVERY_LOCATION,
        job_id="a" * 32,
    )

    assert read_object(objects.client, BUCKET, "out/large.jsonl") == expected
    head = objects.client.head_object(Bucket=BUCKET, Key="out/large.jsonl")
    # An ETag with a part count: it was a multipart upload.
    assert head["ETag"].strip('"').endswith("-2")
    assert head["Metadata"] == {"mtc-job-id": "a" * 32}


def test_an_output_that_fails_half_way_leaves_nothing_visible(objects: JobObjects) -> None:
    def failing() -> Iterator[bytes]:
        yield from pieces(4, 3 * MIB)  # one part sent
        raise RuntimeError("a chunk is missing")

    with pytest.raises(RuntimeError, match="a chunk is missing"):
        objects.write_output_parts(
            f"s3://{BUCKET}/out/half.jsonl",
            failing(),
            "application/x-ndjson",
            scope=EVERY_LOCATION,
            job_id="b" * 32,
        )

    assert not object_exists(objects.client, BUCKET, "out/half.jsonl")
    assert objects.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_an_input_replaced_between_the_two_readings_fails_the_job(
    objects: JobObjects,
    redis_server: tuple[subprocess.Popen[bytes], int],
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, port = redis_server
    service = JobTextService()
    objects.client.put_object(Bucket=BUCKET, Key="in/films.csv", Body=b"text\ngood\nbad\n")
    with serving(service.create_app()) as service_url:
        settings = JobsSettings(
            broker_url=f"redis://127.0.0.1:{port}/0",
            upstreams={"sentiment": service_url},
            input_allowlist=[f"{BUCKET}/in/"],
            output_allowlist=[f"{BUCKET}/out/"],
            s3_endpoint_url=s3_endpoint,
        )
        desk = create_job_desk(settings)
        job_id = desk.submit(
            "alice",
            JobRequest(
                task="sentiment",
                input_uri=f"s3://{BUCKET}/in/films.csv",
                output_uri=f"s3://{BUCKET}/out/films.jsonl",
            ),
            EVERY_LOCATION,
        ).id
        client = PredictionClient(
            settings.upstreams, timeout_seconds=5, retry_attempts=0, retry_backoff_seconds=0
        )
        runner = JobRunner(settings, desk.store, client, objects, WorkerMetrics(settings.upstreams))
        survey = runner._survey_input

        def survey_then_replace(job: JobRecord) -> InputSurvey:
            found = survey(job)
            objects.client.put_object(
                Bucket=BUCKET, Key="in/films.csv", Body=b"text\nother\nrows\n"
            )
            return found

        monkeypatch.setattr(runner, "_survey_input", survey_then_replace)

        runner.run(job_id)

        job = desk.store.get(job_id)
        desk.close()
    assert job is not None
    assert job.state == JobState.FAILED
    assert job.error == "the input object was replaced while the job ran; submit a new job"
    assert service.chunks == []
    assert not object_exists(objects.client, BUCKET, "out/films.jsonl")


class BrokenBody:
    """A response body whose connection was dropped."""

    def read(self, size: int) -> bytes:
        raise ResponseStreamingError(error="Connection broken: IncompleteRead")

    def close(self) -> None:
        """Nothing to close."""


def test_a_reading_whose_connection_broke_resumes_where_it_was(objects: JobObjects) -> None:
    data = bytes(range(256)) * 4096
    objects.client.put_object(Bucket=BUCKET, Key="in/bytes.csv", Body=data)
    stream = objects.open_input(
        f"s3://{BUCKET}/in/bytes.csv", max_bytes=len(data), scope=EVERY_LOCATION
    )
    start = stream.read(1000)
    stream.body = BrokenBody()  # S3 dropped the idle connection

    rest = b"".join(iter(lambda: stream.read(65536), b""))

    assert start + rest == data
    assert stream.resumed_reads == 1
    stream.close()


def test_a_reading_does_not_resume_on_a_replaced_object(objects: JobObjects) -> None:
    objects.client.put_object(Bucket=BUCKET, Key="in/bytes.csv", Body=b"text\nfirst\n")
    stream = objects.open_input(f"s3://{BUCKET}/in/bytes.csv", max_bytes=100, scope=EVERY_LOCATION)
    stream.read(5)
    objects.client.put_object(Bucket=BUCKET, Key="in/bytes.csv", Body=b"text\nsecond\n")
    stream.body = BrokenBody()

    with pytest.raises(JobFailure, match="replaced"):
        stream.read(100)
