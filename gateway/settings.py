"""Gateway configuration, read from `MTC_GATEWAY_*` environment variables."""

from __future__ import annotations

import ipaddress
import math
import re
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.kinds import MIB, kind_named
from services.wire.contracts import LogLevel, TaskKind
from services.wire.upstream_urls import UpstreamUrls, check_task_name, normalise_base_url

# A host name (letters, digits, `-`, `.`), or `*.` and a domain (IP addresses are parsed).
_IMAGE_URL_HOST = re.compile(
    r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*"
)


def check_image_url_host(host: str) -> str:
    """An `image_url_hosts` entry, lower-cased: a host name, an IP address, or `*.domain`."""
    entry = host.strip().lower()
    if entry.startswith("[") and entry.endswith("]"):
        entry = entry[1:-1]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        pass
    if not _IMAGE_URL_HOST.fullmatch(entry) or entry.count(".") < (2 if entry[:1] == "*" else 0):
        raise ValueError(f"image URL host {host!r} is not a host name, an IP address or `*.domain`")
    return entry


class GatewaySettings(BaseSettings):
    """Everything the gateway needs to start; validated once, before it serves anything.

    Example: `MTC_GATEWAY_UPSTREAMS='{"sentiment": "http://127.0.0.1:8101"}' python -m gateway`.
    """

    model_config = SettingsConfigDict(
        env_prefix="MTC_GATEWAY_",
        use_attribute_docstrings=True,
        # Kubernetes injects <SERVICE>_SERVICE_HOST-style variables that may share the prefix.
        extra="ignore",
    )

    host: str = "127.0.0.1"
    """Interface to listen on. Use 0.0.0.0 inside a container."""

    port: int = Field(default=8080, ge=1, le=65535)
    """TCP port to listen on."""

    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of a separate server for Prometheus's `/metrics` (on `host`); the API port then
    stops serving `/metrics`, which stays out of reach of the API's clients. Unset:
    `/metrics` on the API port (local runs). The Kubernetes manifests set it."""

    upstreams: UpstreamUrls = Field(min_length=1)
    """Task name -> base URL of the service that serves it, or a list of URLs of its
    replicas, as a JSON object, e.g. `{"sentiment": ["http://10.0.0.5:8000",
    "http://10.0.0.6:8000"], "pose": "http://pose:8000"}`. Task names match
    `^[a-z][a-z0-9_-]{0,63}$`."""

    upstream_weights: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Per task, the share of its traffic each of its upstream URLs gets, as a JSON object of
    task -> {URL: weight}, e.g. `{"sentiment": {"http://mtc-sentiment": 90,
    "http://mtc-sentiment-canary": 10}}`: a canary release without a service mesh
    (docs/deploy.md, "Releasing a model version"). A weighted task names every URL of its
    `upstreams` entry, each with a weight >= 0, not all 0; a URL of weight 0 gets no
    traffic (a promoted or rolled-back version). Tasks not listed balance over their
    replicas by requests in flight."""

    task_kinds: dict[str, TaskKind] = Field(default_factory=dict)
    """Task -> `text`, `image`, `audio` or another kind a package under `services/`
    declares, as a JSON object: which routes and schemas the OpenAPI document and the web
    page show for the task, and its default body limit. Tasks not listed are `text`."""

    connect_timeout_seconds: float = Field(default=2.0, gt=0)
    """Time allowed to open a connection to a service before the attempt counts as failed
    (retried on another replica if there is one, else 503)."""

    request_timeout_seconds: float = Field(default=30.0, gt=0)
    """The services' deadline for a forwarded request: set it to their
    `MTC_REQUEST_TIMEOUT_SECONDS`. The gateway waits `upstream_timeout_margin_seconds`
    longer, so a request the model is too slow for gets the service's own 504 `timeout`;
    the gateway's 504 `upstream_timeout` means the service stopped answering."""

    task_timeouts: dict[str, float] = Field(default_factory=dict)
    """Per-task overrides of `request_timeout_seconds`, as a JSON object of task -> seconds."""

    upstream_timeout_margin_seconds: float = Field(default=5.0, gt=0)
    """How much longer than a task's timeout (`request_timeout_seconds` or its entry in
    `task_timeouts`) the gateway waits for the task's service before answering 504
    `upstream_timeout`: the service, whose deadline is the task's timeout, always answers
    first when it still can."""

    status_timeout_seconds: float = Field(default=2.0, gt=0)
    """Time allowed for each service's `/v1/models` answer behind the gateway's `/v1/models`
    and `/health/ready`; a service slower than this is reported as unreachable."""

    max_connections: int = Field(default=100, ge=1)
    """Most connections open at once to all services together (one shared pool)."""

    max_body_bytes: int = Field(default=64 * MIB, ge=1)
    """Largest request body accepted; larger ones get 413 before anything is forwarded."""

    task_max_body_bytes: dict[str, int] = Field(default_factory=dict)
    """Per-task limits of a forwarded body in bytes, as a JSON object of task -> bytes; a
    task not listed gets the default `MTC_MAX_BODY_BYTES` of its kind's service (text
    20 MiB, image 64 MiB, audio 12 MiB), and none exceeds `max_body_bytes`. A larger body
    gets 413 from the gateway before anything is forwarded; keep each at most the limit
    of the task's service."""

    max_json_body_bytes: int = Field(default=20 * MIB, ge=1024)
    """Largest body of the routes whose JSON the gateway parses itself (the compatibility
    routes and `/v1/jobs`); larger ones get 413 before they are read."""

    max_texts_per_request: int = Field(default=1024, ge=1)
    """Most texts the compatibility text routes accept in one request (the cap of their
    schema: validation stops once a list passes it); more -> 413. Keep it equal to the text
    services' `MTC_MAX_ITEMS_PER_REQUEST`."""

    max_images_per_request: int = Field(default=16, ge=1)
    """Most images `/api/v1/pose_classifier` accepts in one request; more -> 413. Keep it
    equal to the pose service's `MTC_MAX_IMAGES_PER_REQUEST`."""

    max_buffered_bytes: int = Field(default=128 * MIB, ge=1024)
    """Most bytes of request bodies held at once, all requests together (a body is read
    whole before it is forwarded, so that a refused connection can be retried); a request
    whose body would pass it gets 429 `overloaded` with `Retry-After` before it is read.
    At least `max_body_bytes`. Size the gateway's memory for about twice this: a body
    being sent is copied once more into the connection's send buffer."""

    retry_attempts: int = Field(default=2, ge=0, le=10)
    """Extra attempts for a request whose connection to a service could not be opened
    (refused or timed out before anything was sent), each on another replica when the task
    has one. Requests a service may have received are never retried."""

    retry_backoff_seconds: float = Field(default=0.05, ge=0)
    """Base delay before a retry; the n-th retry waits a random time between 0 and
    base x 2^(n-1) (full jitter), so replicas recovering together are not hit in step."""

    circuit_failure_threshold: int = Field(default=5, ge=1)
    """Consecutive failures to reach a service URL (connection refused or not opened in
    time, connection broken) after which its circuit opens: it gets no traffic until
    `circuit_open_seconds` pass. A slow answer (timeout) or an error answer is no failure
    of the URL: a slow model is not a reason to stop sending a replica every tenant's
    traffic."""

    circuit_open_seconds: float = Field(default=3.0, gt=0)
    """How long an open circuit stays open; then one request probes the URL (half-open),
    and its outcome closes the circuit or opens it again."""

    api_keys_file: Path | None = None
    """File of API keys (hashed) that may call the API; unset turns authentication and
    quotas off. One key per line: `NAME SHA256_HEX [rate=PER_SECOND] [burst=N]
    [s3=bucket/prefix,...]`; make lines with `python -m gateway.api_keys new NAME`. A
    mounted Kubernetes Secret works."""

    authentication: Literal["keys", "anonymous"] | None = None
    """`keys`: callers need an API key, and the gateway refuses to start without
    `api_keys_file`. `anonymous`: no keys, no quotas, and the gateway refuses to start if a
    keys file is set too. Unset: keys when `api_keys_file` is set, else anonymous with a
    warning at start. Deployments say which they mean (base/ and the chart ask for `keys`),
    so a lost keys setting stops the gateway instead of opening the API and its jobs."""

    api_keys_reload_seconds: float = Field(default=10.0, gt=0)
    """How often the keys file is checked for changes (a rotated Secret is picked up
    without a restart). A changed file takes effect line by line: its valid lines replace
    the keys in force (a removed key stops working) and each invalid line is logged as an
    error and skipped; at start, an invalid line stops the gateway."""

    relay_timing_headers: bool | None = None
    """Relay the services' `x-queue-time` and `x-inference-time` headers. Unset: only
    while API keys are off. With keys on, several tenants share the services' prediction
    cache, and those headers (zero for an answer from the cache) would tell one tenant
    which texts another sent; `x-total-time` is sent either way."""

    rate_limit_per_second: float = Field(default=10.0, ge=0)
    """Quota tokens per second each API key gets (token bucket refill rate), unless its
    line in the keys file says otherwise; a request costs at least one (see
    `quota_items_per_token`); 0 turns quotas off."""

    rate_limit_burst: int = Field(default=20, ge=1)
    """Quota tokens a key may spend at once after being idle (token bucket size), unless
    its line in the keys file says otherwise."""

    quota_items_per_token: int = Field(default=32, ge=1)
    """Items (texts, images, clips, inline job inputs) one quota token pays for: a request
    costs a token per this many items it carries, or per `quota_bytes_per_token` bytes of
    body, whichever is more, and at least one. The first token is taken on arrival (none
    left: 429); the rest once the body is read, which may leave the key's bucket below
    zero: its next requests wait while it refills."""

    quota_bytes_per_token: int = Field(default=MIB, ge=1024)
    """Request body bytes one quota token pays for (see `quota_items_per_token`)."""

    redis_url: str | None = None
    """Redis URL (`redis://host:6379/0`) holding the quota buckets, so every gateway replica
    counts against the same quota; unset, or while Redis is down, each replica counts in
    memory on its own."""

    redis_timeout_seconds: float = Field(default=0.25, gt=0)
    """Socket timeout of Redis calls; after a failure Redis is left alone for
    `redis_retry_seconds`, so a slow or dead Redis delays only the odd request."""

    redis_retry_seconds: float = Field(default=2.0, gt=0)
    """After a Redis failure, count quotas in memory for this long before trying Redis
    again."""

    compat_sentiment_task: str = "sentiment"
    """Task behind the compatibility routes `/project/bulk-predict` and
    `/api/v1/sentiment_analysis` (routes of a task that is not configured are left out)."""

    compat_disaster_task: str = "disaster"
    """Task behind the compatibility route `/api/v1/disaster_classifier`."""

    compat_pose_task: str = "pose"
    """Task behind the compatibility route `/api/v1/pose_classifier`."""

    compat_audio_task: str = "audio"
    """Task behind the emergency-call project's routes `POST /predict`, `POST /predict_s3`
    and its page `GET /upload` (an `audio` task)."""

    compat_tone_task: str = "sentiment"
    """Task behind the async tone project's `POST /api/predict/`, run as a batch job of
    one text (needs batch jobs: `MTC_JOBS_BROKER_URL`)."""

    compat_async_wait_seconds: float = Field(default=5.0, gt=0, le=60)
    """How long `POST /api/predict/` waits for its job before answering 202 with the
    job's `Location` instead of the prediction."""

    image_url_hosts: list[str] = Field(default_factory=list)
    """Hosts `/api/v1/pose_classifier` may fetch `{"url": [...]}` images from, as a JSON
    list: exact names or IP addresses (`images.example.com`, `127.0.0.1`), or `*.domain`
    for its subdomains. Empty: every URL gets 403 `url_not_allowed`. A host matched only
    by a `*.` entry must resolve to public addresses; one named exactly may be private or
    loopback (an in-cluster image store)."""

    image_url_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    """Time allowed to fetch one image URL, redirects included, before the request gets
    504 `url_timeout`."""

    image_url_max_bytes: int = Field(default=10 * MIB, ge=1024)
    """Largest image fetched from a URL (the pose service's default per-image limit,
    `MTC_MAX_IMAGE_BYTES`); a larger one gets 413 `item_too_large`, unread past the
    limit."""

    web_page: bool = True
    """Serve the try-it web page at `/ui`."""

    cors_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed to call the API from their pages, as a JSON list, e.g.
    `["https://app.example.com"]` (`["*"]` for any). Empty: no CORS headers are sent, so
    browsers only let pages served by the gateway itself (such as `/ui`) call it."""

    log_level: LogLevel = "info"
    """Lowest level of the log lines written (critical, error, warning, info, debug)."""

    @field_validator("upstream_weights", mode="before")
    @classmethod
    def _normalise_weighted_urls(cls, weights: object) -> object:
        # The same spelling as `upstreams` (no trailing slash), so the two can be compared.
        if not isinstance(weights, dict):
            return weights
        return {
            task: (
                {normalise_base_url(str(task), str(url)): share for url, share in shares.items()}
                if isinstance(shares, dict)
                else shares
            )
            for task, shares in weights.items()
        }

    @field_validator("task_timeouts", "task_max_body_bytes")
    @classmethod
    def _check_per_task_values(
        cls, values: dict[str, float], info: ValidationInfo
    ) -> dict[str, float]:
        what = "timeout" if info.field_name == "task_timeouts" else "body limit"
        for task, value in values.items():
            check_task_name(task)
            if value <= 0:
                raise ValueError(f"{what} for task {task!r} must be positive, got {value}")
        return values

    @field_validator("cors_origins")
    @classmethod
    def _check_cors_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            # An origin is scheme://host[:port]: a path or a trailing slash never matches.
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"CORS origin {origin!r} is not scheme://host[:port] or *")
        return origins

    @field_validator(
        "compat_sentiment_task",
        "compat_disaster_task",
        "compat_pose_task",
        "compat_audio_task",
        "compat_tone_task",
    )
    @classmethod
    def _check_compat_task(cls, task: str) -> str:
        check_task_name(task)
        return task

    @field_validator("image_url_hosts")
    @classmethod
    def _check_image_url_hosts(cls, hosts: list[str]) -> list[str]:
        return [check_image_url_host(host) for host in hosts]

    @field_validator("task_kinds")
    @classmethod
    def _kinds_are_declared(cls, kinds: dict[str, TaskKind]) -> dict[str, TaskKind]:
        for kind in kinds.values():
            kind_named(kind)
        return kinds

    @model_validator(mode="after")
    def _per_task_maps_name_configured_tasks(self) -> Self:
        # A typo in a task name would otherwise silently leave the default in force.
        for field_name, tasks in (
            ("task_timeouts", self.task_timeouts),
            ("task_kinds", self.task_kinds),
            ("task_max_body_bytes", self.task_max_body_bytes),
        ):
            unknown = sorted(set(tasks) - set(self.upstreams))
            if unknown:
                raise ValueError(f"{field_name} names tasks with no upstream: {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _weights_cover_each_weighted_task(self) -> Self:
        for task, shares in self.upstream_weights.items():
            if task not in self.upstreams:
                raise ValueError(f"upstream_weights names task {task!r}, which has no upstream")
            urls = self.upstreams[task]
            unknown = sorted(set(shares) - set(urls))
            if unknown:
                raise ValueError(
                    f"upstream_weights for task {task!r} names URLs that are not among its "
                    f"upstreams: {', '.join(unknown)}"
                )
            missing = [url for url in urls if url not in shares]
            if missing:
                raise ValueError(
                    f"upstream_weights for task {task!r} gives no weight to {', '.join(missing)} "
                    "(weight 0 takes a URL out of service)"
                )
            invalid = sorted(
                url for url, share in shares.items() if not (math.isfinite(share) and share >= 0)
            )
            if invalid:
                raise ValueError(
                    f"upstream_weights for task {task!r}: weights must be finite and >= 0 "
                    f"({', '.join(invalid)})"
                )
            if sum(shares.values()) <= 0:
                raise ValueError(
                    f"upstream_weights for task {task!r}: every weight is 0, so nothing "
                    "would serve the task"
                )
        return self

    @model_validator(mode="after")
    def _metrics_port_is_not_the_api_port(self) -> Self:
        if self.metrics_port == self.port:
            raise ValueError("metrics_port must differ from port (or be unset)")
        return self

    @model_validator(mode="after")
    def _authentication_matches_the_keys_file(self) -> Self:
        if self.authentication == "keys" and self.api_keys_file is None:
            raise ValueError(
                "MTC_GATEWAY_AUTHENTICATION is `keys` but MTC_GATEWAY_API_KEYS_FILE is unset: "
                "mount a keys file (python -m gateway.api_keys new NAME), or set "
                "MTC_GATEWAY_AUTHENTICATION=anonymous to serve without keys"
            )
        if self.authentication == "anonymous" and self.api_keys_file is not None:
            raise ValueError(
                "MTC_GATEWAY_AUTHENTICATION is `anonymous` but MTC_GATEWAY_API_KEYS_FILE is "
                "set: unset one of them"
            )
        return self

    @model_validator(mode="after")
    def _one_body_fits_the_buffer(self) -> Self:
        # Otherwise a body of the largest accepted size could never be forwarded.
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError("max_buffered_bytes must be at least max_body_bytes")
        return self

    @property
    def tasks(self) -> list[str]:
        """Configured task names, in configuration order."""
        return list(self.upstreams)

    def timeout_for(self, task: str) -> float:
        """The deadline of `task`'s services, in seconds."""
        return self.task_timeouts.get(task, self.request_timeout_seconds)

    def upstream_deadline_for(self, task: str) -> float:
        """Seconds the gateway waits for `task`'s service: its deadline plus the margin."""
        return self.timeout_for(task) + self.upstream_timeout_margin_seconds

    def body_limit_for(self, task: str) -> int:
        """Largest body forwarded to `task`'s service, in bytes."""
        default = kind_named(self.kind_of(task)).default_body_limit
        limit = self.task_max_body_bytes.get(task, default)
        return min(limit, self.max_body_bytes)

    @property
    def relays_timing_headers(self) -> bool:
        """Whether the services' timing headers reach clients (see
        `relay_timing_headers`)."""
        if self.relay_timing_headers is not None:
            return self.relay_timing_headers
        return self.api_keys_file is None

    def kind_of(self, task: str) -> TaskKind:
        """What the task classifies: `text` unless `task_kinds` says otherwise."""
        return self.task_kinds.get(task, "text")
