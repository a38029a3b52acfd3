"""`JobsSettings`: defaults, validation, and the Celery configuration built from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.jobs.queue import celery_config
from services.jobs.settings import (
    DEFAULT_WORKER_MEMORY_BYTES,
    JobsSettings,
    cgroup_memory_limit,
    jobs_settings_from_environment,
)

UPSTREAMS = {"sentiment": "http://text:8000/"}


def test_the_store_defaults_to_a_redis_broker() -> None:
    settings = JobsSettings(broker_url="redis://redis:6379/1", upstreams=UPSTREAMS)

    assert settings.store_url == "redis://redis:6379/1"
    assert settings.upstreams == {"sentiment": ["http://text:8000"]}
    assert (settings.chunk_size, settings.concurrency, settings.queue) == (64, 2, "mtc-jobs")
    assert (settings.retention_seconds, settings.visibility_timeout_seconds) == (604800, 600)
    assert (settings.max_input_rows, settings.max_input_bytes) == (1_000_000, None)
    assert settings.result_retention_seconds == 3600
    assert settings.metrics_port == 8105


def test_the_input_byte_limit_follows_the_worker_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"broker_url": "redis://redis:6379/0", "upstreams": UPSTREAMS}
    monkeypatch.setattr("services.jobs.settings.cgroup_memory_limit", lambda: 768 * 1024**2)

    assert JobsSettings.model_validate(base).input_bytes_limit == 768 * 1024**2
    sized = JobsSettings.model_validate({**base, "worker_memory_bytes": 2 * 1024**3})
    assert sized.input_bytes_limit == 2 * 1024**3
    fixed = JobsSettings.model_validate(
        {**base, "worker_memory_bytes": 2 * 1024**3, "max_input_bytes": 10}
    )
    assert fixed.input_bytes_limit == 10
    monkeypatch.setattr("services.jobs.settings.cgroup_memory_limit", lambda: None)
    assert JobsSettings.model_validate(base).input_bytes_limit == DEFAULT_WORKER_MEMORY_BYTES


@pytest.mark.parametrize(
    ("v2", "v1", "expected"),
    [
        ("1073741824\n", None, 1024**3),
        ("max\n", None, None),
        (None, "536870912\n", 512 * 1024**2),
        (None, "9223372036854771712\n", None),
        (None, None, None),
    ],
)
def test_the_cgroup_memory_limit_is_read_from_v2_then_v1(
    tmp_path: Path, v2: str | None, v1: str | None, expected: int | None
) -> None:
    files = (tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes")
    for file, content in zip(files, (v2, v1), strict=True):
        if content is not None:
            file.write_text(content)

    assert cgroup_memory_limit(files) == expected


def test_a_rabbitmq_broker_needs_a_redis_store() -> None:
    with pytest.raises(ValidationError, match="redis_url is required"):
        JobsSettings(broker_url="amqp://guest:guest@rabbitmq:5672//", upstreams=UPSTREAMS)

    settings = JobsSettings(
        broker_url="amqp://guest:guest@rabbitmq:5672//",
        redis_url="redis://redis:6379/0",
        upstreams=UPSTREAMS,
    )
    assert settings.store_url == "redis://redis:6379/0"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"redis_url": "http://redis:6379"}, "redis_url must be"),
        ({"upstreams": {}}, "at least 1 item"),
        ({"upstreams": {"Sentiment": "http://x"}}, "does not match"),
        ({"upstreams": {"sentiment": "ftp://x"}}, "is invalid"),
        ({"task_kinds": {"pose": "image"}}, "task_kinds names tasks with no upstream: pose"),
        ({"input_allowlist": ["Bad Bucket/x"]}, "is not `bucket` or `bucket/prefix`"),
        ({"output_allowlist": ["batch/../x"]}, "is not `bucket` or `bucket/prefix`"),
        ({"staging_prefix": "Bad Bucket/staging/"}, "is not `bucket` or `bucket/prefix`"),
        ({"chunk_size": 2000}, "less than or equal to 1024"),
        ({"queue": "has space"}, "should match pattern"),
    ],
)
def test_invalid_settings_are_refused_with_a_reason(
    changes: dict[str, object], message: str
) -> None:
    values: dict[str, object] = {"broker_url": "redis://redis:6379/0", "upstreams": UPSTREAMS}
    values.update(changes)

    with pytest.raises(ValidationError, match=message):
        JobsSettings.model_validate(values)


def test_the_environment_turns_jobs_on_only_with_a_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MTC_JOBS_BROKER_URL", raising=False)
    assert jobs_settings_from_environment() is None

    monkeypatch.setenv("MTC_JOBS_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("MTC_JOBS_UPSTREAMS", '{"sentiment": ["http://a:1", "http://b:1"]}')
    monkeypatch.setenv("MTC_S3_ENDPOINT_URL", "http://minio:9000")
    settings = jobs_settings_from_environment()

    assert settings is not None
    assert settings.upstreams == {"sentiment": ["http://a:1", "http://b:1"]}
    assert settings.s3_endpoint_url == "http://minio:9000"


def test_celery_acknowledges_late_reads_json_only_and_redelivers_after_the_timeout() -> None:
    settings = JobsSettings(
        broker_url="redis://redis:6379/0",
        upstreams=UPSTREAMS,
        visibility_timeout_seconds=40,
        queue="batch",
    )

    config = celery_config(settings)

    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["broker_connection_retry_on_startup"] is True
    assert config["accept_content"] == ["json"]
    assert config["task_serializer"] == "json"
    assert config["broker_transport_options"]["visibility_timeout"] == 40
    # A dead worker's message is looked for within a quarter of the timeout.
    assert config["broker_transport_options"]["unacked_restore_interval"] == 10
    assert config["task_default_queue"] == "batch"
    assert config["result_backend"] == "redis://redis:6379/0"
