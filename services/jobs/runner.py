"""Running one job: read its inputs, classify them chunk by chunk, store each chunk's
results, then write the output or keep the results for `GET`.

An input file is read twice as a stream, never held whole: once to check and count its
rows, then chunk by chunk to classify them; the output is streamed from the stored chunks
to S3 (`JobObjects.write_output_parts`). A job holds a chunk of rows and a part of its
output at a time, whatever the size of its file.

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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import redis

from services.jobs.errors import JobFailure
from services.jobs.inputs import InputLimits, InputRow, read_rows
from services.jobs.metrics import WorkerMetrics
from services.jobs.outputs import CONTENT_TYPES, OutputRenderer, output_format_of, result_rows
from services.jobs.prediction_client import PredictionClient
from services.jobs.s3_objects import REPLACED_INPUT, JobObjects
from services.jobs.settings import JobsSettings
from services.jobs.store import FINAL_STATES, JobRecord, JobState, JobStore, Transition
from services.wire.s3_locations import S3Scope

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


@dataclass(frozen=True)
class InputSurvey:
    """What the first reading of a job's input found."""

    total: int
    with_ids: bool
    """Some row has an id (the CSV output then has an `id` column)."""
    etag: str | None
    """The version of the input object read (None for inputs in the job store)."""


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


