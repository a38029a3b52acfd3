"""The one place where domain errors become HTTP responses (used by services and gateway)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.core.errors import MtcError

logger = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """Body of every non-validation error."""

    detail: str
    error_type: str


async def _handle_mtc_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MtcError)
    if exc.status_code >= 500:
        logger.warning("%s %s -> %d %s", request.method, request.url.path, exc.status_code, exc)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error(
        "%s %s -> 500: unhandled %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc_info=exc,
    )
    body = {"detail": "internal error; see the service log", "error_type": "internal_error"}
    return JSONResponse(body, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Map every `MtcError` to `{"detail", "error_type"}` with its status code.

    FastAPI's own 422 validation body and its 404/405 bodies stay as they are, because
    existing clients parse them.
    """
    app.add_exception_handler(MtcError, _handle_mtc_error)
    # A bug still answers in the documented error shape (the traceback goes to the log).
    app.add_exception_handler(Exception, _handle_unexpected)


def error_responses(*errors: type[MtcError]) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses=` entries for the errors a route can return."""
    responses: dict[int | str, dict[str, object]] = {}
    for error in errors:
        entry = responses.setdefault(
            error.status_code,
            {"description": "", "model": ErrorBody},
        )
        text = (error.__doc__ or error.__name__).strip().splitlines()[0]
        described = str(entry["description"])
        entry["description"] = f"{described} `{error.error_type}`: {text}".strip()
    return responses
