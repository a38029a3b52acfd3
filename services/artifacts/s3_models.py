"""Models in an S3-compatible bucket, laid out as `prefix/NAME/VERSION/<files>`.

Publishing uploads every file first and `manifest.json` last, so a version whose upload was
interrupted has no manifest and is invisible to readers. Reading fetches the manifest, then
every file it lists into a private staging directory, verifies each checksum, and only then
moves the directory into place. `.../NAME/latest` resolves to the highest complete version.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.artifacts.manifest import (
    MANIFEST_NAME,
    Manifest,
    parse_manifest_bytes,
    read_manifest,
    verify_model_dir,
)
from services.core.errors import ModelLoadError
from services.wire.s3_locations import s3_error_code

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

LATEST = "latest"
Progress = Callable[[int], None]
"""Called with a number of bytes transferred since the last call."""


def version_sort_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Orders versions naturally: 1.10.0 after 1.9.0, numbers before words at each position."""
    parts = [part for part in re.split(r"(\d+)", version) if part]
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts)


@dataclass(frozen=True)
class S3Prefix:
    """A bucket and a key prefix (without trailing slash; empty for the bucket root)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> S3Prefix:
        """Parse `s3://bucket/prefix`."""
        if not uri.startswith("s3://"):
            raise ModelLoadError(f"{uri}: not an s3:// URI")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ModelLoadError(f"{uri}: s3 URIs look like s3://bucket/prefix")
        return cls(bucket, prefix.strip("/"))

    def key(self, name: str) -> str:
        """Object key of `name` under this prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def child(self, name: str) -> S3Prefix:
        """The prefix one level down."""
        return S3Prefix(self.bucket, self.key(name))

    @property
    def uri(self) -> str:
        """Back to `s3://bucket/prefix`."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


@dataclass(frozen=True)
class PublishedVersion:
    """One version folder under a model prefix; `manifest` is None while incomplete."""

    version: str
    location: S3Prefix
    manifest: Manifest | None


class S3ModelRepository:
    """Reads and publishes model directories in S3 or any S3-compatible store."""

    def __init__(self, endpoint_url: str | None = None, client: S3Client | None = None) -> None:
        self.endpoint_url = endpoint_url
        self._client = client

    @property
    def client(self) -> S3Client:
        """A boto3 S3 client, created on first use."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5)
            self._client = boto3.client("s3", endpoint_url=self.endpoint_url, config=config)
        return self._client

    def resolve(self, location: S3Prefix) -> S3Prefix:
        """The concrete version folder for `.../latest`; other prefixes are returned as is."""
        head, _, last = location.prefix.rpartition("/")
        if last != LATEST:
            return location
        parent = S3Prefix(location.bucket, head)
        complete = [v for v in self.list_versions(parent) if v.manifest is not None]
        if not complete:
            raise ModelLoadError(f"{location.uri}: no complete version under {parent.uri}/")
        return complete[-1].location

    def read_manifest(self, location: S3Prefix) -> tuple[Manifest, bytes]:
        """The parsed manifest of a version folder and its raw bytes."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(
                Bucket=location.bucket, Key=location.key(MANIFEST_NAME)
            )
            raw = response["Body"].read()
        except ClientError as exc:
            code = s3_error_code(exc)
            if code in {"NoSuchKey", "404"}:
                raise ModelLoadError(
                    f"{location.uri}: no {MANIFEST_NAME} under this prefix: not a model, or "
                    "its upload has not finished (the manifest is uploaded last)"
                ) from exc
            if code == "NoSuchBucket":
                raise ModelLoadError(
                    f"{location.uri}: bucket {location.bucket!r} does not exist"
                ) from exc
            raise ModelLoadError(f"{location.uri}: cannot read {MANIFEST_NAME}: {code}") from exc
        except BotoCoreError as exc:
            raise ModelLoadError(f"{location.uri}: cannot reach the object store: {exc}") from exc
        return parse_manifest_bytes(raw, source=location.uri), raw

    def download(
        self,
        location: S3Prefix,
        target: Path,
        *,
        manifest: tuple[Manifest, bytes] | None = None,
        progress: Progress | None = None,
    ) -> Manifest:
        """Download and verify a version into `target`, which appears only when complete."""
        from botocore.exceptions import BotoCoreError, ClientError

        parsed, raw = manifest or self.read_manifest(location)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
        try:
            for name in sorted(parsed.files):
                destination = staging / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.client.download_file(
                        location.bucket, location.key(name), str(destination), Callback=progress
                    )
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", exc)
                    raise ModelLoadError(
                        f"{location.uri}: file {name} listed in the manifest cannot be "
                        f"downloaded ({code}): the model is incomplete"
                    ) from exc
                except BotoCoreError as exc:
                    raise ModelLoadError(
                        f"{location.uri}: download of {name} failed: {exc}"
                    ) from exc
            verify_model_dir(staging, parsed)
            # The manifest goes in last, so a directory with one is always complete.
            (staging / MANIFEST_NAME).write_bytes(raw)
            _move_into_place(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("%s: downloaded and verified %d files", location.uri, len(parsed.files))
        return parsed

    def upload(
        self,
        model_dir: Path,
        location: S3Prefix,
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> Manifest:
        """Publish a verified local model: its files, then its manifest last."""
        manifest = read_manifest(model_dir)
        if manifest is None:
            raise ModelLoadError(
                f"{model_dir}: no {MANIFEST_NAME}; only models with a manifest can be published"
            )
        verify_model_dir(model_dir, manifest)
        if not overwrite and self._exists(location.key(MANIFEST_NAME), location.bucket):
            raise ModelLoadError(
                f"{location.uri} already holds a published model; versions are immutable "
                "(publish a new version, or overwrite explicitly)"
            )
        for name in sorted(manifest.files):
            self.client.upload_file(
                str(model_dir / name), location.bucket, location.key(name), Callback=progress
            )
        self.client.upload_file(
            str(model_dir / MANIFEST_NAME), location.bucket, location.key(MANIFEST_NAME)
        )
        return manifest

    def list_versions(self, parent: S3Prefix) -> list[PublishedVersion]:
        """Version folders under `parent`, oldest first; incomplete ones have no manifest."""
        from botocore.exceptions import BotoCoreError, ClientError

        folder = f"{parent.prefix}/" if parent.prefix else ""
        names: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=parent.bucket, Prefix=folder, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    names.append(common["Prefix"][len(folder) :].rstrip("/"))
        except ClientError as exc:
            code = s3_error_code(exc)
            raise ModelLoadError(f"{parent.uri}: cannot list versions: {code}") from exc
        except BotoCoreError as exc:
            raise ModelLoadError(f"{parent.uri}: cannot reach the object store: {exc}") from exc
        versions: list[PublishedVersion] = []
        for name in sorted(names, key=version_sort_key):
            location = parent.child(name)
            try:
                manifest: Manifest | None = self.read_manifest(location)[0]
            except ModelLoadError:
                manifest = None
            versions.append(PublishedVersion(name, location, manifest))
        return versions

    def _exists(self, key: str, bucket: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if s3_error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True


def _move_into_place(staging: Path, target: Path) -> None:
    try:
        os.replace(staging, target)
    except OSError:
        # Another process sharing the cache finished the same download first.
        if not (target / MANIFEST_NAME).is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)
