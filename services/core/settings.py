"""Settings shared by every model service, read from `MTC_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.cpu_quota import available_cpus
from services.wire.upstream_urls import TASK_NAME_PATTERN


class ServiceSettings(BaseSettings):
    """Configuration of one model service. Every field is an `MTC_<FIELD>` variable."""

    model_config = SettingsConfigDict(
        env_prefix="MTC_",
        extra="ignore",
        use_attribute_docstrings=True,
        protected_namespaces=(),
    )

    task: str = "sentiment"
    """Task name this service answers for; the route is `POST /v1/{task}/predict`."""

    model_uri: str = "file://.mtc/models/sentiment"
    """Where the model lives: `file:///abs/path` or `file://relative/path`, a bare path,
    `s3://bucket/prefix`, or `hf://org/name@revision`."""

    model_cache_dir: Path = Path(".mtc/cache")
    """Directory where models fetched from S3 or the hub are kept between starts."""

    s3_endpoint_url: str | None = None
    """S3 API endpoint for `s3://` models (MinIO or another S3-compatible store);
    unset means AWS. Credentials come from the usual `AWS_*` variables."""

    host: str = "127.0.0.1"
    """Interface the HTTP server binds to."""

    port: int = Field(default=8101, ge=1, le=65535)
    """Port the HTTP server listens on."""

    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of a separate server for Prometheus's `/metrics` (on `host`); the API port then
    stops serving `/metrics`, so the API can be published without it. Unset: `/metrics` on
    the API port (local runs). The Kubernetes manifests set it."""

    max_items_per_request: int = Field(default=1024, ge=1)
    """Most items (texts, images, ...) accepted in one request; more -> 413."""

    max_body_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    """Largest accepted request body in bytes; larger -> 413."""

    max_batch_size: int = Field(default=32, ge=1)
    """Most items the model runs in one forward pass."""

    max_batch_tokens: int = Field(default=8192, ge=1)
    """Padded size budget of one forward pass: items x longest item (tokens for text)."""

    max_queued_items: int = Field(default=4096, ge=1)
    """Most items waiting for the model across all requests; a request that would exceed
    it is refused with 429 instead of waiting in an ever-growing queue."""

    request_timeout_seconds: float = Field(default=30.0, gt=0)
    """A request still waiting for the model after this long is answered 504."""

    inference_workers: int = Field(default=1, ge=1, le=64)
    """Forward passes that may run at the same time (each in its own thread)."""

    torch_threads: int | None = Field(default=None, ge=1)
    """Intra-op threads for each forward pass; unset: the container's CPUs divided among
    the inference workers (one each by default)."""

    redis_url: str | None = None
    """Redis URL (`redis://host:6379/0`) for a prediction cache shared by replicas;
    unset means an in-process cache."""

    cache_ttl_seconds: int = Field(default=3600, ge=0)
    """How long a cached prediction is reused; 0 disables the cache."""

    cache_max_items: int = Field(default=100_000, ge=0)
    """Capacity of the in-process cache (least recently used entries are dropped)."""

    redis_timeout_seconds: float = Field(default=0.25, gt=0)
    """Socket timeout for Redis calls: a slow or dead Redis costs at most this per call."""

    redis_retry_seconds: float = Field(default=2.0, ge=0)
    """After a Redis failure, serve uncached for this long before trying Redis again."""

    log_level: str = "INFO"
    """Python logging level name."""

    @property
    def threads_per_worker(self) -> int:
        """Intra-op threads each forward pass may use: `torch_threads` when set, else the
        CPUs shared out among the workers, since workers that compete for the same cores
        with several threads each only add contention."""
        if self.torch_threads is not None:
            return self.torch_threads
        return max(1, available_cpus() // self.inference_workers)

    @field_validator("task")
    @classmethod
    def _task_is_a_name(cls, value: str) -> str:
        if not TASK_NAME_PATTERN.match(value):
            raise ValueError(f"task must match {TASK_NAME_PATTERN.pattern}")
        return value

    @model_validator(mode="after")
    def _batch_fits_queue(self) -> ServiceSettings:
        if self.max_batch_size > self.max_queued_items:
            raise ValueError("max_batch_size must not exceed max_queued_items")
        return self

    @model_validator(mode="after")
    def _metrics_port_is_not_the_api_port(self) -> ServiceSettings:
        if self.metrics_port == self.port:
            raise ValueError("metrics_port must differ from port (or be unset)")
        return self
