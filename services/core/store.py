"""`ModelStore`: turn a model URI into a verified local directory.

Supported URIs:

- `file:///abs/dir`, `file://relative/dir` or a bare path: used in place.
- `s3://bucket/prefix`: every file listed in `prefix/manifest.json` is downloaded into the
  on-disk cache, checked against its sha256, and only then moved into place; a copy that
  is complete and verified is reused on the next start without downloading.
- `hf://org/name@revision`: fetched with `huggingface_hub` into the on-disk cache.

A directory that has a `manifest.json` is always verified before it is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.core.errors import ModelLoadError
from services.core.manifest import (
    MANIFEST_NAME,
    Manifest,
    read_manifest,
    verify_model_dir,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelLocation:
    """A parsed model URI."""

    scheme: str
    """One of `file`, `s3`, `hf`."""
    path: str
    """Local path, `bucket/prefix`, or `org/name`."""
    revision: str | None = None
    """Hub revision (`hf://` only)."""

    @classmethod
    def parse(cls, uri: str) -> ModelLocation:
        """Parse a model URI, raising ModelLoadError for unsupported forms."""
        if "://" not in uri:
            return cls("file", uri)
        scheme, _, rest = uri.partition("://")
        if scheme == "file":
            return cls("file", rest)
        if scheme == "s3":
            bucket, _, prefix = rest.partition("/")
            if not bucket:
                raise ModelLoadError(f"{uri}: s3 URIs look like s3://bucket/prefix")
            return cls("s3", f"{bucket}/{prefix.strip('/')}".rstrip("/"))
        if scheme == "hf":
            repo, _, revision = rest.partition("@")
            if repo.count("/") > 1 or not repo or repo.startswith("/"):
                raise ModelLoadError(f"{uri}: hub URIs look like hf://org/name@revision")
            return cls("hf", repo, revision or None)
        raise ModelLoadError(f"{uri}: unsupported scheme {scheme!r} (use file://, s3:// or hf://)")


class ModelStore:
    """Fetches models into `cache_dir` and verifies them against their manifests."""

    def __init__(self, cache_dir: Path, *, s3_endpoint_url: str | None = None) -> None:
        self.cache_dir = cache_dir
        self.s3_endpoint_url = s3_endpoint_url

    def fetch(self, uri: str) -> Path:
        """Return a local directory holding the verified model named by `uri`.

        Blocking (file and network I/O); call it from a worker thread in async code.
        """
        location = ModelLocation.parse(uri)
        if location.scheme == "s3":
            return self._fetch_s3(uri, location)
        if location.scheme == "hf":
            return self._fetch_hub(uri, location)
        return self._use_local(uri, Path(location.path))

    def _use_local(self, uri: str, model_dir: Path) -> Path:
        if not model_dir.is_dir():
            raise ModelLoadError(f"{uri}: no model directory at {model_dir.resolve()}")
        manifest = read_manifest(model_dir)
        if manifest is not None:
            verify_model_dir(model_dir, manifest)
        return model_dir

    def _fetch_hub(self, uri: str, location: ModelLocation) -> Path:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            snapshot = snapshot_download(
                repo_id=location.path,
                revision=location.revision,
                cache_dir=self.cache_dir / "hf",
            )
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{uri}: could not fetch from the hub: {exc}") from exc
        return self._use_local(uri, Path(snapshot))

    def _s3_client(self) -> S3Client:
        import boto3
        from botocore.config import Config

        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5)
        return boto3.client("s3", endpoint_url=self.s3_endpoint_url, config=config)

    def _fetch_s3(self, uri: str, location: ModelLocation) -> Path:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, prefix = location.path.partition("/")
        key_prefix = f"{prefix}/" if prefix else ""
        client = self._s3_client()
        try:
            manifest_bytes = client.get_object(Bucket=bucket, Key=key_prefix + MANIFEST_NAME)[
                "Body"
            ].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "404"}:
                raise ModelLoadError(
                    f"{uri}: no {MANIFEST_NAME} under this prefix: not a model, or its upload "
                    "has not finished (the manifest is uploaded last)"
                ) from exc
            if code == "NoSuchBucket":
                raise ModelLoadError(f"{uri}: bucket {bucket!r} does not exist") from exc
            raise ModelLoadError(f"{uri}: cannot read {MANIFEST_NAME}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise ModelLoadError(f"{uri}: cannot reach the object store: {exc}") from exc

        manifest = _parse_manifest_bytes(manifest_bytes, source=uri)
        target = (
            self.cache_dir
            / "s3"
            / bucket
            / (prefix or "_root")
            / hashlib.sha256(manifest_bytes).hexdigest()[:16]
        )
        if (target / MANIFEST_NAME).is_file():
            try:
                verify_model_dir(target, manifest)
                logger.info("%s: using verified cached copy at %s", uri, target)
                return target
            except ModelLoadError as exc:
                logger.warning("%s: cached copy is damaged (%s); downloading again", uri, exc)
                shutil.rmtree(target, ignore_errors=True)

        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
        try:
            for name in sorted(manifest.files):
                destination = partial / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                try:
                    client.download_file(bucket, key_prefix + name, str(destination))
                except ClientError as exc:
                    raise ModelLoadError(
                        f"{uri}: file {name} listed in the manifest cannot be downloaded: "
                        f"{exc.response.get('Error', {}).get('Code', exc)}"
                    ) from exc
                except BotoCoreError as exc:
                    raise ModelLoadError(f"{uri}: download of {name} failed: {exc}") from exc
            verify_model_dir(partial, manifest)
            # The manifest goes in last, so a directory with one is always complete.
            (partial / MANIFEST_NAME).write_bytes(manifest_bytes)
            try:
                os.replace(partial, target)
            except OSError:
                # Another process sharing the cache finished the same download first.
                if not (target / MANIFEST_NAME).is_file():
                    raise
                shutil.rmtree(partial, ignore_errors=True)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        logger.info("%s: downloaded and verified %d files", uri, len(manifest.files))
        return target


def _parse_manifest_bytes(raw: bytes, *, source: str) -> Manifest:
    try:
        document: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{source}: {MANIFEST_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ModelLoadError(f"{source}: {MANIFEST_NAME} is not a JSON object")
    return Manifest.from_json(document, source=source)
