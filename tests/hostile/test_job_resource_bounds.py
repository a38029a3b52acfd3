"""What batch jobs at their limits cost, measured on real processes: the jobs worker's
peak memory reading a large CSV from S3, and the job store's memory when one API key
submits the largest inline jobs until it is refused.

Processes on 127.0.0.1 and free ports: redis-server (as deployed: `maxmemory 256mb`,
`noeviction`), the moto S3 server and the worker (`python -m services.jobs.worker`); the
text service is a scripted one in a thread of the test, and jobs are submitted through the
gateway's job desk in the test. Memory is the peak of the worker's resident memory above
its level after warm-up (`VmHWM`, `tests.support.process_memory`) and Redis's own count,
`used_memory` of `INFO memory`. Bounds are named constants, several times what was
measured on a 2-core machine (tests/README.md, "Batch jobs under abuse"); `pytest -s`
prints the figures.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import redis

from services.core.errors import MtcError
from services.jobs.contracts import JobRequest
from services.jobs.errors import JobLimitReached
from services.jobs.settings import JobsSettings
from services.jobs.store import JobRecord
from services.jobs.submission import JobDesk, create_job_desk
from services.wire.s3_locations import S3Scope
from tests.support.in_thread_servers import serving
from tests.support.job_text_service import JobTextService
from tests.support.jobs import AWS_TEST_ENV, jobs_env, s3_client, start_jobs_worker, start_moto
from tests.support.process_memory import peak_growth, rss_mib
from tests.support.processes import free_port, start, stop, wait_for_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MIB = 1024 * 1024
BUCKET = "batch"
EVERY_LOCATION = S3Scope(tenant=None)

LARGE_CSV_ROWS = 120_000
"""Rows of the large input: 1,000-character texts, about 121 MB (the old worker, which read
the file whole, peaked 740 MiB above its start on it; 170 MB took it past 1 GiB)."""
LARGE_CSV_CHUNK = 512
"""Texts per request to the text service in that job."""
MAX_WORKER_GROWTH_MIB = 100.0
"""Peak growth of the worker's memory while it runs the large CSV job: a block of the file,
a chunk of rows, a part of the output and the parser's own, whatever the file's size."""
MAX_LARGE_JOB_SECONDS = 180.0
"""Wall time of the large job (a guard against a hang, not a claim about speed)."""

STORE_MAXMEMORY = "256mb"
"""The jobs Redis's `maxmemory` in the manifests."""
MAX_STORE_GROWTH_PER_KEY_MIB = 12.0
"""Growth of the job store's `used_memory` from one key's jobs held at once: its inline
inputs are capped at `MTC_JOBS_MAX_HELD_BYTES_PER_OWNER` (8 MiB), plus their records."""


