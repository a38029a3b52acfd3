"""Reading job inputs from S3 and writing job outputs to it, inside the allow-lists and
the locations open to the job's owner (`S3Scope`, stored with the job at submission).

An output is written with one PutObject of the whole file, which S3 applies all or
nothing: a reader never sees half an output, and a job that fails writes nothing. The put
is conditional (`If-None-Match: *`): a job never replaces an object that exists, whoever
wrote it, and a job finding its output already written by itself (a redelivery after the
put) takes it as done.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.core.errors import AccessDenied, InputNotFound
from services.jobs.errors import JobFailure
from services.wire.s3_locations import (
    HIDDEN_OBJECT_CODES,
    LazyS3Client,
    S3Allowlist,
    S3Object,
    S3Scope,
    no_readable_object,
    parse_object_uri,
    s3_error_code,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

OUTPUT_PART_BYTES = 8 * 1024 * 1024
"""Size of each part of a streamed output upload (S3's least is 5 MiB): what a job holds of
its output at once."""
PRECONDITION_FAILED_CODES = ("412", "PreconditionFailed")
"""S3's answer to a conditional request whose condition failed: for a read, the input
object is no longer the version read before; for a write, the output object exists."""
REPLACED_INPUT = "the input object was replaced while the job ran; submit a new job"
MAX_RESUMED_READS = 3
"""Times one reading of an input resumes after its connection broke."""

JOB_ID_METADATA = "mtc-job-id"
"""User metadata naming the job that wrote an output (`x-amz-meta-mtc-job-id`)."""
# 4xx codes that say "slow down" or "try again", not "this request can never work".
RETRYABLE_CLIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "PriorRequestNotComplete",
        "RequestTimeTooSkewed",
        # Two conditional writes of one key at once: S3 asks the loser to try again.
        "ConditionalRequestConflict",
    }
)


def is_permanent(error: Exception) -> bool:
    """Whether an S3 error will happen again however often the request is repeated: a
    4xx answer (no such bucket or key, access denied, an invalid bucket name...) other than
    throttling and timeouts, or a request botocore refuses to send. 5xx answers, throttling
    and connection errors pass, and are retried."""
    from botocore.exceptions import ClientError, ParamValidationError

    if isinstance(error, ParamValidationError):
        return True
    if not isinstance(error, ClientError):
        return False
    code = s3_error_code(error)
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in RETRYABLE_CLIENT_CODES or status in (408, 429):
        return False
    if isinstance(status, int):
        return 400 <= status < 500
    # No status (an error parsed without one): trust the code's own 4xx spelling.
    return code.isdigit() and code.startswith("4")


def _refusal(error: Exception, action: str, uri: str) -> JobFailure:
    """The job's reason for a permanent S3 error: the code and message S3 gave."""
    from botocore.exceptions import ClientError

    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code", "an error")
        message = details.get("Message", "")
        return JobFailure(
            f"S3 refused to {action} {uri}: {code}" + (f" ({message})" if message else "")
        )
    return JobFailure(f"S3 cannot {action} {uri}: {type(error).__name__}")


@dataclass
class InputStream:
    """An input object being read: `read(n)` gives up to n more bytes (b"" at the end).

    A job reads between chunks it classifies, so the connection may sit idle long enough for
    S3 to drop it: a read that fails so is resumed from where it was (a ranged GET of the
    same version), up to `MAX_RESUMED_READS` times."""

    etag: str | None
    size: int
    max_bytes: int
    body: Any = field(repr=False)
    """botocore's StreamingBody."""
    reopen: Callable[[int], Any] | None = field(default=None, repr=False)
    """A new body from a byte offset on, of the same version."""
    bytes_read: int = 0
    resumed_reads: int = 0

    def read(self, size: int) -> bytes:
        """Up to `size` more bytes; JobFailure once past `max_bytes` (the object may have
        been replaced by a larger one since it was measured)."""
        from botocore.exceptions import BotoCoreError

        try:
            block: bytes = self.body.read(size)
        except BotoCoreError:
            if self.reopen is None or self.resumed_reads >= MAX_RESUMED_READS:
                raise
            self.resumed_reads += 1
            self.body.close()
            self.body = self.reopen(self.bytes_read)
            block = self.body.read(size)
        self.bytes_read += len(block)
        if self.bytes_read > self.max_bytes:
            raise JobFailure(
                f"the input object has more than {self.max_bytes} bytes (MTC_JOBS_MAX_INPUT_BYTES)"
            )
        return block

    def close(self) -> None:
        """Stop reading (closes the connection)."""
        self.body.close()


class JobObjects:
    """S3 access of jobs: reads under `input_allowlist`, writes under `output_allowlist`."""

    def __init__(
        self,
        *,
        input_allowlist: list[str],
        output_allowlist: list[str],
        endpoint_url: str | None = None,
        timeout_seconds: float = 30.0,
        client: S3Client | None = None,
    ) -> None:
        self.inputs = S3Allowlist(
            input_allowlist,
            setting_name="MTC_JOBS_INPUT_ALLOWLIST",
            purpose="reading job inputs from S3",
        )
        self.outputs = S3Allowlist(
            output_allowlist,
            setting_name="MTC_JOBS_OUTPUT_ALLOWLIST",
            purpose="writing job outputs to S3",
        )
        self._s3 = LazyS3Client(
            endpoint_url, timeout_seconds=timeout_seconds, max_attempts=4, client=client
        )

    @property
    def client(self) -> S3Client:
        """A boto3 S3 client, created on first use."""
        return self._s3.get()

    def check_input(self, uri: str, scope: S3Scope) -> S3Object:
        """The input's location, if well-formed (else InvalidInput) and open to `scope`
        (else InputNotFound: the answer a missing object gets from the worker too)."""
        target = parse_object_uri(uri)
        self.inputs.check_readable(target, scope)
        return target

    def check_output(self, uri: str, scope: S3Scope) -> S3Object:
        """The output's location, if well-formed and open to `scope` (else AccessDenied)."""
        target = parse_object_uri(uri)
        self.outputs.check(target, scope)
        return target

    def write_output(
        self, uri: str, body: bytes, content_type: str, *, scope: S3Scope, job_id: str
    ) -> None:
        """Write the whole output in one PutObject (all or nothing) unless the object
        exists; JobFailure for an existing object that another job wrote or for a permanent
        S3 error, a passing one raised for the worker to retry."""
        from botocore.exceptions import ClientError, ParamValidationError

        try:
            target = self.check_output(uri, scope)
        except AccessDenied as error:
            raise JobFailure(error.detail) from None
        try:
            # S3 (since 2024), MinIO and moto honour If-None-Match on PUT; a store that
            # ignored it would overwrite, which is why the location check above comes first.
            self.client.put_object(
                Bucket=target.bucket,
                Key=target.key,
                Body=body,
                ContentType=content_type,
                IfNoneMatch="*",
                Metadata={JOB_ID_METADATA: job_id},
            )
        except (ClientError, ParamValidationError) as error:
            self._settle_failed_write(error, target, job_id)

    def open_input(
        self,
        uri: str,
        *,
        max_bytes: int,
        scope: S3Scope | None,
        etag: str | None = None,
    ) -> InputStream:
        """The input object, to read as a stream. JobFailure if it is missing, too large,
        unreadable (any permanent S3 error) or no longer the version `etag`, when given; a
        passing error (5xx, throttling, no connection) is raised as botocore raised it, for
        the worker to retry. `scope` None: inline
        inputs the gateway staged (`stage_inputs`), whose URI comes from the job store, not
        from the caller."""
        from botocore.exceptions import ClientError, ParamValidationError

        try:
            target = parse_object_uri(uri) if scope is None else self.check_input(uri, scope)
        except (AccessDenied, InputNotFound) as error:
            raise JobFailure(error.detail) from None
        try:
            head = self.client.head_object(Bucket=target.bucket, Key=target.key)
            size = int(head["ContentLength"])
            if size > max_bytes:
                raise JobFailure(
                    f"the input object has {size} bytes; the limit is {max_bytes} "
                    "(MTC_JOBS_MAX_INPUT_BYTES)"
                )
            if etag is None:
                response = self.client.get_object(Bucket=target.bucket, Key=target.key)
            else:
                response = self.client.get_object(
                    Bucket=target.bucket, Key=target.key, IfMatch=etag
                )
        except (ClientError, ParamValidationError) as error:
            code = s3_error_code(error)
            if code in PRECONDITION_FAILED_CODES:
                raise JobFailure(REPLACED_INPUT) from None
            if code in HIDDEN_OBJECT_CODES:
                raise JobFailure(no_readable_object(target).detail) from None
            if is_permanent(error):
                raise _refusal(error, "read", target.uri) from None
            raise
        found = str(response["ETag"]) if response.get("ETag") else None

        def reopen(offset: int) -> Any:
            try:
                ranged = self.client.get_object(
                    Bucket=target.bucket,
                    Key=target.key,
                    Range=f"bytes={offset}-",
                    IfMatch=found or "",
                )
            except ClientError as error:
                if s3_error_code(error) in PRECONDITION_FAILED_CODES:
                    raise JobFailure(REPLACED_INPUT) from None
                raise
            return ranged["Body"]

        # Without a version to hold to, a resumed read could join two different objects.
        resume = reopen if found is not None else None
        return InputStream(found, size, max_bytes, response["Body"], resume)

    def write_output_parts(
        self, uri: str, pieces: Iterable[bytes], content_type: str, *, scope: S3Scope, job_id: str
    ) -> None:
        """Write the output from `pieces` as they come, all or nothing: one conditional put
        (`write_output`) when it fits in `OUTPUT_PART_BYTES`, else a multipart upload of
        parts of that size, completed at the end unless the object exists (aborted if
        anything fails, so nothing is visible)."""
        from botocore.exceptions import ClientError, ParamValidationError

        try:
            target = self.check_output(uri, scope)
        except AccessDenied as error:
            raise JobFailure(error.detail) from None
        buffer = bytearray()
        upload = _MultipartUpload(self.client, target, content_type, job_id)
        try:
            for piece in pieces:
                buffer += piece
                if len(buffer) >= OUTPUT_PART_BYTES:
                    upload.send_part(bytes(buffer))
                    buffer.clear()
            if upload.upload_id is None:
                self.write_output(uri, bytes(buffer), content_type, scope=scope, job_id=job_id)
                return
            if buffer:
                upload.send_part(bytes(buffer))
            upload.complete()
        except (ClientError, ParamValidationError) as error:
            upload.abort()
            self._settle_failed_write(error, target, job_id)
        except BaseException:
            upload.abort()
            raise

    def stage_inputs(self, staging_prefix: str, job_id: str, texts: list[str]) -> str:
        """Write an inline job's texts under `staging_prefix` (`bucket/prefix/`) as JSON
        Lines, for the worker to read instead of the job store; returns their URI. S3
        errors are raised as botocore raised them."""
        bucket, _, prefix = staging_prefix.partition("/")
        key = (prefix.rstrip("/") + "/" if prefix.strip("/") else "") + f"{job_id}.jsonl"
        body = "".join(json.dumps({"text": text}) + "\n" for text in texts).encode()
        self.client.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson"
        )
        return f"s3://{bucket}/{key}"

    def delete_staged(self, uri: str) -> None:
        """Delete staged inputs once their job has ended; a failure is only logged (a
        lifecycle rule on the staging prefix removes what is left)."""
        from botocore.exceptions import BotoCoreError, ClientError

        target = parse_object_uri(uri)
        try:
            self.client.delete_object(Bucket=target.bucket, Key=target.key)
        except (BotoCoreError, ClientError) as error:
            logger.warning("could not delete the staged inputs %s: %s", uri, error)

    def _settle_failed_write(self, error: Exception, target: S3Object, job_id: str) -> None:
        """Return if the object exists as this job's own output (a put that succeeded
        before the worker died, the job then delivered again); else raise JobFailure for an
        existing object or a permanent error, or `error` itself for the worker to retry."""
        if s3_error_code(error) in PRECONDITION_FAILED_CODES:
            head = self.client.head_object(Bucket=target.bucket, Key=target.key)
            if head.get("Metadata", {}).get(JOB_ID_METADATA) == job_id:
                return
            raise JobFailure(
                f"the output object {target.uri} already exists; a job never replaces "
                "an object: give a new output_uri"
            ) from None
        if is_permanent(error):
            raise _refusal(error, "write", target.uri) from None
        raise error


