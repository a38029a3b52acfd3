"""Request and response bodies of the gateway's public API.

The predict bodies describe the services' contract for the OpenAPI document only: the gateway
forwards predict bodies untouched, so each service's own validation answers the client.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TextPredictRequest(BaseModel):
    """Texts to classify; the answer holds one prediction list per text, in the same order."""

    text: list[str] = Field(
        min_length=1,
        description="The texts to classify (at least one).",
        examples=[["What a lovely day!", "The bridge is on fire, send help"]],
    )


class LabelScore(BaseModel):
    """One label of the model and its score for one text."""

    label: str
    score: float


class ModelRef(BaseModel):
    """The model that answered."""

    name: str
    version: str


class TextPredictResponse(BaseModel):
    """Predictions for every text of the request, in request order."""

    model: ModelRef
    predictions: list[list[LabelScore]] = Field(
        description="Per text, every label of the model sorted by score, highest first."
    )
    truncated: list[int] = Field(
        default_factory=list,
        description="Indices of the texts that were cut to the model's input length.",
    )


class ModelStatus(BaseModel):
    """A task, the model serving it, and whether it can answer now."""

    # Fields a service adds later reach clients without a gateway release.
    model_config = ConfigDict(extra="allow")

    task: str
    name: str | None = None
    version: str | None = None
    labels: list[str] | None = None
    limits: dict[str, Any] | None = None
    ready: bool
    status: str = Field(
        description="`loading`, `ready` or `failed` as reported by the service, or "
        "`unreachable` when the gateway could not get the service's status."
    )
    reason: str | None = Field(default=None, description="Why the task is not ready, if known.")


class ModelsResponse(BaseModel):
    """Every configured task, in configuration order."""

    models: list[ModelStatus]


class LiveResponse(BaseModel):
    """The gateway process is up."""

    status: Literal["alive"] = "alive"


class ReadyResponse(BaseModel):
    """Every task's service is ready."""

    status: Literal["ready"] = "ready"
    tasks: dict[str, str] = Field(description="Task -> status (all `ready`).")


class NotReadyBody(BaseModel):
    """At least one task's service is not ready; `tasks` says which and why."""

    detail: str
    error_type: Literal["not_ready"] = "not_ready"
    tasks: dict[str, str] = Field(description="Task -> status, e.g. `loading` or `unreachable`.")
