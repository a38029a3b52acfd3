"""The gateway's `/v1/jobs` routes: what a submission is refused for before anything is
stored or queued, and the answers of a gateway without jobs. (Stored and queued jobs are
in tests/integration/test_jobs_worker.py and tests/e2e/test_jobs.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings
from tests.support.in_thread_servers import CLIENT_TIMEOUT, serving
from tests.support.processes import free_port

SERVICE = "http://127.0.0.1:9"  # never called: every request here stops at the gateway


def gateway_settings() -> GatewaySettings:
    return GatewaySettings(upstreams={"sentiment": SERVICE, "pose": SERVICE})


@pytest.fixture(scope="module")
def jobs() -> Iterator[httpx.Client]:
    # Nothing listens on the broker's port: a request that reached the store would fail 503.
    settings = JobsSettings(
        broker_url=f"redis://127.0.0.1:{free_port()}/0",
        upstreams={"sentiment": SERVICE, "pose": SERVICE},
        task_kinds={"pose": "image"},
        max_inline_items=3,
        max_inline_results=2,
        max_text_chars=20,
        input_allowlist=["batch/in/"],
        output_allowlist=["batch/out/"],
    )
    with (
        serving(create_app(gateway_settings(), settings)) as url,
        httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client,
    ):
        yield client


@pytest.mark.parametrize(
    ("body", "status", "error_type", "detail"),
    [
        (
            {"task": "weather", "inputs": ["x"]},
            404,
            "unknown_task",
            "unknown task 'weather'; tasks jobs can run: pose, sentiment",
        ),
        (
            {"task": "pose", "inputs": ["x"]},
            422,
            "invalid_job",
            "task 'pose' is of kind 'image'; jobs run tasks of kind text only",
        ),
        (
            {"task": "sentiment", "inputs": ["a", "b", "c", "d"]},
            413,
            "batch_too_large",
            "4 inline inputs in one job; the limit is 3 (MTC_JOBS_MAX_INLINE_ITEMS): put "
            "larger batches in a file and give its input_uri",
        ),
        (
            {"task": "sentiment", "inputs": ["short", "x" * 21]},
            413,
            "item_too_large",
            "inputs[1] has 21 characters; the limit is 20 (MTC_JOBS_MAX_TEXT_CHARS)",
        ),
        (
            {"task": "sentiment", "inputs": ["a", "b", "c"]},
            422,
            "invalid_job",
            "3 inputs, but a job without an output_uri returns at most 2 results "
            "(MTC_JOBS_MAX_INLINE_RESULTS)",
        ),
        (
            {"task": "sentiment", "inputs": ["ok", "\ud800"]},
            400,
            "invalid_input",
            "inputs[1] is not valid Unicode (a lone surrogate escape)",
        ),
        (
            {"task": "sentiment", "input_uri": "s3://secrets/in/a.csv"},
            404,
            "input_not_found",
            "s3://secrets/in/a.csv: no such object in the S3 locations this caller may read",
        ),
        (
            {"task": "sentiment", "input_uri": "s3://batch/in/../out/a.csv"},
            403,
            "forbidden",
            "'s3://batch/in/../out/a.csv': keys with empty, `.` or `..` segments or "
            "backslashes are refused",
        ),
        (
            {"task": "sentiment", "input_uri": "https://batch/in/a.csv"},
            422,
            "invalid_job",
            "'https://batch/in/a.csv' is not an s3:// URI (s3://bucket/key)",
        ),
        (
            {"task": "sentiment", "input_uri": "s3://batch/in/a.xlsx"},
            422,
            "invalid_job",
            "cannot tell the format of s3://batch/in/a.xlsx: name it .csv, .jsonl or .ndjson, "
            "or give input_format",
        ),
        (
            {
                "task": "sentiment",
                "input_uri": "s3://batch/in/a.csv",
                "output_uri": "s3://batch/in/a.out.jsonl",
            },
            403,
            "forbidden",
            "s3://batch/in/a.out.jsonl is outside the S3 locations open to this caller "
            "(s3://batch/out/)",
        ),
        (
            {
                "task": "sentiment",
                "input_uri": "s3://batch/in/a.csv",
                "output_uri": "s3://batch/out/a.parquet",
            },
            422,
            "invalid_job",
            "the output_uri must end in .jsonl or .csv, got s3://batch/out/a.parquet",
        ),
    ],
)
def test_refused_submissions(
    jobs: httpx.Client, body: dict[str, Any], status: int, error_type: str, detail: str
) -> None:
    # Escaped JSON, so a lone surrogate travels as `\ud800` as a client would send it.
    response = jobs.post(
        "/v1/jobs", content=json.dumps(body), headers={"content-type": "application/json"}
    )

    assert response.status_code == status, response.text
    assert response.json() == {"detail": detail, "error_type": error_type}


@pytest.mark.parametrize(
    "body",
    [
        {"task": "sentiment"},
        {"task": "sentiment", "inputs": ["x"], "input_uri": "s3://batch/in/a.csv"},
        {"task": "sentiment", "inputs": []},
        {"task": "sentiment", "inputs": ["x"], "input_format": "csv"},
        {"task": "sentiment", "inputs": ["x"], "callback": "http://example.com"},
    ],
)
def test_malformed_submissions_get_the_validation_body(
    jobs: httpx.Client, body: dict[str, Any]
) -> None:
    response = jobs.post("/v1/jobs", json=body)

    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


def test_a_store_that_cannot_be_reached_is_503_without_its_address(jobs: httpx.Client) -> None:
    response = jobs.get("/v1/jobs/0123456789abcdef0123456789abcdef")

    assert response.status_code == 503
    assert response.json() == {
        "detail": "the job store is unreachable; try again later",
        "error_type": "job_queue_unavailable",
    }


@pytest.mark.parametrize("job_id", ["nope", "0123456789ABCDEF0123456789ABCDEF", "a" * 33])
def test_ids_that_no_job_can_have_are_404_without_a_store_lookup(
    jobs: httpx.Client, job_id: str
) -> None:
    response = jobs.get(f"/v1/jobs/{job_id}")

    assert response.status_code == 404
    assert response.json()["error_type"] == "job_not_found"


def test_without_a_broker_every_jobs_route_is_503_and_undocumented() -> None:
    with (
        serving(create_app(gateway_settings())) as url,
        httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client,
    ):
        answers = [
            client.post("/v1/jobs", json={"task": "sentiment", "inputs": ["x"]}),
            client.get("/v1/jobs/0123456789abcdef0123456789abcdef"),
            client.delete("/v1/jobs/0123456789abcdef0123456789abcdef"),
        ]
        document = client.get("/openapi.json").json()

    assert "/v1/jobs" not in document["paths"]
    for answer in answers:
        assert answer.status_code == 503
        assert answer.json() == {
            "detail": "batch jobs are not configured on this gateway (set MTC_JOBS_BROKER_URL)",
            "error_type": "jobs_not_configured",
        }


def test_the_openapi_document_describes_the_jobs_routes(jobs: httpx.Client) -> None:
    document = jobs.get("/openapi.json").json()
    paths = document["paths"]

    submit = paths["/v1/jobs"]["post"]
    assert set(submit["responses"]) >= {"202", "400", "403", "404", "413", "422", "503"}
    assert "Location" in submit["responses"]["202"]["headers"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobRequest"
    }
    assert set(paths["/v1/jobs/{job_id}"]) == {"get", "delete"}
    assert "409" in paths["/v1/jobs/{job_id}"]["delete"]["responses"]
    job_view = document["components"]["schemas"]["JobView"]["properties"]
    assert {"state", "progress", "results", "output_uri", "created_at"} <= set(job_view)
