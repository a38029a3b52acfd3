"""`/v1/jobs`: submit a batch job, follow it, cancel it (see docs/jobs.md).

A gateway without `MTC_JOBS_BROKER_URL` answers them 503 `jobs_not_configured` and leaves
them out of its OpenAPI document (which describes what the gateway serves). They sit
behind the same API key check and quota as predictions; a job belongs to the key that
submitted it (`anonymous` when keys are off) and is invisible to every other key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse

from gateway.request_context import current_request
from gateway.work_meter import charge_items
from services.core.errors import (
    AccessDenied,
    BatchTooLarge,
    BodyTooLarge,
    InputNotFound,
    InvalidInput,
    ItemTooLarge,
    MtcError,
    UnknownTask,
)
from services.core.http_errors import error_responses
from services.core.json_body import BoundedJsonRoute, with_body_schema
from services.jobs.contracts import JobRequest, JobView
from services.jobs.errors import (
    InvalidJob,
    JobFinished,
    JobLimitReached,
    JobNotFound,
    JobQueueUnavailable,
    JobsNotConfigured,
    JobStoreFull,
)
from services.jobs.submission import ANONYMOUS_OWNER, JobDesk
from services.wire.s3_locations import UNRESTRICTED, S3Scope

JOBS_PATH = "/v1/jobs"
_UNAVAILABLE: tuple[type[MtcError], ...] = (JobsNotConfigured, JobQueueUnavailable)


def get_job_desk(request: Request) -> JobDesk:
    """The gateway's job desk, or 503 when jobs are not configured."""
    desk = getattr(request.state, "jobs", None)
    if not isinstance(desk, JobDesk):
        raise JobsNotConfigured(
            "batch jobs are not configured on this gateway (set MTC_JOBS_BROKER_URL)"
        )
    return desk


def caller() -> str:
    """The job owner: the name of the request's API key, or `anonymous` with keys off."""
    context = current_request()
    if context is None or context.api_key_name is None:
        return ANONYMOUS_OWNER
    return context.api_key_name


def caller_s3_scope() -> S3Scope:
    """The S3 locations the request's API key may name; every allow-listed one with keys
    off."""
    context = current_request()
    if context is None or context.s3_scope is None:
        return UNRESTRICTED
    return context.s3_scope


JobDeskDep = Annotated[JobDesk, Depends(get_job_desk)]
OwnerDep = Annotated[str, Depends(caller)]
S3ScopeDep = Annotated[S3Scope, Depends(caller_s3_scope)]
JobIdPath = Annotated[str, Path(description="The id `POST /v1/jobs` answered with.")]


def jobs_router(
    access_errors: Sequence[type[MtcError]],
    *,
    documented: bool,
    max_inline_items: int | None,
    max_body_bytes: int,
) -> APIRouter:
    """The jobs routes; `access_errors` are those the API key check adds (none when keys
    are off). `documented`: listed in the OpenAPI document (when jobs are configured).
    `max_inline_items` caps the schema's `inputs` (default: the schema's own cap);
    `max_body_bytes` the submitted JSON."""
    router = APIRouter(
        prefix=JOBS_PATH,
        tags=["jobs"],
        include_in_schema=documented,
        route_class=BoundedJsonRoute.with_max_body_bytes(max_body_bytes),
    )
    # The inline list is capped at the configured limit: validating a longer one stops as
    # soon as it passes the cap.
    request_schema = (
        JobRequest.with_limit(max_inline_items) if max_inline_items is not None else JobRequest
    )

    async def submit_job(
        body: JobRequest,
        response: Response,
        desk: JobDeskDep,
        owner: OwnerDep,
        s3_scope: S3ScopeDep,
    ) -> JobView:
        """Queue texts (inline, or a CSV / JSON Lines file in S3 within the API key's
        locations) for classification in the background; answers 202 with the job and its
        `Location`."""
        # Inline texts are charged by count; a file's rows by the jobs' own row budget.
        await charge_items(len(body.inputs) if body.inputs is not None else 1)
        job = await asyncio.to_thread(desk.submit, owner, body, s3_scope)
        response.headers["location"] = f"{JOBS_PATH}/{job.id}"
        return job

    router.post(
        "",
        status_code=202,
        response_model=JobView,
        summary="Submit a batch job",
        responses={
            202: {
                "description": "Accepted and queued; follow it at the `Location` URL.",
                "headers": {"Location": {"schema": {"type": "string"}}},
            },
            **error_responses(
                InvalidInput,
                AccessDenied,
                InputNotFound,
                UnknownTask,
                BatchTooLarge,
                BodyTooLarge,
                ItemTooLarge,
                InvalidJob,
                JobLimitReached,
                JobStoreFull,
                *_UNAVAILABLE,
                *access_errors,
            ),
        },
    )(with_body_schema(submit_job, request_schema))

    @router.get(
        "/{job_id}",
        response_model=JobView,
        summary="Get a job",
        responses=error_responses(JobNotFound, *_UNAVAILABLE, *access_errors),
    )
    async def get_job(job_id: JobIdPath, desk: JobDeskDep, owner: OwnerDep) -> JobView:
        """The job's state, progress and timestamps, and its results once it succeeded
        (or the `output_uri` they were written to)."""
        return await asyncio.to_thread(desk.get, owner, job_id)

    @router.delete(
        "/{job_id}",
        response_model=JobView,
        summary="Cancel a job",
        responses=error_responses(JobNotFound, JobFinished, *_UNAVAILABLE, *access_errors),
    )
    async def cancel_job(job_id: JobIdPath, desk: JobDeskDep, owner: OwnerDep) -> JobView:
        """Cancel a queued or running job: it stops after its current chunk and writes no
        output. A finished job answers 409."""
        return await asyncio.to_thread(desk.cancel, owner, job_id)

    @router.api_route(
        "/{job_id}", methods=["POST", "PUT", "PATCH", "OPTIONS"], include_in_schema=False
    )
    async def other_job_methods(job_id: str) -> Response:
        # Starlette would name only the first matching route's method (GET) in `Allow`.
        return JSONResponse(
            {"detail": "Method Not Allowed"}, status_code=405, headers={"allow": "GET, DELETE"}
        )

    return router
