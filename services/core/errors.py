"""Domain errors: each carries its HTTP status and a stable machine-readable `error_type`.

Model and dataplane code raise these; one exception handler (see `services.core.api`)
turns them into `{"detail": ..., "error_type": ...}` responses. Nothing here imports a web
framework, so models stay free of HTTP concerns.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MtcError(Exception):
    """Base class of every error that maps to an HTTP response."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body sent to the client."""
        return {"detail": self.detail, "error_type": self.error_type}


class InvalidInput(MtcError):
    """The request is well-formed JSON of the right shape but its content is unusable."""

    status_code = 400
    error_type = "invalid_input"


class AccessDenied(MtcError):
    """The request names a resource outside what the service is allowed to read."""

    status_code = 403
    error_type = "forbidden"


class InputNotFound(MtcError):
    """The request names an input (an object in a store) that does not exist."""

    status_code = 404
    error_type = "input_not_found"


class UnusableContent(MtcError):
    """The input decodes but holds nothing to classify (silent or empty audio)."""

    status_code = 422
    error_type = "unusable_content"


class UnknownTask(MtcError):
    """No model serves the requested task."""

    status_code = 404
    error_type = "unknown_task"


class PayloadTooLarge(MtcError):
    """A size limit (body bytes, items per request, characters per item) was exceeded."""

    status_code = 413
    error_type = "payload_too_large"


class BatchTooLarge(PayloadTooLarge):
    """More items in one request than the service accepts."""

    error_type = "batch_too_large"


class ItemTooLarge(PayloadTooLarge):
    """One item of the request is larger than the per-item limit."""

    error_type = "item_too_large"


class BodyTooLarge(PayloadTooLarge):
    """The request body is larger than the server accepts."""

    error_type = "body_too_large"

    @classmethod
    def over(cls, limit: int, whose: str = "") -> BodyTooLarge:
        """For a body over `limit` bytes; `whose` says which limit that is."""
        return cls(f"request body is larger than {limit} bytes{whose}")


class UnsupportedMediaType(MtcError):
    """The body or an uploaded file is of a type the service does not read."""

    status_code = 415
    error_type = "unsupported_media_type"


class Overloaded(MtcError):
    """The work queue is full; the client should retry later."""

    status_code = 429
    error_type = "overloaded"


class ModelNotReady(MtcError):
    """The model is still loading, or failed to load."""

    status_code = 503
    error_type = "model_not_ready"


class UpstreamUnavailable(MtcError):
    """The gateway could not reach the service for a task."""

    status_code = 503
    error_type = "upstream_unavailable"


class RequestTimedOut(MtcError):
    """The work did not finish within the configured request timeout."""

    status_code = 504
    error_type = "timeout"


class UpstreamTimeout(MtcError):
    """The service for a task did not answer within the gateway's timeout."""

    status_code = 504
    error_type = "upstream_timeout"


class ModelLoadError(Exception):
    """A model could not be fetched, verified or loaded. Keeps the service not-ready."""
