"""The job store: each job's state, progress, inputs and results in Redis.

Every key of a job shares the hash tag `{<id>}` (one Redis Cluster slot, so the scripts
below may touch them together) and expires `retention_seconds` after the job's last change.
State changes are Lua scripts, so a cancellation and a worker finishing the same job
cannot both win. Chunk results are written with HSETNX under the chunk's index: a chunk
computed twice (a redelivered job, two workers in a race) is stored, and counted, once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, cast

import redis

from services.wire.s3_locations import S3Scope


class JobState(StrEnum):
    """Where a job stands."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
InputFormat = Literal["csv", "jsonl"]


@dataclass(frozen=True)
class JobRecord:
    """One job as stored."""

    id: str
    owner: str
    task: str
    state: JobState
    created_at: float
    chunk_size: int
    total: int | None = None
    """Number of items; known at submission for inline inputs, once read for files."""
    done: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    input_uri: str | None = None
    input_format: InputFormat | None = None
    output_uri: str | None = None
    input_etag: str | None = None
    """ETag of the input object when first read: a resumed job refuses a changed input."""
    s3_scope: S3Scope | None = None
    """The S3 locations open to the owner at submission, checked again by the worker
    before it reads the input or writes the output. A job stored without one (before they
    were kept) gets its owner's own folders, the safe reading of a missing field."""
    staged_input_uri: str | None = None
    """Where the gateway put inline inputs too large for the store (JSON Lines in S3)."""
    finalizing: bool = False
    """The worker is writing the output: too late to cancel."""
    deliveries: int = 0
    """How many times a worker started (or resumed) the job."""
    unfinished_deliveries: int = 0
    """Starts whose worker never came back from running the job (it was killed, ran out
    of memory or crashed): each start counts one, and a worker that returns from the job,
    however it ended, takes its count back."""

    @property
    def finished(self) -> bool:
        """Whether the job reached a final state."""
        return self.state in FINAL_STATES


_FIELD_READERS: dict[str, Callable[[str], Any]] = {
    "state": JobState,
    "created_at": float,
    "chunk_size": int,
    "total": lambda value: int(value) if value else None,
    "done": int,
    "started_at": lambda value: float(value) if value else None,
    "finished_at": lambda value: float(value) if value else None,
    "s3_scope": S3Scope.from_json,
    "finalizing": lambda value: value == "1",
    "deliveries": int,
    "unfinished_deliveries": int,
}
"""How the stored fields of a `JobRecord` read back; any other is the string stored (a
field missing from the store takes the record's default)."""


@dataclass(frozen=True)
class Transition:
    """Outcome of a state change: whether it happened, and the state found before it."""

    changed: bool
    previous: JobState | None
    """None when the job does not exist (never created, or expired)."""
    finalizing: bool = False
    unfinished_deliveries: int = 0
    """For a start: the job's unfinished deliveries before this one."""
    owner: str | None = None
    """For a state change: the job's owner."""


ItemResult = dict[str, Any]
"""One output row: index, id (when the input had one), label, score, scores."""

# KEYS[1] job hash, KEYS[2..] other keys of the job; ARGV[1] retention seconds,
# ARGV[2] states allowed before (space separated), ARGV[3] new state, ARGV[4] "1" to refuse
# while the output is being written, ARGV[5] per other key "d" delete or "e" expire,
# ARGV[6..] field/value pairs to set. Returns {changed, previous state, finalizing, owner}.
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, '', 0, ''} end
local finalizing = redis.call('HGET', KEYS[1], 'finalizing') == '1' and 1 or 0
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
local allowed = false
for candidate in string.gmatch(ARGV[2], '%S+') do
  if candidate == state then allowed = true end
end
if not allowed or (ARGV[4] == '1' and finalizing == 1) then
  return {0, state, finalizing, owner}
end
redis.call('HSET', KEYS[1], 'state', ARGV[3])
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
for i = 2, #KEYS do
  if string.sub(ARGV[5], i - 1, i - 1) == 'd' then redis.call('DEL', KEYS[i])
  else redis.call('EXPIRE', KEYS[i], ARGV[1]) end
