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
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from services.artifacts.manifest import MANIFEST_NAME, read_manifest, verify_model_dir
from services.artifacts.s3_models import Progress, S3ModelRepository, S3Prefix
from services.core.errors import ModelLoadError

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
            return cls("s3", S3Prefix.parse(uri).uri.removeprefix("s3://"))
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
        self.s3 = S3ModelRepository(s3_endpoint_url)

    def fetch(self, uri: str) -> Path:
        """Return a local directory holding the verified model named by `uri`.

        Blocking (file and network I/O); call it from a worker thread in async code.
        """
        location = ModelLocation.parse(uri)
        if location.scheme == "s3":
            return self._fetch_s3(uri)
        if location.scheme == "hf":
            return self._fetch_hub(uri, location)
        return self._use_local(uri, Path(location.path))

    def pull(self, uri: str, destination: Path, *, progress: Progress | None = None) -> Path:
        """Copy the verified model named by `uri` into `destination` (which must not exist).

        The copy appears only once complete: it is assembled in a sibling directory first.
        """
        if destination.exists():
            raise ModelLoadError(f"{destination} already exists; choose a new directory")
        location = ModelLocation.parse(uri)
        if location.scheme == "s3":
            self.s3.download(self.s3.resolve(S3Prefix.parse(uri)), destination, progress=progress)
            return destination
        source = self.fetch(uri)
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = destination.with_name(f".{destination.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            shutil.copytree(source, staging)
            self._use_local(uri, staging)
            staging.rename(destination)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return destination

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

    def _fetch_s3(self, uri: str) -> Path:
        location = self.s3.resolve(S3Prefix.parse(uri))
        manifest, raw = self.s3.read_manifest(location)
        # Keyed by the manifest's hash: a republished version never reuses a stale copy.
        target = (
            self.cache_dir
            / "s3"
            / location.bucket
            / (location.prefix or "_root")
            / hashlib.sha256(raw).hexdigest()[:16]
        )
        if (target / MANIFEST_NAME).is_file():
            try:
                verify_model_dir(target, manifest)
                logger.info("%s: using verified cached copy at %s", uri, target)
                return target
            except ModelLoadError as exc:
                logger.warning("%s: cached copy is damaged (%s); downloading again", uri, exc)
                shutil.rmtree(target, ignore_errors=True)
        self.s3.download(location, target, manifest=(manifest, raw))
        return target
