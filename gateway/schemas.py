"""Request and response bodies of the gateway's public API.

The predict bodies describe the services' contract for the OpenAPI document only: the gateway
forwards predict bodies untouched, so each service's own validation answers the client.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.core.contracts import TextPredictRequest, TextPredictResponse

__all__ = [
    "LiveResponse",
    "ModelStatus",
    "ModelsResponse",
    "NotReadyBody",
    "ReadyResponse",
    "TextPredictRequest",
    "TextPredictResponse",
]


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
