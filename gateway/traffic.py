"""ASGI middleware that times, counts and logs every predict request, whatever its outcome."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import GatewayMetrics

access_logger = logging.getLogger("gateway.access")

# Same segment rule as the `{task}` route parameter, so both agree on what a task is.
PREDICT_PATH = re.compile(r"/v1/(?P<task>[^/]+)/predict")


class PredictTraffic:
    """Record each `POST /v1/{task}/predict`: metrics, one access log line, `x-total-time`.

    It wraps the body-size limit and the error handlers, so refused bodies, unknown tasks
    and unreachable services are counted like forwarded requests. Other paths (health,
    metrics, docs) pass through unrecorded.
    """

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics, upstreams: Mapping[str, str]) -> None:
        self.app = app
        self.metrics = metrics
        self.upstreams = upstreams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = PREDICT_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        task = match["task"]
        started = time.perf_counter()
        # Stays 500 if the app raises before answering; the server then sends a 500.
        status_code = 500

        async def send_with_total_time(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                total_ms = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers", []))
                headers.append((b"x-total-time", f"{total_ms:.2f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_total_time)
        finally:
            duration = time.perf_counter() - started
            self.metrics.observe_request(task, status_code, duration)
            access_logger.info(
                "predict",
                extra={
                    "fields": {
                        "task": task,
                        "status": status_code,
                        "duration_ms": round(duration * 1000, 2),
                        "upstream": self.upstreams.get(task),
                    }
                },
            )