end
return {1, state, finalizing, owner}
"""

# KEYS[1] job hash; ARGV[1] retention, ARGV[2] now. A queued or running job becomes
# running; started_at is set the first time only; the start counts as a delivery and as
# an unfinished one until `_END_DELIVERY`. Returns {changed, previous state, unfinished
# deliveries before this one}.
_START = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, '', 0} end
if state ~= 'queued' and state ~= 'running' then return {0, state, 0} end
redis.call('HSET', KEYS[1], 'state', 'running')
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
local unfinished = redis.call('HINCRBY', KEYS[1], 'unfinished_deliveries', 1) - 1
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {1, state, unfinished}
"""

# KEYS[1] job hash. The worker came back from a start: take its unfinished count back.
_END_DELIVERY = """
local unfinished = tonumber(redis.call('HGET', KEYS[1], 'unfinished_deliveries') or '0')
if unfinished > 0 then redis.call('HINCRBY', KEYS[1], 'unfinished_deliveries', -1) end
return unfinished
"""

# KEYS[1] job hash, KEYS[2] chunk results; ARGV[1] chunk index, ARGV[2] results JSON,
# ARGV[3] items in the chunk, ARGV[4] retention. Returns 1 if stored now, 0 if it already
# was, -1 if the job is gone.
_SAVE_CHUNK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local stored = redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
if stored == 1 then redis.call('HINCRBY', KEYS[1], 'done', ARGV[3]) end
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return stored
"""

# KEYS[1] lease; ARGV[1] token, ARGV[2] milliseconds. Extends the lease if still ours.
_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# What one owner (API key) holds, in three keys of its own slot `{<owner>}`:
# - `active`: hash of its queued and running jobs, id -> "<rows> <bytes in the store>";
# - `kept`: sorted set of "<id> <bytes>" for results kept for `GET`, scored by expiry time;
# - `kept-bytes`: the sum of the bytes in `kept`.
# An entry is added when a job is admitted and moved to `kept` (or dropped) when it ends;
# an entry whose job is gone without ending (a worker crashed between the two, the job
# expired) is found and released by `JobStore.reconcile_owner`, and kept results leave
# `kept` when they expire, so nothing held is counted forever.

# Shared prologue: KEYS[2] kept, KEYS[3] kept-bytes; ARGV[1] now. Forgets expired results.
_FORGET_EXPIRED_RESULTS = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if #expired > 0 then
  local freed = 0
  for _, member in ipairs(expired) do
    freed = freed + tonumber(string.match(member, ' (%d+)$'))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
  if redis.call('DECRBY', KEYS[3], freed) < 0 then redis.call('SET', KEYS[3], 0) end
end
"""

# KEYS[1] active, KEYS[2] kept, KEYS[3] kept-bytes; ARGV[1] now, ARGV[2] job id, ARGV[3]
# rows, ARGV[4] bytes, ARGV[5..7] most jobs, rows, bytes, ARGV[8] seconds the keys live.
# Returns {limit passed ('' when admitted), active jobs, rows, bytes held before this job}.
_ADMIT = (
    _FORGET_EXPIRED_RESULTS
    + """
local jobs, rows = 0, 0
local held = tonumber(redis.call('GET', KEYS[3]) or '0')
for _, entry in ipairs(redis.call('HVALS', KEYS[1])) do
  local entry_rows, entry_bytes = string.match(entry, '^(%d+) (%d+)$')
  jobs = jobs + 1
  rows = rows + tonumber(entry_rows)
  held = held + tonumber(entry_bytes)
end
local verdict = ''
if jobs + 1 > tonumber(ARGV[5]) then verdict = 'jobs'
elseif rows + tonumber(ARGV[3]) > tonumber(ARGV[6]) then verdict = 'rows'
elseif held + tonumber(ARGV[4]) > tonumber(ARGV[7]) then verdict = 'bytes'
else
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3] .. ' ' .. ARGV[4])
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[8]) end
end
return {verdict, jobs, rows, held}
"""
)

