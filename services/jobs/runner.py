"""Running one job: read its inputs, classify them chunk by chunk, store each chunk's
results, then write the output or keep the results for `GET`.

Safe to run again for the same job at any point (a redelivered message, a worker that
died mid-job): chunks already stored are skipped, a chunk stored twice counts once, and
only the holder of the job's lease runs it, so two workers never work on it together.
Knows nothing of Celery (see `services.jobs.worker`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import redis

from services.jobs.errors import JobFailure
from services.jobs.inputs import InputLimits, InputRow, parse_input
from services.jobs.metrics import WorkerMetrics
from services.jobs.outputs import CONTENT_TYPES, output_format_of, render_output, result_rows
from services.jobs.prediction_client import PredictionClient
from services.jobs.s3_objects import JobObjects
from services.jobs.settings import JobsSettings
from services.jobs.store import JobRecord, JobState, JobStore, Transition

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finished:
    """Nothing more to do with this delivery: the job ended, or is not ours to run."""


@dataclass(frozen=True)
class Busy:
    """Another worker holds the job's lease; try again once it may have expired."""

    retry_in_seconds: float


@dataclass(frozen=True)
class Interrupted:
    """The worker is shutting down: the job stopped between chunks and must be queued
    again to resume elsewhere."""


RunOutcome = Finished | Busy | Interrupted


def chunk_spans(total: int, chunk_size: int) -> list[range]:
    """Index ranges of the chunks of `total` items: chunk i is items [i*size, (i+1)*size)."""
    return [range(start, min(start + chunk_size, total)) for start in range(0, total, chunk_size)]


def pending_chunks(spans: Sequence[range], saved: set[int]) -> list[int]:
    """Indices of the chunks still to compute, in input order."""
    return [index for index in range(len(spans)) if index not in saved]


