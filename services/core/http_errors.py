"""The one place where domain errors become HTTP responses (used by services and gateway)."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import Send

from services.core.errors import MtcError, UnsupportedMediaType

logger = logging.getLogger(__name__)

# Absolute paths and URLs (file://, s3://, http://...): where things live stays in the log.
_LOCATION = re.compile(
    r"(?:\b[a-z][a-z0-9+.-]*://[^\s'\"]*|(?<![\w.])/[^\s'\":,;]+)", re.IGNORECASE
)


# Memory addresses, as in a library's message quoting an object's repr (Pillow's "cannot
# identify image file <_io.BytesIO object at 0x7f3a...>"): they help whoever maps the
# process's memory, no client. Six hex digits or more, so a byte value such as 0xff stays.
_ADDRESS = re.compile(r"\b0x[0-9a-f]{6,}\b", re.IGNORECASE)


def without_addresses(text: str) -> str:
    """`text` with memory addresses replaced by `<address>`."""
    return _ADDRESS.sub("<address>", text)


def without_locations(text: str) -> str:
    """`text` for a response body: paths and URLs replaced by `<redacted>`, memory
    addresses by `<address>`."""
    return _LOCATION.sub("<redacted>", without_addresses(text))


class ErrorBody(BaseModel):
    """Body of every non-validation error."""

    detail: str
    error_type: str


class ValidationIssue(BaseModel):
    """One problem FastAPI found in a request."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """FastAPI's own 422 body, kept because existing clients parse it."""

    detail: list[ValidationIssue]


async def send_error(send: Send, error: MtcError) -> None:
    """Answer with `error` straight on the ASGI channel, for middleware that refuses a request
    before any route (body limits, quotas, the gateway's byte budget, forwarding) runs."""
    body = json.dumps({**error.body(), "detail": without_addresses(error.detail)}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.encode(), value.encode()) for name, value in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _handle_mtc_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MtcError)
    if exc.status_code >= 500:
        logger.warning("%s %s -> %d %s", request.method, request.url.path, exc.status_code, exc)
    # Details may quote a library's message; whatever it held, no address leaves.
    body = {**exc.body(), "detail": without_addresses(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:
        # A body FastAPI could not parse (e.g. invalid UTF-8) gets the documented error shape.
        body = {"detail": str(exc.detail), "error_type": "invalid_input"}
        return JSONResponse(body, status_code=400, headers=exc.headers)
    return await http_exception_handler(request, exc)


MAX_VALIDATION_ISSUES = 10
"""Issues listed in a 422 body: enough to fix a request, while a 1 MB list of wrong items
(hundreds of thousands of issues) cannot make the error body itself a large allocation."""


def _body_not_json(errors: list[Any]) -> bool:
    # FastAPI hands a route the raw bytes when the Content-Type is not JSON; the schema then
    # reports the whole body (`loc == ("body",)`) with those bytes as its input.
    return any(
        tuple(error.get("loc", ())) == ("body",) and isinstance(error.get("input"), bytes)
        for error in errors
    )


MAX_ECHOED_BYTES = 64
"""FastAPI's 422 issues echo the offending `input` (and a `ctx`); clients of the W255 API
compare those bodies, so small values are kept as FastAPI writes them. Larger ones (a whole
body, a long text) are left out: an error body never grows with the request."""


def _issue(error: dict[str, Any]) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "type": str(error.get("type", "")),
        "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
        "msg": str(error.get("msg", ""))[:200],
    }
    for key in ("input", "ctx"):
        if key in error and not isinstance(error[key], bytes | bytearray):
            try:
                encoded = json.dumps(error[key], ensure_ascii=True, allow_nan=False, default=str)
            except (TypeError, ValueError):
                continue
            if len(encoded) <= MAX_ECHOED_BYTES:
                issue[key] = json.loads(encoded)
    return issue


async def _handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if _body_not_json(errors):
        content_type = request.headers.get("content-type", "")[:100]
        error = UnsupportedMediaType(
            f"this route reads a JSON body, sent as Content-Type {content_type!r}; "
            "send it with Content-Type: application/json (curl: -H 'content-type: "
            "application/json')"
        )
        return JSONResponse(error.body(), status_code=error.status_code)
    issues = [_issue(error) for error in errors[:MAX_VALIDATION_ISSUES]]
    # ASCII escapes: a message quoting a lone surrogate still encodes.
    content = json.dumps({"detail": issues}, ensure_ascii=True)
    return Response(content, status_code=422, media_type="application/json")


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
    app.add_exception_handler(HTTPException, _handle_http_exception)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    # A bug still answers in the documented error shape (the traceback goes to the log).
    app.add_exception_handler(Exception, _handle_unexpected)


def error_responses(
    *errors: type[MtcError], validation: bool = False
) -> dict[int | str, dict[str, object]]:
    """OpenAPI `responses=` entries for the errors a route can return.

    `validation` documents FastAPI's 422 body for routes that read their body by hand;
    a 422 domain error on the same route makes the 422 entry either shape.
    """
    responses: dict[int | str, dict[str, object]] = {}
    if validation:
        responses[422] = {"description": "Validation error", "model": ValidationErrorBody}
    for error in errors:
        entry = responses.setdefault(
            error.status_code,
            {"description": "", "model": ErrorBody},
        )
        text = (error.__doc__ or error.__name__).strip().splitlines()[0]
        described = str(entry["description"])
        entry["description"] = f"{described} `{error.error_type}`: {text}".strip()
    if any(error.status_code == 422 for error in errors):
        # Body validation also answers 422, in FastAPI's shape, on every route with a body.
        responses[422]["model"] = ErrorBody | ValidationErrorBody
    return responses