# KEYS[1] active; ARGV[1] job id, ARGV[2] its rows, ARGV[3] most rows. Records the rows of
# a job known only once its input was read. Returns {1 recorded or 0 refused, rows of the
# owner's other active jobs}.
_COUNT_ROWS = """
local others, own_bytes = 0, '0'
for _, job in ipairs(redis.call('HKEYS', KEYS[1])) do
  local entry_rows, entry_bytes = string.match(redis.call('HGET', KEYS[1], job), '^(%d+) (%d+)$')
  if job == ARGV[1] then own_bytes = entry_bytes else others = others + tonumber(entry_rows) end
end
if others + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return {0, others} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. own_bytes)
return {1, others}
"""

# KEYS[1] active, KEYS[2] kept, KEYS[3] kept-bytes; ARGV[1] now, ARGV[2] job id, ARGV[3]
# bytes of results kept (0: none), ARGV[4] when they expire, ARGV[5] seconds the keys live.
# Idempotent: a job released twice is counted once. Returns 1 if released now.
_RELEASE = (
    _FORGET_EXPIRED_RESULTS
    + """
if redis.call('HDEL', KEYS[1], ARGV[2]) == 0 then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2] .. ' ' .. ARGV[3])
  redis.call('INCRBY', KEYS[3], ARGV[3])
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
end
return 1
"""
)


@dataclass(frozen=True)
class OwnerLimits:
    """What one owner (API key) may hold at once (`MTC_JOBS_MAX_*_PER_OWNER`)."""

    max_jobs: int
    max_rows: int
    max_bytes: int


@dataclass(frozen=True)
class Admission:
    """Outcome of admitting a job: which limit it would pass (None: admitted), and what
    the owner held before it."""

    passed_limit: Literal["jobs", "rows", "bytes"] | None
    active_jobs: int
    active_rows: int
    held_bytes: int


