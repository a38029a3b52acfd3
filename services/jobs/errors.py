"""Errors of the jobs API, in the shared `{"detail", "error_type"}` shape, and the reason a
worker gives up on a job."""

from __future__ import annotations

from services.core.errors import MtcError


class JobNotFound(MtcError):
    """No job with this id belongs to the caller (it never existed, expired, or is
    another API key's)."""

    status_code = 404
    error_type = "job_not_found"


class JobFinished(MtcError):
    """The job can no longer be cancelled: it has finished or is writing its output."""

    status_code = 409
    error_type = "job_finished"


class InvalidJob(MtcError):
    """The submission is well-formed JSON but cannot run: a malformed URI, an unknown file
    format, a task jobs do not run, or too many results for an inline answer."""

    status_code = 422
    error_type = "invalid_job"


class JobsNotConfigured(MtcError):
    """Batch jobs are off: the gateway has no `MTC_JOBS_BROKER_URL`."""

    status_code = 503
    error_type = "jobs_not_configured"


class JobQueueUnavailable(MtcError):
    """The job store or the queue (Redis, RabbitMQ) cannot be reached right now."""

    status_code = 503
    error_type = "job_queue_unavailable"


class JobFailure(Exception):
    """Why a worker gave up on a job; the message becomes the job's `error`."""


class JobLimitReached(MtcError):
    """The API key already holds what its limits allow (`MTC_JOBS_MAX_*_PER_OWNER`): too
    many queued or running jobs, rows in flight, or bytes in the job store."""

    status_code = 429
    error_type = "job_limit_reached"


class JobStoreFull(MtcError):
    """The job store is close to its memory limit: new jobs wait, so the jobs it holds can
    still finish and be cancelled (`MTC_JOBS_STORE_ADMISSION_RATIO`)."""

    status_code = 503
    error_type = "job_store_full"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "30"})
