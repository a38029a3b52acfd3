"""What the gateway does with jobs: check and store a submission and queue it, show a job
to its owner, cancel it. Raises the API's errors; knows nothing of HTTP."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from prometheus_client import Counter

from services.core.errors import BatchTooLarge, InvalidInput, ItemTooLarge, UnknownTask
from services.core.kinds import kind_named, model_kinds
from services.jobs.contracts import JobProgress, JobRequest, JobResult, JobView
from services.jobs.errors import (
    InvalidJob,
    JobFinished,
    JobLimitReached,
    JobNotFound,
    JobQueueUnavailable,
    JobStoreFull,
)
from services.jobs.inputs import LONE_SURROGATE, format_from_name
from services.jobs.outputs import output_format_of
from services.jobs.queue import create_celery_app, send_job
from services.jobs.s3_objects import JobObjects
from services.jobs.settings import JobsSettings
from services.jobs.store import InputFormat, JobRecord, JobState, JobStore, OwnerLimits
from services.wire.s3_locations import S3Object, S3Scope

logger = logging.getLogger(__name__)

ANONYMOUS_OWNER = "anonymous"


def new_job_id() -> str:
    """A random job id (32 hex digits)."""
    return uuid.uuid4().hex


def _is_job_id(value: str) -> bool:
    return len(value) == 32 and all(character in "0123456789abcdef" for character in value)


@dataclass
class JobDesk:
    """Submissions, look-ups and cancellations of jobs (blocking: the gateway calls it
    from a thread)."""

    settings: JobsSettings
    store: JobStore
    celery_app: Celery
    objects: JobObjects
    jobs_total: Counter | None = None

    def close(self) -> None:
        """Close the store's and the broker's connections."""
        self.store.close()
        self.celery_app.close()

    def submit(self, owner: str, request: JobRequest, scope: S3Scope) -> JobView:
        """Check a submission, store the job and queue it. `scope`: the S3 locations open
        to the owner, checked here and stored with the job for the worker to check again."""
        self._check_task(request.task)
        total, input_format = self._check_inputs(request, scope)
        self._check_output(request, total, scope)
        job_id = new_job_id()
        # Bytes the job store spends on inline texts (`JobStore.create` stores their JSON).
        inline_bytes = 0 if request.inputs is None else len(json.dumps(request.inputs))
        staged = self._needs_staging(inline_bytes)
        self._admit(owner, job_id, rows=total or 0, stored_bytes=0 if staged else inline_bytes)
        try:
            return self._store_and_queue(owner, job_id, request, scope, total, input_format, staged)
        except BaseException:
            with contextlib.suppress(redis.RedisError):
                # If this fails too, the next submission's reconciliation releases it.
                self.store.release(owner, job_id)
            raise

    def _store_and_queue(
        self,
        owner: str,
        job_id: str,
        request: JobRequest,
        scope: S3Scope,
        total: int | None,
        input_format: InputFormat | None,
        staged: bool,
    ) -> JobView:
        staged_input_uri = self._stage(job_id, request.inputs or []) if staged else None
        job = JobRecord(
            id=job_id,
            owner=owner,
            task=request.task,
            state=JobState.QUEUED,
            created_at=time.time(),
            chunk_size=self.settings.chunk_size,
            total=total,
            input_uri=request.input_uri,
            input_format=input_format,
            output_uri=request.output_uri,
            s3_scope=scope,
            staged_input_uri=staged_input_uri,
        )
        with _store_errors_as_unavailable():
            self.store.create(job, None if staged else request.inputs)
        try:
            send_job(self.celery_app, job.id, self.settings.queue)
        except (OperationalError, OSError) as error:
            # Never queued: leave no job behind that no worker will ever run.
            logger.warning("job %s could not be queued: %s", job.id, error)
            with contextlib.suppress(redis.RedisError):
                # If this fails too, the orphan expires after the retention period.
                self.store.delete(job.id)
            if staged_input_uri is not None:
                self.objects.delete_staged(staged_input_uri)
            raise JobQueueUnavailable("the job queue is unreachable; try again later") from None
        self.count(JobState.QUEUED)
        logger.info(
            "job %s queued for %s (task %s, %s)",
            job.id,
            owner,
            job.task,
            f"{total} items" if total is not None else job.input_uri,
        )
        return view_of(job, results=None)

    def get(self, owner: str, job_id: str) -> JobView:
        """The caller's job, with its results once it succeeded without an output object."""
        with _store_errors_as_unavailable():
            job = self._owned(owner, job_id)
            results = None
            if job.state == JobState.SUCCEEDED and job.output_uri is None:
                results = self.store.results(job.id)
        return view_of(job, results=results)

    def cancel(self, owner: str, job_id: str) -> JobView:
        """Cancel the caller's queued or running job."""
        with _store_errors_as_unavailable():
            job = self._owned(owner, job_id)
            outcome = self.store.cancel(job.id)
        if not outcome.changed:
            if outcome.previous is None:
                raise JobNotFound(f"no job with id {job_id}")
            if outcome.finalizing:
                raise JobFinished(
                    f"job {job_id} is writing its output and can no longer be cancelled"
                )
            raise JobFinished(f"job {job_id} has already {outcome.previous.value}")
        self.count(JobState.CANCELLED)
        logger.info("job %s cancelled by %s", job_id, owner)
        return self.get(owner, job_id)

    def count(self, state: JobState) -> None:
        """Count a job entering `state` in `mtc_jobs_total`, when metrics are kept."""
        if self.jobs_total is not None:
            self.jobs_total.labels(state=state.value).inc()

    def _owned(self, owner: str, job_id: str) -> JobRecord:
        # Another key's job answers exactly like a missing one: ids are not disclosed.
        job = self.store.get(job_id) if _is_job_id(job_id) else None
        if job is None or job.owner != owner:
            raise JobNotFound(f"no job with id {job_id}")
        return job

    def _needs_staging(self, size: int) -> bool:
        """Whether `size` bytes of inline inputs are too large for the job store (go to S3)."""
        limit = self.settings.max_stored_inline_bytes
        if size <= limit:
            return False
        if self.settings.staging_prefix is None:
            raise BatchTooLarge(
                f"the inline inputs take {size} bytes; the job store keeps at most {limit} "
                "(MTC_JOBS_MAX_STORED_INLINE_BYTES): upload them to S3 as a CSV or JSON Lines "
                "file and pass its input_uri"
            )
        return True

    def _stage(self, job_id: str, texts: list[str]) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.objects.stage_inputs(self.settings.staging_prefix or "", job_id, texts)
        except (BotoCoreError, ClientError) as error:
            # Where the staging bucket is stays in the log, not in the answer.
            logger.warning("job %s: could not stage its inline inputs: %s", job_id, error)
            raise JobQueueUnavailable(
                "the inline inputs could not be put aside; try again later"
            ) from None

    def _admit(self, owner: str, job_id: str, *, rows: int, stored_bytes: int) -> None:
        """Count the job against its owner's limits, or refuse it with 429 naming the limit."""
        limits = OwnerLimits(
            max_jobs=self.settings.max_active_jobs_per_owner,
            max_rows=self.settings.max_active_rows_per_owner,
            max_bytes=self.settings.max_held_bytes_per_owner,
        )
        with _store_errors_as_unavailable():
            self._check_store_room()
            admission = self.store.admit(
                owner, job_id, rows=rows, stored_bytes=stored_bytes, limits=limits
            )
            if admission.passed_limit is not None and self.store.reconcile_owner(owner):
                # Some jobs had ended without being released (a worker died in between).
                admission = self.store.admit(
                    owner, job_id, rows=rows, stored_bytes=stored_bytes, limits=limits
                )
        if admission.passed_limit is None:
            return
        refusals = {
            "jobs": f"this key has {admission.active_jobs} queued or running jobs, the most it "
            f"may have (MTC_JOBS_MAX_ACTIVE_JOBS_PER_OWNER is {limits.max_jobs}); submit "
            "again when one has finished",
            "rows": f"this job's {rows} items and the {admission.active_rows} of this key's "
            f"queued and running jobs pass the {limits.max_rows} a key may have in flight "
            "(MTC_JOBS_MAX_ACTIVE_ROWS_PER_OWNER); submit again when some have finished",
            "bytes": f"this job's {stored_bytes} bytes of inline inputs and the "
            f"{admission.held_bytes} bytes this key holds in the job store (inline inputs "
            "of unfinished jobs, results kept for GET) pass its limit of "
            f"{limits.max_bytes} (MTC_JOBS_MAX_HELD_BYTES_PER_OWNER); submit again when "
            "jobs have finished or their results expired, or upload the inputs to S3 and "
            "pass input_uri",
        }
        raise JobLimitReached(refusals[admission.passed_limit])

    def _check_store_room(self) -> None:
        """Refuse new jobs while the store is near its memory limit: per-key limits bound
        each key, not how many keys submit, and a full `noeviction` store could no longer
        finish or cancel the jobs it holds."""
        used, maximum = self.store.memory_use()
        ratio = self.settings.store_admission_ratio
        if maximum > 0 and used >= ratio * maximum:
            raise JobStoreFull(
                f"the job store holds {used / maximum:.0%} of its memory limit; new jobs are "
                f"accepted below {ratio:.0%} (MTC_JOBS_STORE_ADMISSION_RATIO): retry later"
            )

    def _check_task(self, task: str) -> None:
        if task not in self.settings.upstreams:
            known = ", ".join(sorted(self.settings.upstreams))
            raise UnknownTask(f"unknown task '{task}'; tasks jobs can run: {known}")
        kind = self.settings.kind_of(task)
        if not kind_named(kind).batch_jobs:
            runnable = sorted(name for name, spec in model_kinds().items() if spec.batch_jobs)
            raise InvalidJob(
                f"task '{task}' is of kind '{kind}'; jobs run tasks of kind "
                f"{', '.join(runnable)} only"
            )

    def _check_inputs(
        self, request: JobRequest, scope: S3Scope
    ) -> tuple[int | None, InputFormat | None]:
        if request.inputs is not None:
            if len(request.inputs) > self.settings.max_inline_items:
                raise BatchTooLarge(
                    f"{len(request.inputs)} inline inputs in one job; the limit is "
                    f"{self.settings.max_inline_items} (MTC_JOBS_MAX_INLINE_ITEMS): put "
                    "larger batches in a file and give its input_uri"
                )
            for index, text in enumerate(request.inputs):
                if len(text) > self.settings.max_text_chars:
                    raise ItemTooLarge(
                        f"inputs[{index}] has {len(text)} characters; the limit is "
                        f"{self.settings.max_text_chars} (MTC_JOBS_MAX_TEXT_CHARS)"
                    )
                if LONE_SURROGATE.search(text):
                    raise InvalidInput(
                        f"inputs[{index}] is not valid Unicode (a lone surrogate escape)"
                    )
            return len(request.inputs), None
        input_uri = request.input_uri or ""
        target = self._location(lambda: self.objects.check_input(input_uri, scope))
        input_format = request.input_format or format_from_name(target.key)
        if input_format is None:
            raise InvalidJob(
                f"cannot tell the format of {target.uri}: name it .csv, .jsonl or .ndjson, "
                "or give input_format"
            )
        return None, input_format

    def _check_output(self, request: JobRequest, total: int | None, scope: S3Scope) -> None:
        if request.output_uri is None:
            if total is not None and total > self.settings.max_inline_results:
                raise InvalidJob(
                    f"{total} inputs, but a job without an output_uri returns at most "
                    f"{self.settings.max_inline_results} results (MTC_JOBS_MAX_INLINE_RESULTS)"
                )
            return
        output_uri = request.output_uri
        target = self._location(lambda: self.objects.check_output(output_uri, scope))
        if output_format_of(target.key) is None:
            raise InvalidJob(f"the output_uri must end in .jsonl or .csv, got {target.uri}")

    @staticmethod
    def _location(check: Callable[[], S3Object]) -> S3Object:
        try:
            return check()
        except InvalidInput as error:
            # A URI that names no object is a bad field value, like the schema's own 422s.
            raise InvalidJob(error.detail) from None


