"""S3 object URIs and allow-lists of `bucket/prefix` locations, checked before any request.

Shared by every component that reads or writes objects named by its callers (the audio
service's S3 input, the batch jobs' input and output), so they refuse the same things.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

from services.core.errors import AccessDenied, InputNotFound, InvalidInput

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MAX_KEY_BYTES = 1024  # S3's own limit on object keys

S3_SCOPE_HEADER = "x-mtc-s3-scope"
"""Header the gateway sets on every request it forwards while API keys are on: the
`S3Scope` of the request's key, as JSON (see `S3Scope.to_json`). The gateway builds the
headers it forwards itself, so a client's own copy never reaches a service."""

_BUCKET_PREFIX = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$")

HIDDEN_OBJECT_CODES = frozenset(
    {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "403", "AccessDenied", "Forbidden"}
)
"""S3 error codes answered as "no such object" (`no_readable_object`): S3 answers 403 for a
missing object to credentials that may not list the bucket, so the two cannot be told apart
anyway, and an answer must not tell whether another tenant's object exists."""


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


AllowlistEntries = Annotated[list[str], AfterValidator(check_allowlist_entries)]
"""A settings field of `bucket` / `bucket/prefix` entries (`check_allowlist_entries`)."""


def split_location(entry: str) -> tuple[str, str]:
    """`bucket/prefix` as (bucket, normalised prefix ending in `/`, or "" for a bucket)."""
    bucket, _, prefix = entry.partition("/")
    return bucket, posixpath.normpath(prefix) + "/" if prefix.strip("/") else ""


def s3_error_code(error: Exception) -> str:
    """The code of an error S3 answered (`NoSuchKey`, `404`, ...); "" for any other error."""
    from botocore.exceptions import ClientError

    if not isinstance(error, ClientError):
        return ""
    return str(error.response.get("Error", {}).get("Code", ""))


def no_readable_object(target: S3Object) -> InputNotFound:
    """The one answer for an object that does not exist, lies outside the caller's
    locations, or that S3 will not show: the same status and words for each, so an answer
    never tells whether another tenant's object exists."""
    return InputNotFound(f"{target.uri}: no such object in the S3 locations this caller may read")


@dataclass(frozen=True)
class S3Scope:
    """Which of an allow-list's locations one caller may name.

    `tenant` None (API keys off): every allow-listed location. Otherwise, the API key named
    `tenant` gets its own `locations` (the keys file's `s3=` option) where they lie within
    the allow-list, or, without that option, its own folder `<entry>/<tenant>/` under each
    allow-listed entry: keys never name each other's objects.
    """

    tenant: str | None
    locations: tuple[str, ...] | None = None

    def narrow(self, entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (bucket, prefix) locations of `entries` this scope may name."""
        if self.tenant is None:
            return list(entries)
        if self.locations is None:
            if self.tenant in ("", ".", ".."):
                return []  # a folder named so could never hold a clean key
            return [(bucket, f"{prefix}{self.tenant}/") for bucket, prefix in entries]
        narrowed: list[tuple[str, str]] = []
        for own_bucket, own_prefix in (split_location(entry) for entry in self.locations):
            for bucket, prefix in entries:
                # Two prefixes overlap only when one contains the other: keep the narrower.
                if own_bucket == bucket and own_prefix.startswith(prefix):
                    narrowed.append((bucket, own_prefix))
                elif own_bucket == bucket and prefix.startswith(own_prefix):
                    narrowed.append((bucket, prefix))
        return narrowed

    def to_json(self) -> str:
        """Compact ASCII JSON (fit for a header and a Redis field)."""
        value: dict[str, object] = {"tenant": self.tenant}
        if self.locations is not None:
            value["locations"] = list(self.locations)
        return json.dumps(value, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> S3Scope:
        """The scope `to_json` wrote; ValueError for anything else."""
        value = json.loads(text)
        if not isinstance(value, dict) or set(value) - {"tenant", "locations"}:
            raise ValueError("an S3 scope is a JSON object of tenant and locations")
        tenant = value.get("tenant")
        locations = value.get("locations")
        if tenant is not None and not isinstance(tenant, str):
            raise ValueError("the scope's tenant must be a string or null")
        if locations is not None:
            if not isinstance(locations, list) or not all(
                isinstance(entry, str) for entry in locations
            ):
                raise ValueError("the scope's locations must be a list of strings")
            check_allowlist_entries(locations)
            return cls(tenant, tuple(locations))
        return cls(tenant)


UNRESTRICTED = S3Scope(tenant=None)
"""Every allow-listed location: callers of a gateway without API keys."""


def scope_from_header(value: str | None) -> S3Scope:
    """The scope the gateway sent in `S3_SCOPE_HEADER`: unrestricted without the header (a
    gateway without keys, or a caller inside the cluster), no location at all for a value
    that does not parse (refusing is the safe way to be wrong)."""
    if value is None:
        return UNRESTRICTED
    try:
        return S3Scope.from_json(value)
    except (ValueError, RecursionError):
        return S3Scope(tenant="", locations=())


class S3Allowlist:
    """The `bucket/prefix` locations one setting (`setting_name`) opens; empty opens none."""

    def __init__(self, entries: list[str], *, setting_name: str, purpose: str) -> None:
        self.entries = [split_location(entry) for entry in entries]
        self.setting_name = setting_name
        self.purpose = purpose
        """What the list allows, for messages: e.g. "reading clips from S3"."""

    def allows(self, target: S3Object, scope: S3Scope) -> bool:
        """Whether the object lies under a location of this list open to `scope`."""
        return any(
            target.bucket == bucket and target.key.startswith(prefix)
            for bucket, prefix in scope.narrow(self.entries)
        )

    def check(self, target: S3Object, scope: S3Scope) -> None:
        """Raise AccessDenied unless the object lies under a location open to `scope`
        (for writes: where nothing is read, a refusal tells nothing about other objects)."""
        self._check_enabled()
        if self.allows(target, scope):
            return
        locations = scope.narrow(self.entries)
        allowed = ", ".join(f"s3://{bucket}/{prefix}" for bucket, prefix in locations)
        raise AccessDenied(
            f"{target.uri} is outside the S3 locations open to this caller"
            + (f" ({allowed})" if allowed else "")
        )

    def check_readable(self, target: S3Object, scope: S3Scope) -> None:
        """Raise `no_readable_object` unless the object lies under a location open to
        `scope`: the answer a missing object gets too."""
        self._check_enabled()
        if not self.allows(target, scope):
            raise no_readable_object(target)

    def _check_enabled(self) -> None:
        if not self.entries:
            raise AccessDenied(
                f"{self.purpose} is disabled: no bucket is allow-listed ({self.setting_name})"
            )


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
        self._make_client = partial(
            s3_client, endpoint_url, timeout_seconds=timeout_seconds, max_attempts=max_attempts
        )
        self._client = client

    def get(self) -> S3Client:
        """The client."""
        if self._client is None:
            self._client = self._make_client()
        return self._client
