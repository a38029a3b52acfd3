"""The hot path of the gateway: `POST /v1/{task}/{route}` forwarded at the ASGI level.

The documented task routes (`gateway.routes.task_router`) only relay bytes, yet FastAPI's
routing, request object, dependency solving and exception layers cost about as much CPU as
the forwarding itself. This middleware answers exactly those routes directly, with the same
result: the body goes to `Upstreams.forward` as sent, the service's answer is relayed with
its timing headers, and a gateway error gets the same `{"detail", "error_type"}` body and
status as from the app's error handlers. It sits inside the request id, traffic, API key and
body size middlewares, so they apply unchanged; every other request goes on to the app.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.routes import ForwardedRoute
from gateway.upstreams import Upstreams, body_too_large
from gateway.work_meter import charge_body
from services.core.errors import MtcError
from services.core.http_errors import send_error

logger = logging.getLogger(__name__)


class DirectForwarding:
    """Forward `POST` requests to the given paths straight to the task's service."""

    def __init__(self, app: ASGIApp, routes: Iterable[ForwardedRoute]) -> None:
        """`routes`: the gateway's route table (`gateway.routes.route_table`)."""
        self.app = app
        self.routes = {entry.path: entry for entry in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        upstreams = scope.get("state", {}).get("upstreams")
        if entry is None or scope["method"] != "POST" or not isinstance(upstreams, Upstreams):
            await self.app(scope, receive, send)
            return
        task, limit = entry.task, entry.body_limit
        content_type: str | None = None
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                declared = int(value)
        try:
            if declared is not None and declared > limit:
                raise body_too_large(task, limit)
            body = await _read_body(receive, task, limit)
            if body is None:
                return  # The client went away before sending its whole body.
            await charge_body(body, content_type)
            answer = await upstreams.forward(
                task,
                scope["path"],
                body=body,
                content_type=content_type,
                query=scope["query_string"].decode("latin-1"),
            )
        except MtcError as error:
            if error.status_code >= 500:
                logger.warning("POST %s -> %d %s", scope["path"], error.status_code, error)
            await send_error(send, error)
            return
        await Response(answer.content, answer.status_code, answer.headers)(scope, receive, send)


async def _read_body(receive: Receive, task: str, limit: int) -> bytearray | None:
    """The whole request body, or None if the client disconnected first; 413 once it
    passes `limit` (a body sent without a length is counted as it arrives). Gathered in
    one growing buffer, forwarded as it is: no second copy of a large body is made."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if len(body) + len(chunk) > limit:
            raise body_too_large(task, limit)
        body += chunk
        if not message.get("more_body", False):
            break
    return body
