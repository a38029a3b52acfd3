"""Clips named by an S3 URI, read only from allow-listed buckets and prefixes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.core.errors import ItemTooLarge, UpstreamUnavailable
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

__all__ = ["S3ClipReader", "S3Object", "parse_object_uri"]


class S3ClipReader:
    """Fetches audio objects, refusing anything outside `allowlist` before any request."""

    def __init__(
        self,
        allowlist: list[str],
        *,
        max_bytes: int,
        endpoint_url: str | None = None,
        timeout_seconds: float = 10.0,
        client: S3Client | None = None,
    ) -> None:
        self.allowlist = S3Allowlist(
            allowlist, setting_name="MTC_S3_INPUT_ALLOWLIST", purpose="reading clips from S3"
        )
        self.max_bytes = max_bytes
        self._s3 = LazyS3Client(
            endpoint_url, timeout_seconds=timeout_seconds, max_attempts=2, client=client
        )

    def check_allowed(self, target: S3Object, scope: S3Scope) -> None:
        """Raise `no_readable_object` (404) unless the object lies under an allow-listed
        location open to `scope`: the answer a missing object gets too."""
        self.allowlist.check_readable(target, scope)

    def read(self, uri: str, scope: S3Scope) -> bytes:
        """The object's bytes (blocking: call from a worker thread). An object outside the
        locations open to `scope`, a missing one and one S3 refuses to show all get the
        same 404 (`no_readable_object`), so no answer tells whether an object exists."""
        from botocore.exceptions import BotoCoreError, ClientError

        target = parse_object_uri(uri)
        self.check_allowed(target, scope)
        try:
            client = self._s3.get()
            head = client.head_object(Bucket=target.bucket, Key=target.key)
            size = int(head["ContentLength"])
            if size > self.max_bytes:
                raise ItemTooLarge(
                    f"{target.uri}: {size} bytes; the limit is {self.max_bytes} bytes "
                    "(MTC_MAX_AUDIO_BYTES)"
                )
            response = client.get_object(Bucket=target.bucket, Key=target.key)
            # Read one byte past the limit: the object may have grown since the HEAD.
            data = response["Body"].read(self.max_bytes + 1)
        except ClientError as exc:
            code = s3_error_code(exc)
            if code in HIDDEN_OBJECT_CODES:
                raise no_readable_object(target) from None
            raise UpstreamUnavailable(f"S3 refused to serve {target.uri} ({code})") from None
        except BotoCoreError as exc:
            raise UpstreamUnavailable(
                f"S3 is unreachable for {target.uri}: {type(exc).__name__}"
            ) from None
        if len(data) > self.max_bytes:
            raise ItemTooLarge(
                f"{target.uri}: more than {self.max_bytes} bytes (MTC_MAX_AUDIO_BYTES)"
            )
        return data
