"""Settings of batch jobs, read from `MTC_JOBS_*` variables by the worker and the gateway."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.wire.contracts import LogLevel, TaskKind
from services.wire.s3_locations import AllowlistEntries, check_allowlist_entries
from services.wire.upstream_urls import UpstreamUrls

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

DEFAULT_WORKER_MEMORY_BYTES = 1024 * 1024 * 1024
"""A worker's memory when neither `MTC_JOBS_WORKER_MEMORY_BYTES` nor a cgroup says (the
manifests' limit)."""
CGROUP_MEMORY_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)
"""Where cgroup v2, then v1, give the memory limit of the worker's container."""
UNLIMITED_CGROUP_BYTES = 1 << 60
"""cgroup v1 writes "no limit" as a number near 2^63."""

STORED_RESULT_ROW_BYTES = 200
"""Job store bytes of one result row waiting for its job to end: its JSON with two labels
and an id of up to 32 characters, measured at 120 to 170 bytes (more labels or longer ids
cost more)."""
JOB_RECORD_BYTES = 2048
"""A job's hash, lease, queue message and the keys' own overhead in Redis."""
STORE_BASE_BYTES = 16 * 1024 * 1024
"""An empty Redis with the broker's structures and the scripts loaded."""


class JobsSettings(BaseSettings):
    """Where jobs are queued and kept, which services run them, and their limits.

    The gateway needs the broker, the job store, the tasks and the submission limits; the
    worker (`python -m services.jobs.worker`) needs all of it. Both read the same variables.
    """

    model_config = SettingsConfigDict(
        env_prefix="MTC_JOBS_",
        use_attribute_docstrings=True,
        # Kubernetes injects <SERVICE>_SERVICE_HOST-style variables that may share the prefix.
        extra="ignore",
        populate_by_name=True,
    )

    broker_url: str
    """Celery broker URL: `redis://host:6379/0` (default choice) or a RabbitMQ URL such as
    `amqp://user:password@rabbitmq:5672//`. Setting it on the gateway turns `/v1/jobs` on."""

    redis_url: str | None = None
    """Redis URL of the job store (job states, progress, results); defaults to
    `broker_url` when that is a Redis URL, and is required otherwise."""

    upstreams: UpstreamUrls = Field(min_length=1)
    """Task name -> base URL of the service that serves it, or a list of URLs of its
    replicas, as a JSON object (the format of `MTC_GATEWAY_UPSTREAMS`); the worker calls
    `POST /v1/{task}/predict` there."""

    task_kinds: dict[str, TaskKind] = Field(default_factory=dict)
    """Task -> its kind (`text`, `image`, `audio`, ...), as a JSON object; tasks not listed
    are `text`. Jobs run the kinds that declare batch jobs (text); a job for another kind
    is refused with 422."""

    concurrency: int = Field(default=2, ge=1, le=64)
    """Jobs one worker process runs at the same time (threads)."""

    chunk_size: int = Field(default=64, ge=1, le=1024)
    """Texts sent to the model service per request; also the unit of progress and of
    resumption after a worker is lost. At most the service's `MTC_MAX_ITEMS_PER_REQUEST`."""

    max_inline_items: int = Field(default=1000, ge=1)
    """Most texts a job may carry inline in its `inputs`; more -> 413 (use `input_uri`)."""

    max_inline_results: int = Field(default=1000, ge=1)
    """Most results a job may return in `GET /v1/jobs/{id}`; a job with more items needs an
    `output_uri` (an inline job is refused with 422 at submission, a job reading a larger
    input file fails)."""

    max_input_rows: int = Field(default=1_000_000, ge=1)
    """Most rows an input file may hold; a larger file fails the job."""

    max_input_bytes: int | None = Field(default=None, ge=1)
    """Largest input object in bytes; a larger one fails the job before it is read. Unset:
    the worker's memory (`MTC_JOBS_WORKER_MEMORY_BYTES`). Files are streamed, a chunk of
    rows at a time, so a job's memory does not grow with its file; the limit ties the
    largest file to the size of the workers that read it."""

    worker_memory_bytes: int | None = Field(default=None, ge=64 * 1024 * 1024)
    """Memory a worker may use, which sets the default of `MTC_JOBS_MAX_INPUT_BYTES`.
    Unset: the worker's cgroup limit (`/sys/fs/cgroup/memory.max`, or cgroup v1's
    `memory.limit_in_bytes`), or 1 GiB when it has none."""

    max_text_chars: int = Field(default=10_000, ge=1)
    """Longest text of one row or inline input in characters (keep it at most the text
    service's `MTC_MAX_TEXT_CHARS`); longer: inline -> 413, in a file -> the job fails."""

    retention_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    """How long an unfinished job, its progress and its stored chunks are kept in the store
    after its last change; then they expire (`GET` -> 404)."""

    result_retention_seconds: int = Field(default=3600, ge=60)
    """How long a finished job, and the results `GET` serves for it, are kept in the store
    after it finished; then they expire (`GET` -> 404). Results of large jobs belong in an
    `output_uri`."""

    max_active_jobs_per_owner: int = Field(default=10, ge=1)
    """Most queued or running jobs one API key (owner) may have; one more -> 429
    `job_limit_reached`."""

    max_active_rows_per_owner: int = Field(default=250_000, ge=1)
    """Most items (inline texts, input file rows) in one API key's queued and running jobs
    together: its budget of work in flight, and of results waiting in the store. An inline
    job over it -> 429 `job_limit_reached`; a file job whose rows pass it fails when the
    worker has counted them."""

    max_held_bytes_per_owner: int = Field(default=8 * 1024 * 1024, ge=1)
    """Most bytes one API key may hold in the job store: the inline inputs of its queued and
    running jobs, and the results kept for `GET` of its finished ones (until they expire,
    `MTC_JOBS_RESULT_RETENTION_SECONDS`). A job over it -> 429 `job_limit_reached`."""

    store_admission_ratio: float = Field(default=0.8, gt=0, le=1)
    """New jobs are refused (503 `job_store_full`, `Retry-After: 30`) while the job store
    uses more than this share of its `maxmemory`: the rest stays free for the jobs it holds
    to finish, be cancelled and keep their results, however many keys submit at once. A
    store without `maxmemory` is not checked."""

    max_stored_inline_bytes: int = Field(default=1024 * 1024, ge=1)
    """Largest inline `inputs` (as JSON) kept in the job store; a larger one goes to
    `MTC_JOBS_STAGING_PREFIX` in S3, or is refused with 413 when that is unset."""

    staging_prefix: str | None = None
    """`bucket/prefix/` where the gateway writes inline inputs larger than
    `MTC_JOBS_MAX_STORED_INLINE_BYTES` (the worker reads them from there and deletes them
    when the job ends); unset: such inputs are refused. The gateway needs write access."""

    visibility_timeout_seconds: int = Field(default=600, ge=1)
    """Redis broker only: a job message taken by a worker that neither finishes nor gives
    it back within this many seconds (the worker died) is delivered again. Keep it above
    the time a worker may legitimately hold a message; a redelivery of a job that is still
    running waits for the running worker's lease instead of running it twice."""

    max_deliveries: int = Field(default=3, ge=1, le=100)
    """How many times a job may be started by a worker that then dies while running it
    (killed, out of memory, a crash): at the next delivery the job fails with that reason
    instead of taking down one more worker. A worker stopped with SIGTERM puts its job back
    cleanly, and that does not count."""

    max_transient_retries: int = Field(default=8, ge=0, le=100)
    """Times a job is tried again after S3 or the job store failed in a way that passes
    (a 5xx answer, throttling, no connection), waiting 1 s, then twice as long each time
    up to a minute; then the job fails with the reason. Permanent S3 errors (no such
    bucket or key, access denied, an invalid bucket name, other 4xx) fail it at once."""

    lease_seconds: float = Field(default=30.0, ge=1)
    """Lifetime of the lease a worker holds on a running job, renewed every third of it;
    after a worker dies, another may take the job over once the lease has expired."""

    request_timeout_seconds: float = Field(default=60.0, gt=0)
    """Time allowed for a model service to answer one chunk before the attempt is retried.
    Keep it above the services' `MTC_REQUEST_TIMEOUT_SECONDS` (30 s), so a slow chunk gets
    the service's own 504, which is retried, rather than being abandoned while the service
    still computes it."""

    retry_attempts: int = Field(default=5, ge=0, le=20)
    """Extra attempts for a chunk whose service could not be reached, timed out or answered
    429, 503 or 504; after them the job fails. Other refusals (400, 413, 422) fail the job
    at once."""

    retry_backoff_seconds: float = Field(default=0.5, ge=0)
    """Base delay before a retry; the n-th waits a random time up to base x 2^(n-1), or
    the service's `Retry-After` when it sends one (capped at 30 s)."""

    input_allowlist: AllowlistEntries = Field(default_factory=list)
    """`bucket` or `bucket/prefix` entries jobs may read input files from (JSON list, e.g.
    `["batch-in/uploads/"]`); empty: jobs take inline inputs only. With API keys on, each
    key reads only its own part: its folder `<entry>/<key name>/`, or its keys-file `s3=`
    locations. The endpoint is `MTC_S3_ENDPOINT_URL`, credentials the usual `AWS_*`
    variables."""

    output_allowlist: AllowlistEntries = Field(default_factory=list)
    """`bucket` or `bucket/prefix` entries jobs may write results to (JSON list), each API
    key in its own part of them as for inputs; a job never replaces an existing object.
    Empty: results are returned inline only."""

    s3_endpoint_url: str | None = Field(default=None, validation_alias="MTC_S3_ENDPOINT_URL")
    """S3 API endpoint for input and output objects (`MTC_S3_ENDPOINT_URL`, shared with the
    model services: MinIO or another S3-compatible store); unset means AWS."""

    metrics_port: int = Field(default=8105, ge=1, le=65535)
    """Port of the worker's Prometheus `/metrics` and of its probes' `/health/live` and
    `/health/ready` (the worker has no other HTTP port)."""

    metrics_host: str = "0.0.0.0"
    """Interface the worker's metrics endpoint binds to."""

    queue: str = Field(default="mtc-jobs", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    """Name of the Celery queue jobs are sent to and workers consume."""

    log_level: LogLevel = "info"
    """Lowest level of the worker's log lines (critical, error, warning, info, debug)."""

    @field_validator("staging_prefix")
    @classmethod
    def _staging_names_a_bucket(cls, prefix: str | None) -> str | None:
        if prefix is None or not prefix.strip():
            return None
        return check_allowlist_entries([prefix])[0]

    @model_validator(mode="after")
    def _store_and_tasks_are_consistent(self) -> Self:
        if self.redis_url is None:
            if not self.broker_url.startswith(REDIS_SCHEMES):
                raise ValueError(
                    "redis_url is required when the broker is not Redis (MTC_JOBS_REDIS_URL)"
                )
            self.redis_url = self.broker_url
        elif not self.redis_url.startswith(REDIS_SCHEMES):
            raise ValueError("redis_url must be a redis://, rediss:// or unix:// URL")
        unknown = sorted(set(self.task_kinds) - set(self.upstreams))
        if unknown:
            raise ValueError(f"task_kinds names tasks with no upstream: {', '.join(unknown)}")
        return self

    @property
    def store_url(self) -> str:
        """The job store's Redis URL (`redis_url`, or the broker's)."""
        return self.redis_url or self.broker_url

    @property
    def input_bytes_limit(self) -> int:
        """`max_input_bytes`, or the worker's memory when unset."""
        if self.max_input_bytes is not None:
            return self.max_input_bytes
        return self.worker_memory_bytes or cgroup_memory_limit() or DEFAULT_WORKER_MEMORY_BYTES

    def store_bytes_for_owners(self, owners: int) -> int:
        """Job store memory that `owners` API keys need when each holds everything its
        limits allow at once (docs/jobs.md, "Sizing the job store"): its inline inputs and
        kept results, the results of its rows in flight, and its jobs' records."""
        per_owner = (
            self.max_held_bytes_per_owner
            + self.max_active_rows_per_owner * STORED_RESULT_ROW_BYTES
            + self.max_active_jobs_per_owner * JOB_RECORD_BYTES
        )
        return STORE_BASE_BYTES + owners * per_owner

    def kind_of(self, task: str) -> TaskKind:
        """What the task classifies: `text` unless `task_kinds` says otherwise."""
        return self.task_kinds.get(task, "text")


def cgroup_memory_limit(files: tuple[Path, ...] = CGROUP_MEMORY_LIMITS) -> int | None:
    """The container's memory limit in bytes from its cgroup, or None without one."""
    for file in files:
        try:
            value = file.read_text().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < UNLIMITED_CGROUP_BYTES:
            return int(value)
        return None  # "max", or v1's "unlimited"
    return None


def jobs_settings_from_environment() -> JobsSettings | None:
    """`JobsSettings` from the environment when `MTC_JOBS_BROKER_URL` is set, else None
    (a gateway without it serves no jobs)."""
    if not os.environ.get("MTC_JOBS_BROKER_URL", "").strip():
        return None
    return JobsSettings()