@dataclass
class JobRunner:
    """Runs jobs for one worker process."""

    settings: JobsSettings
    store: JobStore
    predictions: PredictionClient
    objects: JobObjects
    metrics: WorkerMetrics
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when the worker shuts down: running jobs stop at the next chunk."""

    def __post_init__(self) -> None:
        self.limits = InputLimits(
            max_rows=self.settings.max_input_rows, max_text_chars=self.settings.max_text_chars
        )

    def run(self, job_id: str) -> RunOutcome:
        """Run (or resume) a job if no other worker is running it."""
        job = self.store.get(job_id)
        if job is None:
            logger.warning("job %s: not in the store (expired or never stored); skipped", job_id)
            return Finished()
        if job.finished:
            self._discard_staged_inputs(job)
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
        try:
            return self._run_started(job_id, heartbeat, started)
        finally:
            # Back from the job by any outcome or exception: only a worker that dies never
            # tells the store so.
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
            outcome = self._classify(job, heartbeat)
        except JobFailure as failure:
            logger.info("job %s failed: %s", job_id, failure)
            self.fail(job_id, str(failure))
            outcome = Finished()
        if isinstance(outcome, Finished) and self.store.state(job_id) in FINAL_STATES:
            self._discard_staged_inputs(job)
        return outcome

    def _classify(self, job: JobRecord, heartbeat: LeaseHeartbeat) -> RunOutcome:
        survey = self._survey_input(job)
        spans = chunk_spans(survey.total, job.chunk_size)
        todo = pending_chunks(spans, self.store.saved_chunks(job.id))
        if len(todo) < len(spans):
            logger.info(
                "job %s: resuming with %d of %d chunks done",
                job.id,
                len(spans) - len(todo),
                len(spans),
            )
        if todo:
            pending = set(todo)
            with self._input_rows(job, survey.etag) as (rows, _):
                for index, chunk in enumerate(_batches(rows, job.chunk_size)):
                    if index not in pending:
                        continue
                    if (interruption := self._interruption(job.id, heartbeat)) is not None:
                        return interruption
                    self._compute_chunk(job, index, spans[index], chunk)
                    if index == todo[-1]:
                        break
        if (interruption := self._interruption(job.id, heartbeat)) is not None:
            return interruption
        self._finish(job, survey)
        return Finished()

    def fail(self, job_id: str, reason: str) -> None:
        """Fail a job that has not ended yet, with `reason` as its error."""
        if self.store.fail(job_id, reason).changed:
            self.metrics.entered(JobState.FAILED)

    @contextlib.contextmanager
    def _input_rows(
        self, job: JobRecord, etag: str | None
    ) -> Iterator[tuple[Iterator[InputRow], str | None]]:
        """The job's input rows as a stream, and the version of the object they come from
        (None in the job store); an object in S3 must still be version `etag` if given."""
        if job.input_uri is None and job.staged_input_uri is None:
            try:
                texts = self.store.inline_inputs(job.id)
            except LookupError:
                raise JobFailure("the job's inputs are no longer stored") from None
            yield (InputRow(text) for text in texts), None
            return
        if job.input_uri is not None:
            uri, scope, file_format = job.input_uri, _scope_of(job), job.input_format or "csv"
        else:
            uri, scope, file_format = job.staged_input_uri or "", None, "jsonl"
        stream = self.objects.open_input(
            uri, max_bytes=self.settings.input_bytes_limit, scope=scope, etag=etag
        )
        try:
            yield read_rows(stream.read, file_format, self.limits), stream.etag
        finally:
            stream.close()

    def _survey_input(self, job: JobRecord) -> InputSurvey:
        """Read the whole input once, checking every row and counting them, before any is
        classified: a bad row fails the job before work is spent on it."""
        with self._input_rows(job, None) as (rows, read_etag):
            total, with_ids = 0, False
            for row in rows:
                total += 1
                with_ids = with_ids or row.id is not None
        # Only the caller's file is versioned in the record; staged inputs never change.
        etag = read_etag if job.input_uri is not None else None
        if job.input_etag is not None and etag != job.input_etag:
            raise JobFailure(REPLACED_INPUT)
        if job.output_uri is None and total > self.settings.max_inline_results:
            raise JobFailure(
                f"the input has {total} rows; a job without an output_uri returns at "
                f"most {self.settings.max_inline_results} results "
                "(MTC_JOBS_MAX_INLINE_RESULTS): give an output_uri"
            )
        if total == 0:
            raise JobFailure("the input has no rows to classify")
        if job.total is not None and job.total != total:
            raise JobFailure("the input changed while the job ran; submit a new job")
        if job.total is None:
            self._count_rows_of_owner(job, total)
        if job.total is None or etag != job.input_etag:
            self.store.record_input(job.id, total=total, etag=etag)
        return InputSurvey(total, with_ids, etag)

    def _count_rows_of_owner(self, job: JobRecord, total: int) -> None:
        """A file's rows, known only now, join its owner's budget of rows in flight."""
        budget = self.settings.max_active_rows_per_owner
        others = self.store.count_rows(job.owner, job.id, rows=total, max_rows=budget)
        if others is not None:
            raise JobFailure(
                f"the input has {total} rows and the key's other queued or running jobs "
                f"{others}: more than the {budget} rows a key may have in flight "
                "(MTC_JOBS_MAX_ACTIVE_ROWS_PER_OWNER); submit it again once they have "
                "finished, or split it"
            )

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
        self, job: JobRecord, index: int, span: range, chunk: Sequence[InputRow]
    ) -> None:
        try:
            predictions = self.predictions.classify(job.task, [row.text for row in chunk])
        except JobFailure as failure:
            raise JobFailure(
                f"rows {span.start + 1}-{span.stop} (chunk {index}): {failure}"
            ) from None
        results = result_rows(span.start, chunk, predictions)
        if self.store.save_chunk(job.id, index, results):
            self.metrics.predicted(job.task, len(results))

    def _finish(self, job: JobRecord, survey: InputSurvey) -> None:
        if job.output_uri is None:
            results = self.store.results(job.id)
            if len(results) != survey.total:
                raise RuntimeError(
                    f"job {job.id}: {len(results)} results stored for {survey.total} items"
                )
            finished = self.store.succeed(job.id, keep_results=True)
        else:
            file_format = output_format_of(job.output_uri) or "jsonl"
            if not self.store.begin_output(job.id).changed:
                return  # cancelled just before
            renderer = OutputRenderer(file_format, with_ids=survey.with_ids)
            self.objects.write_output_parts(
                job.output_uri,
                self._output_pieces(job, survey.total, renderer),
                CONTENT_TYPES[file_format],
                scope=_scope_of(job),
                job_id=job.id,
            )
            finished = self.store.succeed(job.id, keep_results=False)
        if finished.changed:
            self.metrics.entered(JobState.SUCCEEDED)
            logger.info("job %s succeeded: %d items", job.id, survey.total)

    def _output_pieces(
        self, job: JobRecord, total: int, renderer: OutputRenderer
    ) -> Iterator[bytes]:
        """The output file, a stored chunk at a time; raises (and so aborts the upload)
        when a chunk is missing."""
        yield renderer.header()
        written = 0
        for index in range(len(chunk_spans(total, job.chunk_size))):
            results = self.store.chunk_results(job.id, index)
            if results is None:
                raise RuntimeError(f"job {job.id}: chunk {index} is not stored")
            written += len(results)
            yield renderer.rows(results)
        if written != total:
            raise RuntimeError(f"job {job.id}: {written} results stored for {total} items")

    def _discard_staged_inputs(self, job: JobRecord) -> None:
        if job.staged_input_uri is not None:
            self.objects.delete_staged(job.staged_input_uri)


def _batches(rows: Iterable[InputRow], size: int) -> Iterator[list[InputRow]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def _scope_of(job: JobRecord) -> S3Scope:
    """The owner's S3 locations stored with the job (`JobStore.get` always gives one)."""
    return job.s3_scope if job.s3_scope is not None else S3Scope(tenant=job.owner)
