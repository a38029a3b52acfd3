"""Per-request context: the request id (`X-Request-ID`) and what the gateway learned while
answering (which upstream, which API key), shared by the middlewares, routes and logs."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.work_meter import WorkMeter
    from services.wire.s3_locations import S3Scope

REQUEST_ID_HEADER = "x-request-id"

# A client's id is kept only if it cannot corrupt a log line or a header.
ACCEPTED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


@dataclass
class RequestContext:
    """What is known about the request being answered."""

    request_id: str
    upstream: str | None = None
    """Base URL of the service replica that answered, once one did."""
    api_key_name: str | None = None
    """Name (never the key) of the API key that authenticated the request."""
    s3_scope: S3Scope | None = None
    """The S3 locations the request's API key may name; None while keys are off."""
    work_meter: WorkMeter | None = None
    """Charges the key's quota for the request's work, when a quota applies."""


_current: ContextVar[RequestContext | None] = ContextVar("mtc_gateway_request", default=None)


def current_request() -> RequestContext | None:
    """The context of the request this code runs for, if any."""
    return _current.get()


class RequestIdMiddleware:
    """Give every HTTP request an id: the client's `X-Request-ID` when it is a sane token,
    else a new one. It is set as the current `RequestContext`, forwarded to services,
    written in every log line of the request and returned as `x-request-id`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(raw=scope.get("headers", [])).get(REQUEST_ID_HEADER, "")
        request_id = offered if ACCEPTED_REQUEST_ID.fullmatch(offered) else secrets.token_hex(16)
        token = _current.set(RequestContext(request_id))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name != REQUEST_ID_HEADER.encode()
                ]
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
