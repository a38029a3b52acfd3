"""S3 object URIs and allow-lists of `bucket/prefix` locations, checked before any request.

Shared by every component that reads or writes objects named by its callers (the audio
service's S3 input, the batch jobs' input and output), so they refuse the same things.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.core.errors import AccessDenied, InvalidInput

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MAX_KEY_BYTES = 1024  # S3's own limit on object keys

_BUCKET_PREFIX = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$")


@dataclass(frozen=True)
class S3Object:
    """A bucket and an object key."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        """`s3://bucket/key`."""
        return f"s3://{self.bucket}/{self.key}"


def parse_object_uri(uri: str) -> S3Object:
    """`s3://bucket/key` with a clean key: no `.`/`..` segments, no empty segments.

    A URI that does not name an object raises `InvalidInput`; a key that tries to climb
    out of a prefix raises `AccessDenied`.
    """
    if not uri.startswith("s3://"):
        raise InvalidInput(f"{uri!r} is not an s3:// URI (s3://bucket/key)")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise InvalidInput(f"{uri!r} does not name an object (s3://bucket/key)")
    if len(key.encode("utf-8", errors="surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidInput(f"the object key is longer than {MAX_KEY_BYTES} bytes")
    segments = key.split("/")
    if any(segment in ("", ".", "..") for segment in segments) or "\\" in key:
        raise AccessDenied(
            f"{uri!r}: keys with empty, `.` or `..` segments or backslashes are refused"
        )
    if any(ord(character) < 32 for character in key):
        raise InvalidInput(f"{uri!r}: the key contains control characters")
    return S3Object(bucket, key)


def check_allowlist_entries(entries: list[str]) -> list[str]:
    """Validate `bucket` / `bucket/prefix` allow-list entries (for settings validators)."""
    for entry in entries:
        if not _BUCKET_PREFIX.match(entry) or ".." in entry.split("/"):
            raise ValueError(
                f"{entry!r} is not `bucket` or `bucket/prefix` (lower-case bucket name, "
                "no spaces, no `..`)"
            )
    return entries


class S3Allowlist:
    """The `bucket/prefix` locations one setting (`setting_name`) opens; empty opens none."""

    def __init__(self, entries: list[str], *, setting_name: str, purpose: str) -> None:
        self.entries = [self._split(entry) for entry in entries]
        self.setting_name = setting_name
        self.purpose = purpose
        """What the list allows, for messages: e.g. "reading clips from S3"."""

    @staticmethod
    def _split(entry: str) -> tuple[str, str]:
        bucket, _, prefix = entry.partition("/")
        return bucket, posixpath.normpath(prefix) + "/" if prefix.strip("/") else ""

    def check(self, target: S3Object) -> None:
        """Raise AccessDenied unless the object lies under an allow-listed bucket/prefix."""
        if not self.entries:
            raise AccessDenied(
                f"{self.purpose} is disabled: no bucket is allow-listed ({self.setting_name})"
            )
        for bucket, prefix in self.entries:
            if target.bucket == bucket and target.key.startswith(prefix):
                return
        allowed = ", ".join(f"s3://{bucket}/{prefix}" for bucket, prefix in self.entries)
        raise AccessDenied(f"{target.uri} is outside the allowed locations ({allowed})")


def s3_client(endpoint_url: str | None, *, timeout_seconds: float, max_attempts: int) -> S3Client:
    """A boto3 S3 client (for `endpoint_url`, or AWS when None) whose every call gives up
    after `timeout_seconds` to connect or read, retried up to `max_attempts` in all."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=timeout_seconds,
        read_timeout=timeout_seconds,
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


class LazyS3Client:
    """An S3 client made on first use (importing boto3 and building a client cost time
    that a service which never reads S3 should not pay at start), or the one given."""

    def __init__(
        self,
        endpoint_url: str | None,
        *,
        timeout_seconds: float,
        max_attempts: int,
        client: S3Client | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self._client = client

    def get(self) -> S3Client:
        """The client."""
        if self._client is None:
            self._client = s3_client(
                self.endpoint_url,
                timeout_seconds=self.timeout_seconds,
                max_attempts=self.max_attempts,
            )
        return self._client
