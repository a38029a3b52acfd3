"""The Celery application of jobs: broker settings shared by the gateway (which sends job
messages) and the worker (which consumes them).

A message carries only the job id; everything else is in the job store. Delivery is
at least once: messages are acknowledged after the job ran (`task_acks_late`), so a job
whose worker died is delivered again (Redis: after `visibility_timeout`; RabbitMQ: when
the worker's connection drops), and the worker makes running a job twice harmless.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from services.jobs.settings import JobsSettings

RUN_JOB_TASK = "mtc.jobs.run"


def celery_config(settings: JobsSettings) -> dict[str, Any]:
    """Celery settings for jobs."""
    # A dead worker's messages are looked for this often: soon after they become visible
    # again, without scanning Redis more than every few seconds.
    restore_interval = max(1, min(10, settings.visibility_timeout_seconds // 4))
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.store_url,
        # The job store holds states and results; Celery's own results are not kept.
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_seconds,
            "unacked_restore_interval": restore_interval,
            "unacked_restore_throttle": 1,
        },
        "result_backend_transport_options": {
            "visibility_timeout": settings.visibility_timeout_seconds
        },
        "task_default_queue": settings.queue,
        "task_create_missing_queues": True,
        "task_publish_retry_policy": {
            "max_retries": 3,
            "interval_start": 0.1,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def create_celery_app(settings: JobsSettings) -> Celery:
    """A Celery application configured for jobs (no task registered: the worker adds it)."""
    app = Celery("mtc-jobs", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def send_job(app: Celery, job_id: str, queue: str) -> None:
    """Queue one job's message (blocking; retried briefly if the broker hiccups)."""
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue, retry=True)


def queue_length(app: Celery, queue: str, *, timeout_seconds: float) -> int:
    """Messages waiting in `queue` (not those a worker holds), read from the broker in one
    attempt whose connect and reads each take at most `timeout_seconds` (kombu otherwise
    retries a refused connection for seconds)."""
    transport_options = {
        "max_retries": 0,
        # Redis transport; RabbitMQ's (py-amqp) reads the two below.
        "socket_timeout": timeout_seconds,
        "socket_connect_timeout": timeout_seconds,
        "read_timeout": timeout_seconds,
        "write_timeout": timeout_seconds,
    }
    with app.connection_for_read(
        connect_timeout=timeout_seconds, transport_options=transport_options
    ) as connection:
        channel = connection.default_channel
        try:
            declared = channel.queue_declare(queue=queue, passive=True)
        except connection.channel_errors:
            # No such queue: Redis drops an empty list, RabbitMQ has none before a worker
            # declared it. Either way nothing waits.
            return 0
        return int(declared.message_count)
