"""The job store on a real redis-server: state transitions, idempotent chunk writes, the
lease, and retention on every key of a job."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from services.jobs.store import JobRecord, JobState, JobStore

pytestmark = pytest.mark.integration

RETENTION = 3600


@pytest.fixture
def store(redis_server: tuple[subprocess.Popen[bytes], int]) -> Iterator[JobStore]:
    _, port = redis_server
    store = JobStore.from_url(f"redis://127.0.0.1:{port}/0", retention_seconds=RETENTION)
    yield store
    store.close()


def queued(store: JobStore, job_id: str = "a" * 32, *, output: bool = False) -> str:
    store.create(
        JobRecord(
            id=job_id,
            owner="alice",
            task="sentiment",
            state=JobState.QUEUED,
            created_at=time.time(),
            chunk_size=2,
            total=3,
            output_uri="s3://batch/out/a.jsonl" if output else None,
        ),
        ["one", "two", "three"],
    )
    return job_id


def test_a_job_is_stored_with_its_inputs(store: JobStore) -> None:
    job_id = queued(store)

    job = store.get(job_id)

    assert job is not None
    assert (job.owner, job.task, job.state, job.total, job.done) == (
        "alice",
        "sentiment",
        JobState.QUEUED,
        3,
        0,
    )
    assert store.inline_inputs(job_id) == ["one", "two", "three"]
    assert store.get("b" * 32) is None


def test_start_marks_running_once_and_counts_deliveries(store: JobStore) -> None:
    job_id = queued(store)

    first = store.start(job_id, now=100.0)
    again = store.start(job_id, now=200.0)

    job = store.get(job_id)
    assert job is not None
    assert (first.changed, first.previous) == (True, JobState.QUEUED)
    assert (again.changed, again.previous) == (True, JobState.RUNNING)
    assert (job.state, job.started_at, job.deliveries) == (JobState.RUNNING, 100.0, 2)


def test_a_chunk_stored_twice_is_kept_and_counted_once(store: JobStore) -> None:
    job_id = queued(store)
    store.start(job_id)

    stored = store.save_chunk(job_id, 1, [{"index": 2, "label": "x"}])
    repeated = store.save_chunk(job_id, 1, [{"index": 2, "label": "other"}])
    store.save_chunk(job_id, 0, [{"index": 0}, {"index": 1}])

    job = store.get(job_id)
    assert job is not None
    assert (stored, repeated, job.done) == (True, False, 3)
    assert store.saved_chunks(job_id) == {0, 1}
    assert store.results(job_id) == [{"index": 0}, {"index": 1}, {"index": 2, "label": "x"}]


def test_a_chunk_of_an_expired_job_is_not_stored(store: JobStore) -> None:
    with pytest.raises(LookupError):
        store.save_chunk("c" * 32, 0, [{"index": 0}])

    assert store.client.exists(store.chunks_key("c" * 32)) == 0


def test_success_keeps_inline_results_and_drops_inputs(store: JobStore) -> None:
    job_id = queued(store)
    store.start(job_id)
    store.save_chunk(job_id, 0, [{"index": 0}])

    outcome = store.succeed(job_id, keep_results=True, now=300.0)

    job = store.get(job_id)
    assert job is not None
    assert outcome.changed
    assert (job.state, job.finished_at) == (JobState.SUCCEEDED, 300.0)
    assert store.results(job_id) == [{"index": 0}]
    assert store.client.exists(store.inputs_key(job_id)) == 0


def test_success_with_an_output_object_drops_the_stored_results(store: JobStore) -> None:
    job_id = queued(store, output=True)
    store.start(job_id)
    store.save_chunk(job_id, 0, [{"index": 0}])

    store.succeed(job_id, keep_results=False)

    assert store.results(job_id) == []


def test_cancel_wins_only_before_the_end_and_before_the_output_is_written(
    store: JobStore,
) -> None:
    running = queued(store, "1" * 32)
    store.start(running)
    writing = queued(store, "2" * 32, output=True)
    store.start(writing)
    store.begin_output(writing)
    done = queued(store, "3" * 32)
    store.start(done)
    store.succeed(done, keep_results=True)

    cancelled = store.cancel(running)
    too_late = store.cancel(writing)
    finished = store.cancel(done)
    missing = store.cancel("4" * 32)

    assert (cancelled.changed, cancelled.previous) == (True, JobState.RUNNING)
    assert (too_late.changed, too_late.finalizing) == (False, True)
    assert (finished.changed, finished.previous) == (False, JobState.SUCCEEDED)
    assert (missing.changed, missing.previous) == (False, None)
    assert store.state(running) == JobState.CANCELLED
    assert store.state(writing) == JobState.RUNNING
    # A worker that comes back to a cancelled job neither starts nor finishes it.
    assert not store.start(running).changed
    assert not store.succeed(running, keep_results=True).changed
    assert store.state(running) == JobState.CANCELLED


def test_failure_records_the_reason_and_drops_partial_results(store: JobStore) -> None:
    job_id = queued(store)
    store.start(job_id)
    store.save_chunk(job_id, 0, [{"index": 0}])

    store.fail(job_id, "input row 3: too long")

    job = store.get(job_id)
    assert job is not None
    assert (job.state, job.error) == (JobState.FAILED, "input row 3: too long")
    assert store.results(job_id) == []


def test_every_key_of_a_job_expires_after_the_retention(store: JobStore) -> None:
    job_id = queued(store)
    store.start(job_id)
    store.save_chunk(job_id, 0, [{"index": 0}])

    keys = [store.job_key(job_id), store.inputs_key(job_id), store.chunks_key(job_id)]
    ttls = [store.client.ttl(key) for key in keys]

    assert all(0 < ttl <= RETENTION for ttl in ttls), ttls


def test_the_lease_is_held_by_one_worker_until_released_or_expired(store: JobStore) -> None:
    job_id = queued(store)

    taken = store.acquire_lease(job_id, "worker-1", 30)
    refused = store.acquire_lease(job_id, "worker-2", 30)
    renewed_by_other = store.renew_lease(job_id, "worker-2", 30)
    store.release_lease(job_id, "worker-2")  # not theirs: nothing happens
    still_held = store.lease_remaining_seconds(job_id)
    store.release_lease(job_id, "worker-1")
    retaken = store.acquire_lease(job_id, "worker-2", 30)

    assert (taken, refused, renewed_by_other, retaken) == (True, False, False, True)
    assert 0 < still_held <= 30
