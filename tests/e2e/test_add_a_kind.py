"""Adding a model kind, as docs/add-a-kind.md says: a throwaway kind written as one package
in a copy of the tree, with no file outside it touched, is served by the local stack and
reached through the gateway, which documents its route and applies its body limit."""

from __future__ import annotations

import shutil
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

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

KIND_PACKAGE = {
    "__init__.py": '"""A throwaway kind: tells short sentences from long ones."""\n',
    "kind.py": '''"""The `wordcount` kind, as the gateway and the local stack see it."""

from pydantic import BaseModel, Field

from services.core.errors import InvalidInput
from services.core.kinds import MIB, SERVING_ERRORS, SIZE_ERRORS, KindRoute, ModelKind, json_body


class SentencesRequest(BaseModel):
    sentences: list[str] = Field(min_length=1, max_length=64)


class SentencesResponse(BaseModel):
    model: dict[str, str]
    predictions: list[list[dict[str, str | float]]]


KIND = ModelKind(
    name="wordcount",
    service="services.wordcount",
    routes=(
        KindRoute(
            "predict",
            "Tell short sentences from long ones",
            json_body(SentencesRequest),
            SentencesResponse,
            (InvalidInput, *SIZE_ERRORS, *SERVING_ERRORS),
        ),
    ),
    default_body_limit=MIB // 4,
    request_models=(SentencesRequest,),
    position=50,
    try_it="-H 'content-type: application/json' -d '{\\"sentences\\": [\\"Hello there\\"]}'",
)
''',
    "__main__.py": '''"""`python -m services.wordcount`: the kind's service."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.core.api import DataPlaneDep, create_app, serve
from services.core.dataplane import DataPlane
from services.core.model import ClassifierModel, ModelMetadata, Prediction, rank_scores
from services.core.settings import ServiceSettings
from services.wordcount.kind import SentencesRequest, SentencesResponse

LABELS = ["short", "long"]


class SentenceLength(ClassifierModel[str, Prediction]):
    output_type = Prediction

    async def load(self, model_dir: Path) -> ModelMetadata:
        return ModelMetadata(name="sentence-length", version="1", labels=LABELS)

    def predict(self, batch: Sequence[str]) -> list[Prediction]:
        rows = [[1.0, 0.0] if len(text.split()) < 5 else [0.0, 1.0] for text in batch]
        return [Prediction(scores) for scores in rank_scores(LABELS, rows)]


def main() -> None:
    settings = ServiceSettings()
    model = SentenceLength()

    def register(app: FastAPI, dataplane: DataPlane[Any, Any]) -> None:
        @app.post(f"/v1/{settings.task}/predict", response_model=SentencesResponse)
        async def predict(body: SentencesRequest, plane: DataPlaneDep) -> dict[str, Any]:
            result = await plane.predict(body.sentences)
            return {
                "model": {"name": model.metadata.name, "version": model.metadata.version},
                "predictions": [
                    [{"label": s.label, "score": s.score} for s in prediction.scores]
                    for prediction in result.predictions
                ],
            }

    serve(create_app(settings, model, register_routes=register, title="wordcount"), settings)


main()
''',
}


def _tree_with_a_new_kind(root: Path) -> Path:
    """A copy of the code with the kind's package added, and nothing else changed."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("services", "gateway"):
        shutil.copytree(REPO / part, root / part, ignore=ignore)
    package = root / "services" / "wordcount"
    package.mkdir()
    for name, source in KIND_PACKAGE.items():
        (package / name).write_text(source, encoding="utf-8")
    return root


def test_a_kind_declared_in_its_own_package_is_served_through_the_gateway(
    tmp_path: Path,
) -> None:
    tree = _tree_with_a_new_kind(tmp_path / "tree")
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
