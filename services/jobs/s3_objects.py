"""Reading job inputs from S3 and writing job outputs to it, inside the allow-lists.

An output is written with one PutObject of the whole file, which S3 applies all or
nothing: a reader never sees half an output, and a job that fails writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.core.errors import AccessDenied
from services.core.s3_locations import LazyS3Client, S3Allowlist, S3Object, parse_object_uri
from services.jobs.errors import JobFailure

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MISSING_OBJECT_CODES = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")
DENIED_CODES = ("403", "AccessDenied", "Forbidden")
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
    code = str(error.response.get("Error", {}).get("Code", ""))
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


@dataclass(frozen=True)
class InputObject:
    """An input file's bytes and the version (ETag) they are."""

    data: bytes
    etag: str | None


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

    def check_input(self, uri: str) -> S3Object:
        """The input's location, if well-formed (else InvalidInput) and allowed (else
        AccessDenied)."""
        target = parse_object_uri(uri)
        self.inputs.check(target)
        return target

    def check_output(self, uri: str) -> S3Object:
        """The output's location, if well-formed and allowed."""
        target = parse_object_uri(uri)
        self.outputs.check(target)
        return target

    def read_input(self, uri: str, *, max_bytes: int) -> InputObject:
        """The input object's bytes; JobFailure if it is missing, too large or unreadable
        (any permanent S3 error); a passing one (5xx, throttling, no connection) is
        raised as botocore raised it, for the worker to retry."""
        from botocore.exceptions import ClientError, ParamValidationError

        try:
            target = self.check_input(uri)
        except AccessDenied as error:
            raise JobFailure(error.detail) from None
        try:
            head = self.client.head_object(Bucket=target.bucket, Key=target.key)
            size = int(head["ContentLength"])
            if size > max_bytes:
                raise JobFailure(
                    f"the input object has {size} bytes; the limit is {max_bytes} "
                    "(MTC_JOBS_MAX_INPUT_BYTES)"
                )
            response = self.client.get_object(Bucket=target.bucket, Key=target.key)
            # One byte past the limit: the object may have been replaced since the HEAD.
            data = response["Body"].read(max_bytes + 1)
        except (ClientError, ParamValidationError) as error:
            code = (
                str(error.response.get("Error", {}).get("Code", ""))
                if isinstance(error, ClientError)
                else ""
            )
            if code in MISSING_OBJECT_CODES:
                raise JobFailure(f"the input object {target.uri} does not exist") from None
            if code in DENIED_CODES:
                raise JobFailure(f"the worker's S3 credentials may not read {target.uri}") from None
            if is_permanent(error):
                raise _refusal(error, "read", target.uri) from None
            raise
        if len(data) > max_bytes:
            raise JobFailure(
                f"the input object has more than {max_bytes} bytes (MTC_JOBS_MAX_INPUT_BYTES)"
            )
        etag = response.get("ETag")
        return InputObject(data, str(etag) if etag else None)

    def write_output(self, uri: str, body: bytes, content_type: str) -> None:
        """Write the whole output in one PutObject (all or nothing); JobFailure for a
        permanent S3 error, a passing one raised for the worker to retry."""
        from botocore.exceptions import ClientError, ParamValidationError

        try:
            target = self.check_output(uri)
        except AccessDenied as error:
            raise JobFailure(error.detail) from None
        try:
            self.client.put_object(
                Bucket=target.bucket, Key=target.key, Body=body, ContentType=content_type
            )
        except (ClientError, ParamValidationError) as error:
            if is_permanent(error):
                raise _refusal(error, "write", target.uri) from None
            raise
