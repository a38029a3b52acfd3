"""Adding a model kind, as docs/add-a-kind.md says: a throwaway kind written as one package
in a copy of the tree, with no file outside it touched, is served by the local stack and
reached through the gateway, which documents its route and applies its body limit."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import (
    free_port,
    free_port_run,
    local_stack_command,
    start,
    stop,
    wait_for_http,
)
from tests.support.throwaway_kind import tree_with_a_new_kind

pytestmark = pytest.mark.e2e


def test_a_kind_declared_in_its_own_package_is_served_through_the_gateway(
    tmp_path: Path,
) -> None:
    tree = tree_with_a_new_kind(tmp_path / "tree")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    gateway_port, first_service_port = free_port(), free_port_run(1)
    command = local_stack_command(
        gateway_port,
        first_service_port,
        "--no-jobs",
        "--serve",
        f"wordcount:words=file://{model_dir}",
    )
    log = tmp_path / "stack.log"
    stack = start(command, log=log, cwd=tree)
    base = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_for_http(f"{base}/health/ready", stack, timeout=120)
        # The stack prints its banner (with each kind's try-it line) once every service is
        # ready, which may be a moment after the gateway is.
        deadline = time.monotonic() + 60
        while "mtc is up" not in log.read_text(encoding="utf-8"):
            assert stack.poll() is None, "the stack exited before printing its banner"
            assert time.monotonic() < deadline, "no banner within 60 s"
            time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=30) as client:
            models = client.get("/v1/models").json()["models"]
            answer = client.post(
                "/v1/words/predict",
                json={"sentences": ["Hello there", "This sentence has rather more words"]},
            )
            too_large = client.post(
                "/v1/words/predict",
                content=b'{"sentences": ["' + b"x" * (256 * 1024) + b'"]}',
                headers={"content-type": "application/json"},
            )
            document = client.get("/openapi.json").json()
    finally:
        stop(stack)

    assert [(m["task"], m["kind"], m["ready"]) for m in models] == [("words", "wordcount", True)]
    assert answer.status_code == 200, answer.text
    assert [p[0]["label"] for p in answer.json()["predictions"]] == ["short", "long"]
    # The gateway refuses a body over the kind's declared limit without forwarding it.
    assert too_large.status_code == 413
    assert too_large.json()["error_type"] == "body_too_large"
    route = document["paths"]["/v1/words/predict"]["post"]
    assert route["summary"] == "Tell short sentences from long ones (words)"
    schema = route["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/SentencesRequest"}
    assert "SentencesRequest" in document["components"]["schemas"]
    assert "wordcount:" in log.read_text(encoding="utf-8")  # the stack's try-it line
