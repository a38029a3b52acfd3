"""A throwaway model kind (`wordcount`: short sentences from long ones), written as
docs/add-a-kind.md says into a copy of the tree: what the add-a-kind tests add."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

KIND_PACKAGE = {
    "__init__.py": '"""A throwaway kind: tells short sentences from long ones."""\n',
    "kind.py": '''"""The `wordcount` kind, as the gateway and the local stack see it."""

from pydantic import BaseModel, Field

from services.core.errors import InvalidInput
from services.core.kinds import (
    MIB, SERVING_ERRORS, SIZE_ERRORS, KindRoute, ModelKind, ServiceImage, json_body
)


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
    image=ServiceImage("wordcount", extra="wordcount", size_budget_mb=400),
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


def tree_with_a_new_kind(root: Path, parts: tuple[str, ...] = ("services", "gateway")) -> Path:
    """A copy of `parts` of the tree (directories or files) with the kind's package added,
    and nothing else changed."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for part in parts:
        if (REPO / part).is_dir():
            shutil.copytree(REPO / part, root / part, ignore=ignore)
        else:
            (root / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / part, root / part)
    package = root / "services" / "wordcount"
    package.mkdir()
    for name, source in KIND_PACKAGE.items():
        (package / name).write_text(source, encoding="utf-8")
    return root
