"""Wire schemas of the public prediction API, shared by the services and the gateway.

The services validate with them; the gateway, which forwards bodies untouched, uses them
to document the same contract in its own OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo

from services.core.errors import BatchTooLarge

TaskKind = str
"""The name of a model kind (`services.core.kinds`: text, image, audio, or one a package
declares): what a task's service takes in; the gateway and the jobs worker route by it."""
LogLevel = Annotated[
    Literal["critical", "error", "warning", "info", "debug"],
    BeforeValidator(lambda level: level.lower() if isinstance(level, str) else level),
]
"""Log levels the gateway and the jobs worker accept (uvicorn's names, in any case)."""


class LabelScoreBody(BaseModel):
    """One label of the model and its score (a probability) for one item."""

    label: str
    score: float


class ModelRef(BaseModel):
    """The model that answered."""

    name: str
    version: str


DEFAULT_MAX_TEXTS = 1024
"""Texts per request unless configured otherwise (`MTC_MAX_ITEMS_PER_REQUEST`)."""
DEFAULT_MAX_IMAGES = 16
"""Images per request unless configured otherwise (`MTC_MAX_IMAGES_PER_REQUEST`)."""


class BatchRequest(BaseModel):
    """A request body whose list field `batch_field` holds the items to classify.

    The schema caps that list (`max_length`, `maxItems` in OpenAPI) at the per-request
    limit; `with_limit` makes the schema of a configured limit. Pydantic stops validating a
    list as soon as it passes `max_length`, so 500,000 wrong items cost at most the cap's
    worth of item checks and one error, not 500,000 errors; the length error is answered
    413 `batch_too_large` naming the setting, like every other size limit.
    """

    batch_field: ClassVar[str]
    """Name of the list field."""
    batch_noun: ClassVar[str] = "items"
    """What its items are called in the refusal (`texts`, `images`, ...)."""
    also_capped: ClassVar[dict[str, str]] = {}
    """Other list fields capped at the same limit -> what their items are called."""
    batch_unit: ClassVar[str] = "in one request"
    """What holds them, in the refusal."""
    limit_setting: ClassVar[str]
    """The setting the limit comes from, named in the refusal."""
    limit_hint: ClassVar[str] = ""
    """Appended to the refusal: what to do instead."""

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_long_batches(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        try:
            return handler(data)
        except ValidationError as error:
            nouns: dict[tuple[int | str, ...], str] = {(cls.batch_field,): cls.batch_noun}
            nouns.update(((field,), noun) for field, noun in cls.also_capped.items())
            for issue in error.errors(include_url=False):
                noun = nouns.get(issue["loc"])
                if issue["type"] == "too_long" and noun is not None:
                    context = issue.get("ctx", {})
                    # Raised as a domain error, which pydantic lets through unchanged.
                    raise BatchTooLarge(
                        f"{context.get('actual_length')} {noun} {cls.batch_unit}; "
                        f"the limit is {context.get('max_length')} ({cls.limit_setting})"
                        f"{cls.limit_hint}"
                    ) from None
            raise

    @classmethod
    def with_limit(cls, max_items: int, *, setting: str | None = None) -> type[Self]:
        """This schema with its lists capped at `max_items` (a subclass of the same name, so
        routes validate, and OpenAPI documents, the configured limit); `setting` names the
        setting the limit comes from when it is not `limit_setting`."""
        fields: dict[str, Any] = {}
        for name in (cls.batch_field, *cls.also_capped):
            original = cls.model_fields[name]
            capped = FieldInfo.merge_field_infos(original, Field(max_length=max_items))
            fields[name] = (original.annotation, capped)
        bounded = create_model(cls.__name__, __base__=cls, __module__=cls.__module__, **fields)
        bounded.__doc__ = cls.__doc__
        if setting is not None:
            bounded.limit_setting = setting
        return bounded

    @classmethod
    def max_items(cls) -> int | None:
        """The cap of the list, if any."""
        for constraint in cls.model_fields[cls.batch_field].metadata:
            limit = getattr(constraint, "max_length", None)
            if isinstance(limit, int):
                return limit
        return None


class TextPredictRequest(BatchRequest):
    """Texts to classify; the answer holds one prediction list per text, in the same order."""

    batch_field: ClassVar[str] = "text"
    batch_noun: ClassVar[str] = "texts"
    limit_setting: ClassVar[str] = "MTC_MAX_ITEMS_PER_REQUEST"

    text: list[str] = Field(
        min_length=1,
        max_length=DEFAULT_MAX_TEXTS,
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


class PoseJsonRequest(BatchRequest):
    """Images to classify as base64 strings, in the order their predictions are returned."""

    batch_field: ClassVar[str] = "images"
    batch_noun: ClassVar[str] = "images"
    limit_setting: ClassVar[str] = "MTC_MAX_IMAGES_PER_REQUEST"

    images: list[str] = Field(
        min_length=1,
        max_length=DEFAULT_MAX_IMAGES,
        description="Base64-encoded JPEG, PNG or WebP files (a `data:image/...;base64,` "
        "prefix is allowed), at most MTC_MAX_IMAGES_PER_REQUEST (default 16).",
    )


class KeypointBody(BaseModel):
    """One body landmark, as a fraction of the upright image's width and height."""

    name: str
    x: float
    y: float
    visibility: float


class PosePredictResponse(BaseModel):
    """Every label per image, highest score first, images in input order."""

    model: ModelRef
    predictions: list[list[LabelScoreBody]]
    keypoints: list[list[KeypointBody] | None] = Field(
        description="Per image, the 33 body landmarks found (x, y as fractions of the upright "
        "image's width and height, 0 at the top left), or null when no person was found or "
        "the model does not locate landmarks."
    )


IMAGE_FILE_FIELD = "image"
MULTIPART_IMAGES_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        IMAGE_FILE_FIELD: {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "One part per image (JPEG, PNG or WebP; the type is read from the "
            "content, not the file name).",
        }
    },
    "required": [IMAGE_FILE_FIELD],
}
"""OpenAPI schema of a multipart image upload (one `image` part per image)."""