@dataclass
class Stack:
    """Redis, S3, the worker and a desk to submit jobs with."""

    desk: JobDesk
    store_client: redis.Redis
    s3: S3Client
    worker: subprocess.Popen[bytes]
    costs: list[str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("job-resource-bounds")
    redis_port, moto_port, metrics_port = free_port(), free_port(), free_port()
    s3_endpoint = f"http://127.0.0.1:{moto_port}"
    processes: list[subprocess.Popen[bytes]] = []
    costs: list[str] = []
    monkeypatch = pytest.MonkeyPatch()
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    try:
        processes.append(
            start(
                [
                    *("redis-server", "--bind", "127.0.0.1", "--port", str(redis_port)),
                    *("--save", "", "--appendonly", "no"),
                    *("--maxmemory", STORE_MAXMEMORY, "--maxmemory-policy", "noeviction"),
                ],
                log=logs / "redis.log",
            )
        )
        wait_for_port(redis_port, processes[-1])
        processes.append(start_moto(moto_port, logs / "moto.log"))
        s3 = s3_client(s3_endpoint)
        s3.create_bucket(Bucket=BUCKET)
        with serving(JobTextService().create_app()) as service_url:
            env = jobs_env(
                broker_url=f"redis://127.0.0.1:{redis_port}/0",
                upstreams={"sentiment": service_url},
                metrics_port=metrics_port,
                metrics_host="127.0.0.1",
                input_allowlist=[f"{BUCKET}/in/"],
                output_allowlist=[f"{BUCKET}/out/"],
                chunk_size=LARGE_CSV_CHUNK,
                concurrency=1,
                max_active_rows_per_owner=LARGE_CSV_ROWS,
            )
            worker = start_jobs_worker(env, logs / "worker.log", s3_endpoint=s3_endpoint)
            processes.append(worker)
            settings = JobsSettings(
                broker_url=f"redis://127.0.0.1:{redis_port}/0",
                upstreams={"sentiment": service_url},
                input_allowlist=[f"{BUCKET}/in/"],
                output_allowlist=[f"{BUCKET}/out/"],
                chunk_size=LARGE_CSV_CHUNK,
                max_active_rows_per_owner=LARGE_CSV_ROWS,
                s3_endpoint_url=s3_endpoint,
            )
            desk = create_job_desk(settings)
            store_client = redis.Redis(port=redis_port)
            yield Stack(desk, store_client, s3, worker, costs)
            print("\n".join(["", "cost of each attack:", *costs]))
            store_client.close()
            desk.close()
    finally:
        monkeypatch.undo()
        for process in reversed(processes):
            stop(process, kill=True)


def wait_until_finished(stack: Stack, job_id: str, timeout: float) -> JobRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stack.desk.store.get(job_id)
        assert job is not None
        assert stack.worker.poll() is None, "the worker died"
        if job.finished:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def large_csv() -> bytes:
    text = ("a good film, " * 80)[:1000]
    return ("id,text\n" + "".join(f"r{n},{text}\n" for n in range(LARGE_CSV_ROWS))).encode()


def test_a_large_csv_job_keeps_the_worker_within_its_bound(stack: Stack) -> None:
    body = large_csv()
    size = len(body)
    stack.s3.put_object(Bucket=BUCKET, Key="in/large.csv", Body=body)
    del body
    warm_up = stack.desk.submit(
        "warm-up", JobRequest(task="sentiment", inputs=["good", "bad"]), EVERY_LOCATION
    )
    assert wait_until_finished(stack, warm_up.id, 60).error is None
    time.sleep(1.0)
    baseline = rss_mib(stack.worker.pid)

    with peak_growth([stack.worker.pid]) as peak:
        started = time.monotonic()
        job = stack.desk.submit(
            "large",
            JobRequest(
                task="sentiment",
                input_uri=f"s3://{BUCKET}/in/large.csv",
                output_uri=f"s3://{BUCKET}/out/large.jsonl",
            ),
            EVERY_LOCATION,
        )
        finished = wait_until_finished(stack, job.id, MAX_LARGE_JOB_SECONDS)
        seconds = time.monotonic() - started
    growth = peak.growth[stack.worker.pid]
    stack.costs.append(
        f"  worker, {size / 1e6:.0f} MB CSV ({LARGE_CSV_ROWS} rows): {seconds:.1f} s, "
        f"RSS {baseline:.1f} MiB + {growth:.1f} MiB at the peak"
    )

    assert (finished.state.value, finished.error, finished.done) == (
        "succeeded",
        None,
        LARGE_CSV_ROWS,
    )
    output = stack.s3.get_object(Bucket=BUCKET, Key="out/large.jsonl")["Body"]
    lines = sum(block.count(b"\n") for block in iter(lambda: output.read(MIB), b""))
    assert lines == LARGE_CSV_ROWS
    assert growth < MAX_WORKER_GROWTH_MIB, growth


def maximal_inline_texts(desk: JobDesk) -> list[str]:
    """The most texts a job may carry inline that the job store keeps (not staged)."""
    count = desk.settings.max_inline_items
    # JSON of `count` ASCII strings of n characters: count * (n + 4) + 2 bytes with ", ".
    chars = (desk.settings.max_stored_inline_bytes - 2) // count - 4
    return [f"{n:04d}" + "a" * (chars - 4) for n in range(count)]


def test_one_key_filling_the_job_store_is_refused_within_its_bound(stack: Stack) -> None:
    # Sent to a queue no worker reads: the jobs stay queued with their inputs, the worst case.
    desk = create_job_desk(stack.desk.settings.model_copy(update={"queue": "nobody-reads"}))
    texts = maximal_inline_texts(desk)
    before = int(stack.store_client.info("memory")["used_memory"])
    accepted: list[str] = []
    refusal: MtcError | None = None
    for _ in range(100):
        try:
            request = JobRequest(task="sentiment", inputs=texts)
            accepted.append(desk.submit("greedy", request, EVERY_LOCATION).id)
        except JobLimitReached as error:
            refusal = error
            break
    after = int(stack.store_client.info("memory")["used_memory"])
    growth = (after - before) / MIB
    stack.costs.append(
        f"  job store, one key's maximal inline jobs: {len(accepted)} accepted, then "
        f"{refusal.error_type if refusal else 'none refused'}; used_memory "
        f"{before / MIB:.1f} -> {after / MIB:.1f} MiB (+{growth:.1f})"
    )

    assert refusal is not None, f"{len(accepted)} jobs accepted, none refused"
    assert "MTC_JOBS_MAX_HELD_BYTES_PER_OWNER" in refusal.detail
    assert growth < MAX_STORE_GROWTH_PER_KEY_MIB, growth
    # The store still has room: another key's job is accepted, and jobs can be cancelled.
    other = desk.submit("other", JobRequest(task="sentiment", inputs=["good"]), EVERY_LOCATION)
    assert desk.cancel("other", other.id).state == "cancelled"
    for job_id in accepted:
        assert desk.cancel("greedy", job_id).state == "cancelled"
    desk.close()
