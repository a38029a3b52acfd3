"""How the local stack (`make run`) wires batch jobs: the worker and the gateway get the
same jobs settings, pointing at the local Redis and the same services."""

from __future__ import annotations

import json

from gateway.local_stack import (
    POSE_SERVICE,
    TEXT_SERVICE,
    banner,
    jobs_environment,
    parse_args,
    plan_services,
)
from services.jobs.settings import JobsSettings

MODELS = {
    "sentiment": (TEXT_SERVICE, "/models/sentiment"),
    "pose": (POSE_SERVICE, "/models/pose"),
}


def test_the_worker_gets_the_local_redis_and_every_service() -> None:
    services = plan_services(MODELS, {"sentiment": 2}, first_port=8101)

    env = jobs_environment(services, "127.0.0.1", redis_port=6390, metrics_port=8104)

    settings = JobsSettings(
        broker_url=env["MTC_JOBS_BROKER_URL"],
        upstreams=json.loads(env["MTC_JOBS_UPSTREAMS"]),
        task_kinds=json.loads(env["MTC_JOBS_TASK_KINDS"]),
        metrics_port=int(env["MTC_JOBS_METRICS_PORT"]),
    )
    assert settings.store_url == "redis://127.0.0.1:6390/0"
    assert settings.upstreams == {
        "sentiment": ["http://127.0.0.1:8101", "http://127.0.0.1:8102"],
        "pose": ["http://127.0.0.1:8103"],
    }
    assert settings.kind_of("pose") == "image"
    assert settings.metrics_port == 8104


def test_jobs_are_on_unless_turned_off() -> None:
    assert parse_args([]).no_jobs is False
    assert parse_args(["--no-jobs"]).no_jobs is True


def test_the_banner_shows_a_job_only_when_jobs_run() -> None:
    with_jobs = banner("http://127.0.0.1:8080", MODELS, "http://127.0.0.1:8105/metrics")
    without = banner("http://127.0.0.1:8080", MODELS)

    assert "http://127.0.0.1:8080/v1/jobs" in with_jobs
    assert "jobs worker metrics: http://127.0.0.1:8105/metrics" in with_jobs
    assert "/v1/jobs" not in without
