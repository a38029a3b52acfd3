"""Wire schemas of the jobs API (`/v1/jobs` on the gateway)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.wire.contracts import BatchRequest, LabelScoreBody

JobStateName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


DEFAULT_MAX_INLINE_ITEMS = 1000
"""Inline texts per job unless configured otherwise (`MTC_JOBS_MAX_INLINE_ITEMS`)."""


class JobRequest(BatchRequest):
    """A batch of texts to classify in the background: inline `inputs`, or an `input_uri`
    naming a CSV (with a `text` column) or JSON Lines file (a `text` field per line)."""

    model_config = ConfigDict(extra="forbid")
    batch_field: ClassVar[str] = "inputs"
    batch_noun: ClassVar[str] = "inline inputs"
    batch_unit: ClassVar[str] = "in one job"
    limit_setting: ClassVar[str] = "MTC_JOBS_MAX_INLINE_ITEMS"
    limit_hint: ClassVar[str] = ": put larger batches in a file and give its input_uri"

    task: str = Field(
        description="A text task, as listed by `GET /v1/models`.", examples=["sentiment"]
    )
    inputs: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=DEFAULT_MAX_INLINE_ITEMS,
        description="Texts to classify (at most MTC_JOBS_MAX_INLINE_ITEMS, default 1,000).",
        examples=[["An absolute triumph", "Dull and far too long"]],
    )
    input_uri: str | None = Field(
        default=None,
        description="`s3://bucket/key` of a `.csv`, `.jsonl` or `.ndjson` file within "
        "MTC_JOBS_INPUT_ALLOWLIST. CSV: a `text` column and optionally an `id` column; "
        "JSON Lines: a `text` string and optionally an `id` per line.",
    )
    input_format: Literal["csv", "jsonl"] | None = Field(
        default=None,
        description="Format of the input file when its extension does not say.",
    )
    output_uri: str | None = Field(
        default=None,
        description="`s3://bucket/key.jsonl` or `.csv` within MTC_JOBS_OUTPUT_ALLOWLIST: "
        "the results are written there, all at once, when the job succeeds. Without it, "
        "`GET /v1/jobs/{id}` returns them (at most MTC_JOBS_MAX_INLINE_RESULTS).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.inputs is None) == (self.input_uri is None):
            raise ValueError("give exactly one of `inputs` and `input_uri`")
        if self.input_format is not None and self.input_uri is None:
            raise ValueError("`input_format` applies to `input_uri` only")
        return self


class JobProgress(BaseModel):
    """How far the job got."""

    done: int = Field(description="Items classified so far.")
    total: int | None = Field(description="Items in the job; null until its input was read.")


class JobResult(BaseModel):
    """One input's prediction."""

    index: int = Field(description="Position of the input, from 0.")
    id: str | int | float | None = Field(
        default=None, description="The `id` the input file gave the row, if any."
    )
    label: str = Field(description="The label with the highest score.")
    score: float
    scores: list[LabelScoreBody] = Field(description="Every label, highest score first.")


class JobView(BaseModel):
    """A job: its state, progress, timestamps, and results or where they were written."""

    id: str
    task: str
    state: JobStateName = Field(
        description="`queued` -> `running` -> `succeeded` | `failed`; `cancelled` from "
        "either of the first two."
    )
    progress: JobProgress
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = Field(description="Why the job failed.")
    input_uri: str | None
    output_uri: str | None
    results: list[JobResult] | None = Field(
        description="The results, in input order, once a job without `output_uri` "
        "succeeded; otherwise null."
    )