class _MultipartUpload:
    """A multipart upload of an output, started at its first part."""

    def __init__(self, client: S3Client, target: S3Object, content_type: str, job_id: str) -> None:
        self.client = client
        self.target = target
        self.content_type = content_type
        self.job_id = job_id
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def send_part(self, data: bytes) -> None:
        """Upload the next part (starting the upload at the first)."""
        if self.upload_id is None:
            started = self.client.create_multipart_upload(
                Bucket=self.target.bucket,
                Key=self.target.key,
                ContentType=self.content_type,
                Metadata={JOB_ID_METADATA: self.job_id},
            )
            self.upload_id = started["UploadId"]
        number = len(self.parts) + 1
        sent = self.client.upload_part(
            Bucket=self.target.bucket,
            Key=self.target.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=data,
        )
        self.parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    def complete(self) -> None:
        """Make the object visible, whole, unless one exists under its key."""
        if self.upload_id is None:
            raise RuntimeError("no part was sent")
        self.client.complete_multipart_upload(
            Bucket=self.target.bucket,
            Key=self.target.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},  # type: ignore[typeddict-item]
            IfNoneMatch="*",
        )
        self.upload_id = None

    def abort(self) -> None:
        """Drop the parts sent, if any (best effort: nothing of them is visible anyway)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self.upload_id is None:
            return
        try:
            self.client.abort_multipart_upload(
                Bucket=self.target.bucket, Key=self.target.key, UploadId=self.upload_id
            )
        except (BotoCoreError, ClientError) as error:
            logger.warning("could not abort the upload of %s: %s", self.target.uri, error)
        self.upload_id = None
