"""The image kind: photos in, pose labels and keypoints out (`python -m services.pose`)."""

from services.core.errors import UnsupportedMediaType
from services.core.kinds import MIB, KindRoute, ModelKind, ServiceImage, json_body, route_errors
from services.wire.contracts import (
    MULTIPART_IMAGES_SCHEMA,
    PoseJsonRequest,
    PosePredictResponse,
)

KIND = ModelKind(
    name="image",
    service="services.pose",
    routes=(
        KindRoute(
            "predict",
            "Classify photos (multipart upload or base64 JSON)",
            {
                "required": True,
                "content": {
                    "multipart/form-data": {"schema": MULTIPART_IMAGES_SCHEMA},
                    **json_body(PoseJsonRequest)["content"],
                },
            },
            PosePredictResponse,
            route_errors(UnsupportedMediaType),
        ),
    ),
    default_body_limit=64 * MIB,
    request_models=(PoseJsonRequest,),
    starters={"pose": ".mtc/models/pose"},
    position=2,
    try_it="-F image=@photo.jpg",
    # OpenCV (a mediapipe dependency) does not import without libGL and GLib.
    image=ServiceImage(
        "pose", extra="pose", size_budget_mb=2550, system_packages=("libgl1", "libglib2.0-0")
    ),
)
