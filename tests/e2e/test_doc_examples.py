"""Every shell example of README.md and docs/ that calls the API, run as written against the
local stack (the `make run` code path) with an S3-compatible server holding the objects the
examples name. An example that answers an HTTP error, names a missing file or does not parse
fails here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from deploy.api_collections import CURL_FILE, POSTMAN_FILE
from tests.support.doc_examples import REPO, ShellExample, api_examples, run_example
from tests.support.jobs import AWS_TEST_ENV, s3_client, start_moto
from tests.support.postman import run_collection
from tests.support.processes import (
    free_port,
    free_port_run,
    local_stack_command,
    start,
    stop,
    wait_for_http,
)

pytestmark = pytest.mark.e2e

MODELS_DIR = REPO / ".mtc" / "models"
SERVICES = 4  # sentiment, disaster, pose, audio
# What the S3 examples name: a recording under the audio allow-list, and a job's input CSV.
CALL_OBJECT = ("calls", "incoming/call-0042.wav")
JOB_INPUT = ("batch", "in/reviews.csv")


@dataclass
class DocStack:
    base: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def doc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocStack]:
    logs = tmp_path_factory.mktemp("doc-examples")
    subprocess.run(
        [sys.executable, "-m", "services.lifecycle.cli", "models", "build"], check=True, cwd=REPO
    )
    moto_port = free_port()
    moto = start_moto(moto_port, logs / "moto.log")
    endpoint = f"http://127.0.0.1:{moto_port}"
    s3 = s3_client(endpoint)
    for bucket in ("calls", "batch"):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(
        Bucket=CALL_OBJECT[0],
        Key=CALL_OBJECT[1],
        Body=(REPO / "load" / "data" / "clips" / "call-1.wav").read_bytes(),
    )
    s3.put_object(
        Bucket=JOB_INPUT[0],
        Key=JOB_INPUT[1],
        Body=b"id,text\nr1,An absolute triumph\nr2,Dull and far too long\n",
    )
    env = {
        **AWS_TEST_ENV,
        "MTC_S3_ENDPOINT_URL": endpoint,
        "MTC_S3_INPUT_ALLOWLIST": '["calls/incoming/"]',
        "MTC_JOBS_INPUT_ALLOWLIST": '["batch/in/"]',
        "MTC_JOBS_OUTPUT_ALLOWLIST": '["batch/out/"]',
    }
    gateway_port, service_port = free_port(), free_port_run(SERVICES + 1)
    command = local_stack_command(
        gateway_port,
        service_port,
        "--jobs-metrics-port",
        str(service_port + SERVICES),
    )
    stack = start(command, env=env, log=logs / "stack.log")
    base = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_for_http(f"{base}/health/ready", stack, timeout=300)
    except Exception:
        stop(stack)
        stop(moto)
        print((logs / "stack.log").read_text())
        raise
    # The examples' own environment: the machine's, plus a key for the one that shows how to
    # send it (the stack runs without keys, so any value passes).
    yield DocStack(base, {**os.environ, "MTC_API_KEY": "mtc_example"})
    stop(stack)
    stop(moto)


@pytest.mark.parametrize("example", api_examples(), ids=lambda example: example.name)
def test_example_runs(doc_stack: DocStack, example: ShellExample) -> None:
    result = run_example(example.code, doc_stack.base, env=doc_stack.env)
    assert result.returncode == 0, (
        f"{example.name} failed (exit {result.returncode}):\n{example.code}\n"
        f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
    )
    assert result.stdout.strip(), f"{example.name} printed nothing"


def test_a_broken_example_fails(doc_stack: DocStack) -> None:
    # The README's example before it was fixed: `curl -d` sends a form Content-Type.
    broken = """\
curl -s -X POST http://127.0.0.1:8080/v1/disaster/predict \\
  -d '{"text": ["this mixtape is fire"]}'
"""
    result = run_example(broken, doc_stack.base, env=doc_stack.env)
    assert result.returncode != 0
    assert "unsupported_media_type" in result.stdout
    missing_file = "curl -s -X POST http://127.0.0.1:8080/v1/audio/predict -F audio=@call.wav\n"
    assert run_example(missing_file, doc_stack.base, env=doc_stack.env).returncode != 0


def test_examples_name_files_that_exist() -> None:
    for example in api_examples():
        for name in _uploaded_files(example.code):
            assert (REPO / name).is_file(), f"{example.name} names {name}, which does not exist"


def _uploaded_files(code: str) -> list[str]:
    # `-F field=@path` uploads and the sample files the examples read.
    return re.findall(r"=@([\w./-]+)", code) + re.findall(r"\bload/data/[\w./-]+", code)


def test_the_examples_are_found() -> None:
    # A parser that found nothing would make every test above pass vacuously.
    documents = {example.document.name for example in api_examples()}
    assert len(api_examples()) >= 8
    assert {"README.md", "gateway.md"} <= documents


def test_every_request_of_the_postman_collection_answers_as_documented(
    doc_stack: DocStack,
) -> None:
    collection = json.loads(POSTMAN_FILE.read_text(encoding="utf-8"))
    outcomes = run_collection(collection, doc_stack.base, files_root=REPO)

    assert len(outcomes) == len(collection["item"]) >= 15
    failed = [o for o in outcomes if not o.passed]
    assert failed == [], "\n".join(f"{o.name}: {o.status} {o.body}" for o in failed)


def test_the_curl_file_runs_every_request(doc_stack: DocStack) -> None:
    result = subprocess.run(
        ["bash", str(CURL_FILE)],
        cwd=REPO,
        env={**doc_stack.env, "MTC_URL": doc_stack.base},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    calls = [line for line in result.stdout.splitlines() if re.match(r"^\d{3} ", line)]
    assert len(calls) == CURL_FILE.read_text(encoding="utf-8").count("\ncall ")