class AudioClipDetail(BaseModel):
    """What the fused prediction of one clip was made from."""

    audio: list[LabelScoreBody] = Field(
        description="The audio branch's `calm` and `urgent` scores (how the call sounds), "
        "highest first."
    )
    text: list[LabelScoreBody] | None = Field(
        description="Scores of the transcript classifier, highest first; null when there "
        "was no transcript (ASR off and none sent, or nothing was recognised)."
    )
    transcript: str | None = Field(description="The transcript that was classified.")
    transcript_source: Literal["request", "asr", "none"] = Field(
        description="`request`: sent by the client; `asr`: recognised by Whisper; `none`."
    )
    transcript_language: Literal["en", "ko"] | None = Field(
        default=None,
        description="Which transcript classifier scored `text`: `en` (English) or `ko` "
        "(Korean, for transcripts written mostly in Hangul; sent transcripts only, since "
        "speech recognition is English-only); null when there was no transcript.",
    )
    duration_seconds: float = Field(description="Length of the clip that was analysed.")


class AudioPredictResponse(BaseModel):
    """Fused scores per clip (one list per clip, highest first), and their sources."""

    model: ModelRef
    predictions: list[list[LabelScoreBody]] = Field(
        description="Per clip, every label with its fused score, highest first."
    )
    clips: list[AudioClipDetail]


class AudioS3Request(BaseModel):
    """A clip stored in S3, in an allow-listed bucket and prefix."""

    s3_uri: str = Field(
        min_length=6,
        max_length=2048,
        description="`s3://bucket/key` of a WAV, FLAC, OGG or MP3 file.",
        examples=["s3://calls/incoming/call-0042.wav"],
    )
    transcript: str | None = Field(
        default=None,
        description="What was said, if known; otherwise the service transcribes the clip "
        "(unless ASR is off).",
    )


AUDIO_FILE_FIELD = "audio"
TRANSCRIPT_FIELD = "transcript"
MULTIPART_AUDIO_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        AUDIO_FILE_FIELD: {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "One part per clip (WAV, FLAC, OGG/Vorbis or MP3; the type is read "
            "from the content, not the file name).",
        },
        TRANSCRIPT_FIELD: {
            "type": "array",
            "items": {"type": "string"},
            "description": "Optional: none, or one transcript field per clip in the same "
            "order; clips without one are transcribed by the service.",
        },
    },
    "required": [AUDIO_FILE_FIELD],
}
"""OpenAPI schema of a multipart audio upload."""