class LeaseHeartbeat:
    """Renews a job's lease every third of its lifetime while the job runs; `lost` is set
    when the lease could not be kept (another worker may take the job over)."""

    def __init__(self, store: JobStore, job_id: str, token: str, lease_seconds: float) -> None:
        self.store = store
        self.job_id = job_id
        self.token = token
        self.lease_seconds = lease_seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{job_id[:8]}", daemon=True)

    def start(self) -> None:
        """Start renewing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the caller releases the lease)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                renewed = self.store.renew_lease(self.job_id, self.token, self.lease_seconds)
            except Exception as error:  # noqa: BLE001 - try again; the lease may still hold
                logger.warning("job %s: could not renew its lease: %s", self.job_id, error)
                continue
            if not renewed:
                logger.error("job %s: lease lost; another worker may take the job", self.job_id)
                self.lost.set()
                return


class JobRunner:
    """Runs jobs for one worker process."""

    def __init__(
        self,
        settings: JobsSettings,
        store: JobStore,
        predictions: PredictionClient,
        objects: JobObjects,
        metrics: WorkerMetrics,
        stopping: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.predictions = predictions
        self.objects = objects
        self.metrics = metrics
        self.stopping = stopping or threading.Event()
        """Set when the worker shuts down: running jobs stop at the next chunk."""
        self.limits = InputLimits(
            max_rows=settings.max_input_rows, max_text_chars=settings.max_text_chars
        )

    def run(self, job_id: str) -> RunOutcome:
        """Run (or resume) a job if no other worker is running it."""
        job = self.store.get(job_id)
        if job is None:
            logger.warning("job %s: not in the store (expired or never stored); skipped", job_id)
            return Finished()
        if job.finished:
            return Finished()
        token = uuid.uuid4().hex
        if not self.store.acquire_lease(job_id, token, self.settings.lease_seconds):
            remaining = self.store.lease_remaining_seconds(job_id)
            logger.info("job %s: another worker holds it for %.1f s more", job_id, remaining)
            return Busy(retry_in_seconds=max(1.0, remaining + 0.5))
        heartbeat = LeaseHeartbeat(self.store, job_id, token, self.settings.lease_seconds)
        heartbeat.start()
        self.metrics.running.inc()
        try:
            return self._run_leased(job_id, heartbeat)
        finally:
            self.metrics.running.dec()
            heartbeat.stop()
            self.store.release_lease(job_id, token)

    def _run_leased(self, job_id: str, heartbeat: LeaseHeartbeat) -> RunOutcome:
        started = self.store.start(job_id)
        if not started.changed:
            return Finished()  # cancelled (or finished) since the message was sent
        with self._delivery(job_id):
            return self._run_started(job_id, heartbeat, started)

    @contextlib.contextmanager
    def _delivery(self, job_id: str) -> Iterator[None]:
        """While the started job runs in this worker; leaving (by any outcome or exception)
        tells the store the worker came back. Only a worker that dies never leaves."""
        try:
            yield
        finally:
            try:
                self.store.end_delivery(job_id)
            except redis.RedisError as error:
                logger.warning("job %s: could not record the end of its run: %s", job_id, error)

    def _run_started(
        self, job_id: str, heartbeat: LeaseHeartbeat, started: Transition
    ) -> RunOutcome:
        deaths = started.unfinished_deliveries
        if deaths >= self.settings.max_deliveries:
            # Delivered again after each death; each time the worker died with it.
            reason = (
                f"the job was started {deaths} times by a worker that died while running it "
                "(killed, out of memory or crashed), so it is not started again "
                f"(MTC_JOBS_MAX_DELIVERIES is {self.settings.max_deliveries})"
            )
            logger.error("job %s failed: %s", job_id, reason)
            self.fail(job_id, reason)
            return Finished()
        if started.previous == JobState.QUEUED:
            self.metrics.entered(JobState.RUNNING)
        job = self.store.get(job_id)
        if job is None:
            return Finished()
        try:
            rows = self._read_inputs(job)
            spans = chunk_spans(len(rows), job.chunk_size)
            todo = pending_chunks(spans, self.store.saved_chunks(job_id))
            if len(todo) < len(spans):
                logger.info(
                    "job %s: resuming with %d of %d chunks done",
                    job_id,
                    len(spans) - len(todo),
                    len(spans),
                )
            for index in todo:
                interruption = self._interruption(job_id, heartbeat)
                if interruption is not None:
                    return interruption
                self._compute_chunk(job, index, spans[index], rows)
            interruption = self._interruption(job_id, heartbeat)
            if interruption is not None:
                return interruption
            self._finish(job, len(rows))
        except JobFailure as failure:
            logger.info("job %s failed: %s", job_id, failure)
            self.fail(job_id, str(failure))
        return Finished()

    def fail(self, job_id: str, reason: str) -> None:
        """Fail a job that has not ended yet, with `reason` as its error."""
        if self.store.fail(job_id, reason).changed:
            self.metrics.entered(JobState.FAILED)

    def _read_inputs(self, job: JobRecord) -> list[InputRow]:
        if job.input_uri is None:
            try:
                rows = [InputRow(text) for text in self.store.inline_inputs(job.id)]
            except LookupError:
                raise JobFailure("the job's inputs are no longer stored") from None
            etag = None
        else:
            fetched = self.objects.read_input(
                job.input_uri, max_bytes=self.settings.max_input_bytes
            )
            if job.input_etag is not None and fetched.etag != job.input_etag:
                raise JobFailure(
                    "the input object was replaced while the job ran; submit a new job"
                )
            rows = parse_input(fetched.data, job.input_format or "csv", self.limits)
            etag = fetched.etag
        if job.output_uri is None and len(rows) > self.settings.max_inline_results:
            raise JobFailure(
                f"the input has {len(rows)} rows; a job without an output_uri returns at "
                f"most {self.settings.max_inline_results} results "
                "(MTC_JOBS_MAX_INLINE_RESULTS): give an output_uri"
            )
        if not rows:
            raise JobFailure("the input has no rows to classify")
        if job.total is not None and job.total != len(rows):
            raise JobFailure("the input changed while the job ran; submit a new job")
        if job.total is None or etag != job.input_etag:
            self.store.record_input(job.id, total=len(rows), etag=etag)
        return rows

    def _interruption(self, job_id: str, heartbeat: LeaseHeartbeat) -> RunOutcome | None:
        if heartbeat.lost.is_set():
            # Another worker may have taken the job over, or Redis was away for a while:
            # come back later rather than drop the message, in case nobody runs the job.
            return Busy(retry_in_seconds=self.settings.lease_seconds)
        state = self.store.state(job_id)
        if state != JobState.RUNNING:
            logger.info("job %s: stopped (%s)", job_id, state)
            return Finished()
        if self.stopping.is_set():
            logger.info("job %s: worker shutting down; the job goes back to the queue", job_id)
            return Interrupted()
        return None

    def _compute_chunk(
        self, job: JobRecord, index: int, span: range, rows: Sequence[InputRow]
    ) -> None:
        chunk = rows[span.start : span.stop]
        try:
            predictions = self.predictions.classify(job.task, [row.text for row in chunk])
        except JobFailure as failure:
            raise JobFailure(
                f"rows {span.start + 1}-{span.stop} (chunk {index}): {failure}"
            ) from None
        results = result_rows(span.start, chunk, predictions)
        if self.store.save_chunk(job.id, index, results):
            self.metrics.predicted(job.task, len(results))

    def _finish(self, job: JobRecord, total: int) -> None:
        results = self.store.results(job.id)
        if len(results) != total:
            raise RuntimeError(f"job {job.id}: {len(results)} results stored for {total} items")
        if job.output_uri is None:
            finished = self.store.succeed(job.id, keep_results=True)
        else:
            file_format = output_format_of(job.output_uri) or "jsonl"
            if not self.store.begin_output(job.id).changed:
                return  # cancelled just before
            body = render_output(results, file_format)
            self.objects.write_output(job.output_uri, body, CONTENT_TYPES[file_format])
            finished = self.store.succeed(job.id, keep_results=False)
        if finished.changed:
            self.metrics.entered(JobState.SUCCEEDED)
            logger.info("job %s succeeded: %d items", job.id, total)
