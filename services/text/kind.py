"""The text kind: lists of texts in, ranked labels out (`python -m services.text`)."""

from services.core.kinds import MIB, KindRoute, ModelKind, ServiceImage, json_body, route_errors
from services.wire.contracts import TextPredictRequest, TextPredictResponse

KIND = ModelKind(
    name="text",
    service="services.text",
    routes=(
        KindRoute(
            "predict",
            "Classify texts",
            json_body(TextPredictRequest),
            TextPredictResponse,
            route_errors(),
        ),
    ),
    default_body_limit=20 * MIB,
    request_models=(TextPredictRequest,),
    starters={"sentiment": ".mtc/models/sentiment", "disaster": ".mtc/models/disaster"},
    position=1,
    try_it="-H 'content-type: application/json' "
    '-d \'{"text": ["An absolute triumph, moving and beautifully acted"]}\'',
    batch_jobs=True,
    image=ServiceImage("text", extra="text", size_budget_mb=1750),
)
