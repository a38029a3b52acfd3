"""Gateway configuration, read from `MTC_GATEWAY_*` environment variables."""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import AnyHttpUrl, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TASK_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


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

    upstreams: dict[str, str] = Field(min_length=1)
    """Task name -> base URL of the service that serves it, as a JSON object, e.g.
    `{"sentiment": "http://sentiment:8000"}`. Task names match `^[a-z][a-z0-9_-]{0,63}$`."""

    connect_timeout_seconds: float = Field(default=2.0, gt=0)
    """Time allowed to open a connection to a service before the request fails with 503."""

    request_timeout_seconds: float = Field(default=30.0, gt=0)
    """Time allowed for a service to answer a forwarded request before it fails with 504."""

    task_timeouts: dict[str, float] = Field(default_factory=dict)
    """Per-task overrides of `request_timeout_seconds`, as a JSON object of task -> seconds."""

    status_timeout_seconds: float = Field(default=2.0, gt=0)
    """Time allowed for each service's `/v1/models` answer behind the gateway's `/v1/models`
    and `/health/ready`; a service slower than this is reported as unreachable."""

    max_connections: int = Field(default=100, ge=1)
    """Most connections open at once to all services together (one shared pool)."""

    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """Largest request body accepted; larger ones get 413 before anything is forwarded."""

    log_level: LogLevel = "info"
    """Lowest level of the log lines written (critical, error, warning, info, debug)."""

    @field_validator("upstreams")
    @classmethod
    def _check_upstreams(cls, upstreams: dict[str, str]) -> dict[str, str]:
        checked: dict[str, str] = {}
        for task, url in upstreams.items():
            _check_task_name(task)
            checked[task] = _normalise_base_url(task, url)
        return checked

    @field_validator("task_timeouts")
    @classmethod
    def _check_task_timeouts(cls, timeouts: dict[str, float]) -> dict[str, float]:
        for task, seconds in timeouts.items():
            _check_task_name(task)
            if seconds <= 0:
                raise ValueError(f"timeout for task {task!r} must be positive, got {seconds}")
        return timeouts

    @field_validator("log_level", mode="before")
    @classmethod
    def _lowercase_log_level(cls, level: object) -> object:
        return level.lower() if isinstance(level, str) else level

    @model_validator(mode="after")
    def _timeouts_name_configured_tasks(self) -> Self:
        # A typo in a task name would otherwise silently leave the default timeout in force.
        unknown = sorted(set(self.task_timeouts) - set(self.upstreams))
        if unknown:
            raise ValueError(f"task_timeouts names tasks with no upstream: {', '.join(unknown)}")
        return self

    def timeout_for(self, task: str) -> float:
        """Seconds a service may take to answer a forwarded request for `task`."""
        return self.task_timeouts.get(task, self.request_timeout_seconds)


def _check_task_name(task: str) -> None:
    if not TASK_NAME_PATTERN.fullmatch(task):
        raise ValueError(f"task name {task!r} does not match {TASK_NAME_PATTERN.pattern}")


def _normalise_base_url(task: str, url: str) -> str:
    try:
        parsed = AnyHttpUrl(url)
    except ValidationError as error:
        reason = error.errors()[0]["msg"]
        raise ValueError(f"upstream URL for task {task!r} is invalid ({url!r}): {reason}") from None
    if parsed.query or parsed.fragment:
        raise ValueError(f"upstream URL for task {task!r} must not have a query or fragment")
    # Paths are appended to the base URL, so a trailing slash would double up.
    return str(parsed).rstrip("/")