@contextlib.contextmanager
def _store_errors_as_unavailable() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as error:
        # Where the store lives stays in the log, not in the answer.
        logger.warning("job store error: %s", error)
        raise JobQueueUnavailable("the job store is unreachable; try again later") from None


def view_of(job: JobRecord, results: list[dict[str, object]] | None) -> JobView:
    """The API's view of a stored job."""
    return JobView(
        id=job.id,
        task=job.task,
        state=job.state.value,
        progress=JobProgress(done=job.done, total=job.total),
        created_at=_timestamp(job.created_at),
        started_at=_timestamp(job.started_at) if job.started_at is not None else None,
        finished_at=_timestamp(job.finished_at) if job.finished_at is not None else None,
        error=job.error,
        input_uri=job.input_uri,
        output_uri=job.output_uri,
        results=None
        if results is None
        else [JobResult.model_validate(result) for result in results],
    )


def _timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def job_backends(settings: JobsSettings) -> tuple[JobStore, Celery, JobObjects]:
    """The settings' job store, Celery app (the broker) and S3 access, connected lazily:
    what the gateway and the worker both hold."""
    store = JobStore.from_url(
        settings.store_url,
        retention_seconds=settings.retention_seconds,
        result_retention_seconds=settings.result_retention_seconds,
    )
    objects = JobObjects(
        input_allowlist=settings.input_allowlist,
        output_allowlist=settings.output_allowlist,
        endpoint_url=settings.s3_endpoint_url,
    )
    return store, create_celery_app(settings), objects


def create_job_desk(settings: JobsSettings, jobs_total: Counter | None = None) -> JobDesk:
    """A job desk connected (lazily) to the settings' store and broker."""
    return JobDesk(settings, *job_backends(settings), jobs_total)
