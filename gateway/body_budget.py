"""A cap on the request bodies the gateway holds at once, all requests together.

The gateway reads each body whole before forwarding it (a request whose connection could
not be opened is sent again, to another replica), so without a cap, N concurrent uploads
of the largest accepted size hold N times that size. `BufferedBodyBudget` counts the bytes
of the bodies being held and refuses a request that would pass `max_bytes` with 429
`overloaded` and `Retry-After`, before its body is read.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.errors import Overloaded
from services.core.http_errors import send_error

RETRY_AFTER_SECONDS = 1
"""Bodies held are forwarded within a request's time, so room is usually back soon."""


class _BudgetSpent(Exception):
    """A body sent without a length passed the budget while it was being read."""


class BufferedBodyBudget:
    """ASGI middleware holding the total of request bodies under `max_bytes`.

    A request reserves its declared `Content-Length` on arrival (so a refusal comes before
    any of the body is read); a body sent without a length reserves its chunks as they
    arrive. The reservation is returned when the request has been answered.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.held = 0
        """Bytes reserved by the requests being answered (read by tests and metrics)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = 0
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit():
                declared = int(value)
        if self.held + declared > self.max_bytes:
            await _refuse(send, self.max_bytes)
            return
        reserved = declared
        self.held += reserved
        not_yet_received = declared
        response_started = False

        async def counting_receive() -> Message:
            nonlocal reserved, not_yet_received
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                covered = min(size, not_yet_received)
                not_yet_received -= covered
                # Bytes beyond the declared length (a body sent without one) reserve now.
                extra = size - covered
                if extra:
                    if self.held + extra > self.max_bytes:
                        raise _BudgetSpent
                    self.held += extra
                    reserved += extra
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BudgetSpent:
            if not response_started:
                await _refuse(send, self.max_bytes)
        finally:
            self.held -= reserved


async def _refuse(send: Send, max_bytes: int) -> None:
    error = Overloaded(
        f"the gateway is holding as many request bodies as it may ({max_bytes} bytes, "
        f"MTC_GATEWAY_MAX_BUFFERED_BYTES); retry in {RETRY_AFTER_SECONDS} s",
        headers={"retry-after": str(RETRY_AFTER_SECONDS)},
    )
    await send_error(send, error)
