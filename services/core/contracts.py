"""Wire schemas of the public prediction API, shared by the services and the gateway.

The services validate with them; the gateway, which forwards bodies untouched, uses them
to document the same contract in its own OpenAPI document.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class LabelScoreBody(BaseModel):
    """One label of the model and its score (a probability) for one item."""

    label: str
    score: float


class ModelRef(BaseModel):
    """The model that answered."""

    name: str
    version: str


class TextPredictRequest(BaseModel):
    """Texts to classify; the answer holds one prediction list per text, in the same order."""

    text: list[str] = Field(
        min_length=1,
        description="One or more texts (at most MTC_MAX_ITEMS_PER_REQUEST, default 1,024, "
        "each at most MTC_MAX_TEXT_CHARS characters, default 10,000).",
        examples=[["An absolute triumph, moving and beautifully acted"]],
    )


class TextPredictResponse(BaseModel):
    """Every label per text, highest score first, texts in input order."""

    model: ModelRef
    predictions: list[list[LabelScoreBody]] = Field(
        description="Per text, every label of the model sorted by score, highest first."
    )
    truncated: list[int] = Field(
        default_factory=list,
        description="Indices of texts longer than the model's token limit, which were "
        "classified on their beginning only.",
    )
