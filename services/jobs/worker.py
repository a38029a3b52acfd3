"""`python -m services.jobs.worker`: a Celery worker that runs jobs, in one process.

Jobs run in threads of this process (Celery's `threads` pool), so stopping or killing its
PID stops all of its work; `/metrics`, `/health/live` and `/health/ready` listen on
`MTC_JOBS_METRICS_PORT`. On SIGTERM, running jobs stop after their current chunk and go back
to the queue, to resume on another worker from the chunks already stored.

The probes ask about this process only: an unreachable Redis or model service is for the
jobs to wait out (they retry), not a reason to restart the worker. The queue length is read
by a thread of its own, so neither a probe nor a scrape waits for the broker.
"""

from __future__ import annotations

import logging
import random
import sys
import threading

import redis
from botocore.exceptions import BotoCoreError, ClientError
from celery import Celery, Task
from celery.exceptions import Reject
from celery.signals import worker_shutting_down
from pydantic import ValidationError
from pydantic_settings import SettingsError

from services.core.metrics_server import MetricsServer
from services.jobs.metrics import QueueLengthPoller, WorkerMetrics
from services.jobs.prediction_client import PredictionClient
from services.jobs.queue import RUN_JOB_TASK, queue_length
from services.jobs.runner import Busy, Interrupted, JobRunner
from services.jobs.settings import JobsSettings
from services.jobs.submission import job_backends

logger = logging.getLogger("services.jobs.worker")

# Failures of the store or of S3 that may pass: the job waits and resumes, up to
# `max_transient_retries` times. Permanent S3 errors never get here: `JobObjects` turns
# them into the job's failure.
TRANSIENT_ERRORS = (redis.RedisError, BotoCoreError, ClientError)
MAX_TRANSIENT_DELAY_SECONDS = 60.0
# One read of the queue length; well under the refresh interval, so reads never pile up.
QUEUE_READ_TIMEOUT_SECONDS = 2.0


def register_job_task(app: Celery, runner: JobRunner, *, max_transient_retries: int) -> Task:
    """Register the task that runs a job, by the name the gateway sends."""

    @app.task(  # type: ignore[untyped-decorator]
        name=RUN_JOB_TASK,
        bind=True,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=None,
        # Registered on this app only, not on every Celery app of the process.
        shared=False,
    )
    def run_job(task: Task, job_id: str, transient_failures: int = 0) -> None:
        # `transient_failures` travels in the retried message: Celery's own retry count
        # also counts the waits for another worker's lease, which are no failures.
        try:
            outcome = runner.run(job_id)
        except TRANSIENT_ERRORS as error:
            if transient_failures >= max_transient_retries:
                give_up(task, job_id, transient_failures + 1, error)
                return
            delay = min(MAX_TRANSIENT_DELAY_SECONDS, 2.0 ** min(transient_failures, 6))
            logger.warning("job %s: %s; trying again in %.0f s", job_id, error, delay)
            raise task.retry(
                countdown=delay, exc=error, kwargs={"transient_failures": transient_failures + 1}
            ) from None
        except Exception:
            # A bug: fail the job with a reason instead of leaving it `running` forever.
            logger.exception("job %s: unexpected error", job_id)
            runner.fail(job_id, "internal error in the jobs worker; see its log")
            return
        if isinstance(outcome, Busy):
            # Not dropped: the lease holder may be dead and its lease about to expire.
            raise task.retry(countdown=outcome.retry_in_seconds + random.uniform(0, 1))
        if isinstance(outcome, Interrupted):
            raise Reject("worker shutting down", requeue=True)

    def give_up(task: Task, job_id: str, attempts: int, error: Exception) -> None:
        # The class only: botocore's messages name endpoints, which the job's owner sees.
        reason = (
            f"S3 or the job store stayed unavailable through {attempts} attempts "
            f"({type(error).__name__}); submit the job again later"
        )
        logger.error("job %s failed: %s (last error: %s)", job_id, reason, error)
        try:
            runner.fail(job_id, reason)
        except redis.RedisError:
            # The store is down: the job cannot even be marked failed. Try again later.
            raise task.retry(
                countdown=MAX_TRANSIENT_DELAY_SECONDS,
                exc=error,
                kwargs={"transient_failures": attempts},
            ) from None

    return run_job


def build_worker(
    settings: JobsSettings,
) -> tuple[Celery, WorkerMetrics, QueueLengthPoller, threading.Event]:
    """The Celery app with the job task registered, its metrics, the (not yet started)
    reader of the queue length, and the shutdown flag."""
    store, app, objects = job_backends(settings)
    metrics = WorkerMetrics(settings.upstreams)
    queue_poller = metrics.watch_queue(
        lambda: queue_length(app, settings.queue, timeout_seconds=QUEUE_READ_TIMEOUT_SECONDS)
    )
    predictions = PredictionClient(
        settings.upstreams,
        timeout_seconds=settings.request_timeout_seconds,
        retry_attempts=settings.retry_attempts,
        retry_backoff_seconds=settings.retry_backoff_seconds,
        on_retry=metrics.retried,
    )
    stopping = threading.Event()
    runner = JobRunner(settings, store, predictions, objects, metrics, stopping)
    register_job_task(app, runner, max_transient_retries=settings.max_transient_retries)
    return app, metrics, queue_poller, stopping


def main(argv: list[str] | None = None) -> None:
    """Validate the settings, serve metrics and consume the jobs queue until stopped."""
    try:
        settings = JobsSettings()
    except (ValidationError, SettingsError) as error:
        raise SystemExit(f"invalid MTC_JOBS_* settings: {error}") from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    app, metrics, queue_poller, stopping = build_worker(settings)
    worker_shutting_down.connect(lambda **_: stopping.set(), weak=False)
    # Ready until shutdown begins: the rollout waits for it, and it asks nothing downstream.
    MetricsServer(
        metrics.registry,
        settings.metrics_host,
        settings.metrics_port,
        ready=lambda: not stopping.is_set(),
    ).start()
    queue_poller.start()
    logger.info(
        "jobs worker: queue %s, %d at a time, metrics and health on :%d",
        settings.queue,
        settings.concurrency,
        settings.metrics_port,
    )
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={settings.concurrency}",
            f"--queues={settings.queue}",
            f"--loglevel={settings.log_level.upper()}",
            # One consumer per process needs no gossip with the others.
            "--without-gossip",
            "--without-mingle",
            *(argv or []),
        ]
    )


if __name__ == "__main__":
    main(sys.argv[1:])
