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
