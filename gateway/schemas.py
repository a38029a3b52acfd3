"""Request and response bodies of the gateway's public API.

The `/v1` predict bodies are the services' contract (`services.wire.contracts`), used for
the OpenAPI document only: the gateway forwards those bodies untouched, so each service's
own validation answers the client. The compatibility routes' bodies are validated by the
gateway itself.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from services.wire.contracts import DEFAULT_MAX_IMAGES, DEFAULT_MAX_TEXTS, BatchRequest, TaskKind

MAX_IMAGE_URL_CHARS = 2048
"""Longest image URL `/api/v1/pose_classifier` accepts."""


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
    kind: TaskKind | None = Field(
        default=None,
        description="What the task classifies (`text`, `image`, `audio` or another declared "
        "kind), which says which request body its predict route takes. Set by the gateway.",
    )
    replicas: int | None = Field(
        default=None, description="Service URLs configured for the task. Set by the gateway."
    )
    replicas_ready: int | None = Field(
        default=None,
        description="How many of them report their model ready; the task is ready when at "
        "least one does. Set by the gateway.",
    )


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


# --------------------------------------------------------------------------- compatibility


class BulkPredictRequest(BatchRequest):
    """Texts to rate as positive or negative (`POST /project/bulk-predict`)."""

    batch_field: ClassVar[str] = "text"
    batch_noun: ClassVar[str] = "texts"
    limit_setting: ClassVar[str] = "MTC_GATEWAY_MAX_TEXTS_PER_REQUEST"

    text: list[str] = Field(
        min_length=1,
        max_length=DEFAULT_MAX_TEXTS,
        examples=[["I loved this film", "a tedious, badly written mess"]],
    )


class BulkLabelScore(BaseModel):
    """One sentiment label (upper case) and its probability."""

    label: str = Field(examples=["POSITIVE"], description="`POSITIVE` or `NEGATIVE`.")
    score: float


class BulkPredictResponse(BaseModel):
    """Per text, both labels, highest score first."""

    predictions: list[list[BulkLabelScore]]


class HealthyResponse(BaseModel):
    """The sentiment model can answer."""

    status: Literal["healthy"] = "healthy"


class LegacyTextRequest(BulkPredictRequest):
    """Texts to classify (`POST /api/v1/sentiment_analysis`, `/api/v1/disaster_classifier`)."""

    text: list[str] = Field(
        min_length=1,
        max_length=DEFAULT_MAX_TEXTS,
        examples=[["Forest fire near La Ronge Sask. Canada"]],
    )


class LegacyTextResponse(BaseModel):
    """The top label and its score per text, in input order."""

    model_name: str
    text: list[str] = Field(description="The texts, as sent.")
    labels: list[str] = Field(description="Per text, the label with the highest score.")
    scores: list[float] = Field(description="Per text, the score of that label.")
    prediction_time: int = Field(
        description="Milliseconds from forwarding to the model service until its answer."
    )


class LegacyPoseRequest(BatchRequest):
    """Photos to classify (`POST /api/v1/pose_classifier`): base64 `images`, or the `url`
    of each photo on a host the gateway may fetch from."""

    batch_field: ClassVar[str] = "images"
    batch_noun: ClassVar[str] = "images"
    limit_setting: ClassVar[str] = "MTC_GATEWAY_MAX_IMAGES_PER_REQUEST"
    also_capped: ClassVar[dict[str, str]] = {"url": "URLs"}

    images: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=DEFAULT_MAX_IMAGES,
        description="Base64-encoded JPEG, PNG or WebP files (a `data:image/...;base64,` "
        "prefix is allowed).",
    )
    # No `examples`: the API collections send `images`, and a body may not carry both.
    url: list[Annotated[str, Field(max_length=MAX_IMAGE_URL_CHARS)]] | None = Field(
        default=None,
        min_length=1,
        max_length=DEFAULT_MAX_IMAGES,
        description="http(s) URLs of the photos, instead of `images`: fetched by the "
        "gateway from the hosts of MTC_GATEWAY_IMAGE_URL_HOSTS only (none by default: 403 "
        "`url_not_allowed`), each within MTC_GATEWAY_IMAGE_URL_MAX_BYTES and "
        "MTC_GATEWAY_IMAGE_URL_TIMEOUT_SECONDS.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.images is None) == (self.url is None):
            raise ValueError("give exactly one of `images` and `url`")
        return self


class LegacyPoseResponse(BaseModel):
    """The top label and its score per image, in input order."""

    model_name: str
    labels: list[str] = Field(description="Per image, the label with the highest score.")
    scores: list[float] = Field(description="Per image, the score of that label.")
    prediction_time: int = Field(
        description="Milliseconds from forwarding to the model service until its answer."
    )


class EmergencyCallPrediction(BaseModel):
    """The emergency-call project's answer (`POST /predict`): the call's label and the
    probability of every label, highest first."""

    filename: str | None = Field(description="The uploaded file's name, as sent.")
    label: str = Field(description="The label with the highest probability.")
    probabilities: dict[str, float] = Field(
        description="Label -> probability (the fused scores of mtc's audio model), highest first.",
        examples=[{"emergency": 0.91, "routine": 0.09}],
    )


class EmergencyCallS3Prediction(BaseModel):
    """The emergency-call project's answer for a recording in S3 (`POST /predict_s3`)."""

    s3_uri: str = Field(description="The recording's URI, as sent.")
    label: str = Field(description="The label with the highest probability.")
    probabilities: dict[str, float] = Field(
        description="Label -> probability, highest first.",
        examples=[{"emergency": 0.91, "routine": 0.09}],
    )


class ToneRequest(BaseModel):
    """One text to rate (`POST /api/predict/`)."""

    text: str = Field(examples=["The support team solved my problem in minutes"])


class TonePrediction(BaseModel):
    """The rating of the text, from the batch job that made it."""

    text: str = Field(description="The text, as sent.")
    label: str = Field(description="The label with the highest score.")
    score: float = Field(description="Its score.")
    job_id: str = Field(description="The job that made the prediction (`GET /v1/jobs/{id}`).")
