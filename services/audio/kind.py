"""The audio kind: recordings (and transcripts) in, fused labels out
(`python -m services.audio`)."""

from services.core.errors import AccessDenied, InputNotFound, UnsupportedMediaType, UnusableContent
from services.core.kinds import MIB, KindRoute, ModelKind, ServiceImage, json_body, route_errors
from services.wire.contracts import MULTIPART_AUDIO_SCHEMA, AudioPredictResponse, AudioS3Request

KIND = ModelKind(
    name="audio",
    service="services.audio",
    routes=(
        KindRoute(
            "predict",
            "Classify recordings (multipart `audio` files, optional `transcript` fields)",
            {
                "required": True,
                "content": {"multipart/form-data": {"schema": MULTIPART_AUDIO_SCHEMA}},
            },
            AudioPredictResponse,
            route_errors(UnsupportedMediaType, UnusableContent),
        ),
        KindRoute(
            "predict-s3",
            "Classify a recording stored in an allowed S3 bucket",
            json_body(AudioS3Request),
            AudioPredictResponse,
            route_errors(UnsupportedMediaType, UnusableContent, AccessDenied, InputNotFound),
        ),
    ),
    default_body_limit=12 * MIB,
    request_models=(AudioS3Request,),
    starters={"audio": ".mtc/models/audio"},
    position=3,
    try_it="-F audio=@call.wav",
    image=ServiceImage("audio", extra="audio", size_budget_mb=2450),
)