class JobStore:
    """Jobs in Redis. Blocking calls: the gateway runs them in a thread."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        retention_seconds: int,
        result_retention_seconds: int | None = None,
    ) -> None:
        self.client = client
        self.retention_seconds = retention_seconds
        self.result_retention_seconds = result_retention_seconds or retention_seconds
        """How long a finished job is kept (its record, and its results when kept)."""
        self._transition = client.register_script(_TRANSITION)
        self._start = client.register_script(_START)
        self._end_delivery = client.register_script(_END_DELIVERY)
        self._save_chunk = client.register_script(_SAVE_CHUNK)
        self._renew_lease = client.register_script(_RENEW_LEASE)
        self._release_lease = client.register_script(_RELEASE_LEASE)
        self._admit = client.register_script(_ADMIT)
        self._count_rows = client.register_script(_COUNT_ROWS)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        retention_seconds: int,
        result_retention_seconds: int | None = None,
        timeout_seconds: float = 5.0,
    ) -> JobStore:
        """A store on the Redis at `url`."""
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=30,
        )
        return cls(
            client,
            retention_seconds=retention_seconds,
            result_retention_seconds=result_retention_seconds,
        )

    def close(self) -> None:
        """Close the connections."""
        self.client.close()

    @staticmethod
    def job_key(job_id: str) -> str:
        """The hash holding the job's fields."""
        return f"mtc:job:{{{job_id}}}"

    @staticmethod
    def inputs_key(job_id: str) -> str:
        """The JSON list of an inline job's texts."""
        return f"mtc:job:{{{job_id}}}:inputs"

    @staticmethod
    def chunks_key(job_id: str) -> str:
        """The hash of chunk index -> JSON list of that chunk's results."""
        return f"mtc:job:{{{job_id}}}:chunks"

    @staticmethod
    def lease_key(job_id: str) -> str:
        """The token of the worker running the job, while its lease lasts."""
        return f"mtc:job:{{{job_id}}}:lease"

    @staticmethod
    def owner_keys(owner: str) -> list[str]:
        """The owner's active jobs, kept results and their bytes (see `_ADMIT`)."""
        base = f"mtc:owner:{{{owner}}}"
        return [f"{base}:active", f"{base}:kept", f"{base}:kept-bytes"]

    def create(self, job: JobRecord, inline_inputs: list[str] | None = None) -> None:
        """Store a new job (queued) and its inline texts."""
        fields: dict[str, str] = {
            "id": job.id,
            "owner": job.owner,
            "task": job.task,
            "state": job.state.value,
            "created_at": repr(job.created_at),
            "chunk_size": str(job.chunk_size),
            "done": "0",
            "deliveries": "0",
            "unfinished_deliveries": "0",
        }
        optional = {
            "total": job.total,
            "input_uri": job.input_uri,
            "input_format": job.input_format,
            "output_uri": job.output_uri,
            "staged_input_uri": job.staged_input_uri,
            "s3_scope": job.s3_scope.to_json() if job.s3_scope is not None else None,
        }
        fields.update({name: str(value) for name, value in optional.items() if value is not None})
        pipe = self.client.pipeline(transaction=True)
        if inline_inputs is not None:
            pipe.set(self.inputs_key(job.id), json.dumps(inline_inputs), ex=self.retention_seconds)
        pipe.hset(self.job_key(job.id), mapping=cast(dict[Any, Any], fields))
        pipe.expire(self.job_key(job.id), self.retention_seconds)
        pipe.execute()

    def delete(self, job_id: str) -> None:
        """Remove every key of a job (a submission that could not be queued)."""
        self.client.delete(
            self.job_key(job_id),
            self.inputs_key(job_id),
            self.chunks_key(job_id),
            self.lease_key(job_id),
        )

    def get(self, job_id: str) -> JobRecord | None:
        """The job, or None if there is no such job (or it expired)."""
        fields: dict[str, str] = self.client.hgetall(self.job_key(job_id))  # type: ignore[assignment]
        if not fields or "state" not in fields:
            return None
        values = {
            name: _FIELD_READERS.get(name, str)(value)
            for name, value in fields.items()
            if name in JobRecord.__dataclass_fields__
        }
        values.setdefault("s3_scope", S3Scope(tenant=fields["owner"]))
        return JobRecord(**values)

    def state(self, job_id: str) -> JobState | None:
        """Just the job's state (what a worker checks between chunks)."""
        value: str | None = self.client.hget(self.job_key(job_id), "state")  # type: ignore[assignment]
        return JobState(value) if value else None

    def inline_inputs(self, job_id: str) -> list[str]:
        """The texts an inline job was submitted with."""
        raw: str | None = self.client.get(self.inputs_key(job_id))  # type: ignore[assignment]
        if raw is None:
            raise LookupError(f"job {job_id} has no stored inputs (expired?)")
        texts: list[str] = json.loads(raw)
        return texts

    def start(self, job_id: str, now: float | None = None) -> Transition:
        """Mark a queued (or resumed running) job running, counting the delivery as
        unfinished until `end_delivery`."""
        changed, previous, unfinished = self._start(
            keys=[self.job_key(job_id)],
            args=[self.retention_seconds, repr(now if now is not None else time.time())],
        )
        return Transition(
            bool(changed),
            JobState(previous) if previous else None,
            unfinished_deliveries=int(unfinished),
        )

    def end_delivery(self, job_id: str) -> None:
        """The worker that started the job came back from running it (whatever the job's
        fate): its start no longer counts as unfinished."""
        self._end_delivery(keys=[self.job_key(job_id)])

    def record_input(self, job_id: str, *, total: int, etag: str | None) -> None:
        """Remember how many items the input holds and which version of it was read."""
        fields = {"total": str(total)}
        if etag is not None:
            fields["input_etag"] = etag
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.job_key(job_id), mapping=cast(dict[Any, Any], fields))
        pipe.expire(self.job_key(job_id), self.retention_seconds)
        pipe.execute()

    def save_chunk(self, job_id: str, index: int, results: list[ItemResult]) -> bool:
        """Store one chunk's results unless already stored; True if stored by this call."""
        stored = self._save_chunk(
            keys=[self.job_key(job_id), self.chunks_key(job_id)],
            args=[index, json.dumps(results), len(results), self.retention_seconds],
        )
        if stored == -1:
            raise LookupError(f"job {job_id} disappeared from the store while running")
        return bool(stored)

    def chunk_results(self, job_id: str, index: int) -> list[ItemResult] | None:
        """The stored results of one chunk, or None if it is not stored."""
        raw: str | None = self.client.hget(self.chunks_key(job_id), str(index))  # type: ignore[assignment]
        if raw is None:
            return None
        results: list[ItemResult] = json.loads(raw)
        return results

    def saved_chunks(self, job_id: str) -> set[int]:
        """Indices of the chunks whose results are stored."""
        keys: list[str] = self.client.hkeys(self.chunks_key(job_id))  # type: ignore[assignment]
        return {int(key) for key in keys}

    def results(self, job_id: str) -> list[ItemResult]:
        """Every stored result, in input order."""
        chunks: dict[str, str] = self.client.hgetall(self.chunks_key(job_id))  # type: ignore[assignment]
        return [result for index in sorted(chunks, key=int) for result in json.loads(chunks[index])]

    def begin_output(self, job_id: str) -> Transition:
        """Mark a running job as writing its output, which makes it no longer cancellable."""
        return self._change(
            job_id, allowed=(JobState.RUNNING,), to=JobState.RUNNING, fields={"finalizing": "1"}
        )

    def succeed(self, job_id: str, *, keep_results: bool, now: float | None = None) -> Transition:
        """Finish a running job; its stored results are dropped unless `keep_results` (they
        are served by `GET` when the job has no output object)."""
        return self._change(
            job_id,
            allowed=(JobState.RUNNING,),
            to=JobState.SUCCEEDED,
            fields={"finished_at": repr(now or time.time()), "finalizing": "0"},
            drop_results=not keep_results,
        )

    def fail(self, job_id: str, reason: str, now: float | None = None) -> Transition:
        """Fail a queued or running job with `reason`; partial results are dropped."""
        return self._change(
            job_id,
            allowed=(JobState.QUEUED, JobState.RUNNING),
            to=JobState.FAILED,
            fields={"finished_at": repr(now or time.time()), "error": reason, "finalizing": "0"},
            drop_results=True,
        )

    def cancel(self, job_id: str, now: float | None = None) -> Transition:
        """Cancel a queued or running job that is not yet writing its output."""
        return self._change(
            job_id,
            allowed=(JobState.QUEUED, JobState.RUNNING),
            to=JobState.CANCELLED,
            fields={"finished_at": repr(now or time.time())},
            drop_results=True,
            refuse_while_finalizing=True,
        )

    def _change(
        self,
        job_id: str,
        *,
        allowed: tuple[JobState, ...],
        to: JobState,
        fields: dict[str, str],
        drop_results: bool = False,
        refuse_while_finalizing: bool = False,
    ) -> Transition:
        final = to in FINAL_STATES
        # A finished job needs its inputs no more; its results only if `GET` serves them.
        others = [self.inputs_key(job_id), self.chunks_key(job_id)]
        actions = ("d" if final else "e") + ("d" if drop_results else "e")
        pairs = [item for name_value in fields.items() for item in name_value]
        changed, previous, finalizing, owner = self._transition(
            keys=[self.job_key(job_id), *others],
            args=[
                self.result_retention_seconds if final else self.retention_seconds,
                " ".join(state.value for state in allowed),
                to.value,
                "1" if refuse_while_finalizing else "0",
                actions,
                *pairs,
            ],
        )
        if changed and final and owner:
            kept = 0 if drop_results else self.results_bytes(job_id)
            self.release(owner, job_id, kept_bytes=kept)
        return Transition(
            bool(changed),
            JobState(previous) if previous else None,
            bool(finalizing),
            owner=owner or None,
        )

    def results_bytes(self, job_id: str) -> int:
        """Bytes of the job's stored results."""
        pipe = self.client.pipeline(transaction=False)
        for index in self.saved_chunks(job_id):
            pipe.hstrlen(self.chunks_key(job_id), index)
        return sum(int(length) for length in pipe.execute())

    def memory_use(self) -> tuple[int, int]:
        """(bytes used, `maxmemory`) of the store; `maxmemory` 0 means no limit."""
        info = self.client.info("memory")
        return int(info["used_memory"]), int(info.get("maxmemory", 0))

    def admit(
        self,
        owner: str,
        job_id: str,
        *,
        rows: int,
        stored_bytes: int,
        limits: OwnerLimits,
        now: float | None = None,
    ) -> Admission:
        """Count a new job against its owner's limits, atomically: admitted (and from now
        on held) only if it fits them all."""
        verdict, jobs, active_rows, held = self._admit(
            keys=self.owner_keys(owner),
            args=[
                repr(now if now is not None else time.time()),
                job_id,
                rows,
                stored_bytes,
                limits.max_jobs,
                limits.max_rows,
                limits.max_bytes,
                self.retention_seconds,
            ],
        )
        return Admission(
            verdict or None,
            active_jobs=int(jobs),
            active_rows=int(active_rows),
            held_bytes=int(held),
        )

    def count_rows(self, owner: str, job_id: str, *, rows: int, max_rows: int) -> int | None:
        """Record the rows of an admitted job once known; None if they fit the owner's
        budget, else the rows of its other active jobs (and nothing is recorded)."""
        recorded, others = self._count_rows(
            keys=self.owner_keys(owner)[:1], args=[job_id, rows, max_rows]
        )
        return None if recorded else int(others)

    def release(
        self, owner: str, job_id: str, *, kept_bytes: int = 0, now: float | None = None
    ) -> bool:
        """The job no longer runs: drop it from its owner's active jobs, counting the
        results kept for `GET` (`kept_bytes`) until they expire. True if released now."""
        moment = now if now is not None else time.time()
        released = self._release(
            keys=self.owner_keys(owner),
            args=[
                repr(moment),
                job_id,
                kept_bytes,
                repr(moment + self.result_retention_seconds),
                self.retention_seconds,
            ],
        )
        return bool(released)

    def active_jobs(self, owner: str) -> list[str]:
        """Ids of the jobs counted as the owner's queued or running ones."""
        ids: list[str] = self.client.hkeys(self.owner_keys(owner)[0])  # type: ignore[assignment]
        return ids

    def reconcile_owner(self, owner: str) -> int:
        """Release the owner's active jobs that are no longer queued or running (their end
        was not recorded: a worker or the gateway died in between) or no longer exist
        (expired); returns how many."""
        ids = self.active_jobs(owner)
        if not ids:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.job_key(job_id), ["state", "output_uri"])
        released = 0
        for job_id, (state, output_uri) in zip(ids, pipe.execute(), strict=True):
            if state in (JobState.QUEUED.value, JobState.RUNNING.value):
                continue
            kept = 0
            if state == JobState.SUCCEEDED.value and output_uri is None:
                kept = self.results_bytes(job_id)
            released += self.release(owner, job_id, kept_bytes=kept)
        return released

    def acquire_lease(self, job_id: str, token: str, seconds: float) -> bool:
        """Take the job's lease if no live worker holds it."""
        return bool(self.client.set(self.lease_key(job_id), token, nx=True, px=int(seconds * 1000)))

    def lease_remaining_seconds(self, job_id: str) -> float:
        """Time left on the current holder's lease (0 when nobody holds it)."""
        return max(0.0, int(self.client.pttl(self.lease_key(job_id))) / 1000)

    def renew_lease(self, job_id: str, token: str, seconds: float) -> bool:
        """Extend our lease; False if it expired or another worker holds it now."""
        return bool(
            self._renew_lease(keys=[self.lease_key(job_id)], args=[token, int(seconds * 1000)])
        )

    def release_lease(self, job_id: str, token: str) -> None:
        """Give the lease up, if it is still ours."""
        self._release_lease(keys=[self.lease_key(job_id)], args=[token])
