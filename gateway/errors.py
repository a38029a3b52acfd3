"""Errors only the gateway raises, in the shared `{"detail", "error_type"}` shape.

They extend `services.core.errors.MtcError`, so the one handler installed by
`services.core.http_errors` maps them like every other error.
"""

from __future__ import annotations

from services.core.errors import MtcError

API_KEY_CHALLENGE = {"www-authenticate": 'Bearer realm="mtc"'}


class MissingApiKey(MtcError):
    """The request carries no API key (`Authorization: Bearer` or `X-API-Key`)."""

    status_code = 401
    error_type = "missing_api_key"


class InvalidApiKey(MtcError):
    """The API key sent is not one of the gateway's keys."""

    status_code = 401
    error_type = "invalid_api_key"


class RateLimited(MtcError):
    """The API key used up its request quota; retry after `Retry-After` seconds."""

    status_code = 429
    error_type = "rate_limited"


class UpstreamInvalidAnswer(MtcError):
    """The task's service answered with a body the gateway could not read."""

    status_code = 502
    error_type = "upstream_invalid_answer"


class UrlNotAllowed(MtcError):
    """An image URL (or a redirect it answered with) names a host the gateway may not
    fetch from (`MTC_GATEWAY_IMAGE_URL_HOSTS`), or one that resolves to a private address."""

    status_code = 403
    error_type = "url_not_allowed"


class UrlFetchFailed(MtcError):
    """An image URL could not be fetched: no connection, an error status, or too many
    redirects."""

    status_code = 502
    error_type = "url_fetch_failed"


class UrlFetchTimeout(MtcError):
    """An image URL did not deliver its image within `MTC_GATEWAY_IMAGE_URL_TIMEOUT_SECONDS`."""

    status_code = 504
    error_type = "url_timeout"


class AsyncPredictionFailed(MtcError):
    """The job behind `POST /api/predict/` failed or was cancelled; the detail says why."""

    status_code = 502
    error_type = "prediction_failed"
