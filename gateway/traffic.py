"""ASGI middleware that times, counts and logs every request for a task, whatever its
outcome: `/v1/{task}/...`, `/v2/models/{task}/...` and the compatibility routes."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import GatewayMetrics
from gateway.request_context import current_request

access_logger = logging.getLogger("gateway.access")

# Same segment rule as the `{task}` route parameter, so both agree on what a task is.
# `/v1/models` has no segment after the task position, so it is not task traffic.
TASK_PATH = re.compile(r"/v1/(?P<task>[^/]+)/.+")
# The Open Inference Protocol names the task as its model: `/v2/models/{task}[/...]`.
OPEN_INFERENCE_TASK_PATH = re.compile(r"/v2/models/(?P<task>[^/]+)(?:/.*)?")


class TaskTraffic:
    """Record each request for a task: metrics, one access log line, `x-total-time`.

    It wraps authentication, the body-size limit and the error handlers, so refused keys,
    refused bodies, unknown tasks and unreachable services are counted like forwarded
    requests. Other paths (health, metrics, docs, the web page) pass through unrecorded.
    """

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics, compat_paths: Mapping[str, str]):
        self.app = app
        self.metrics = metrics
        self.compat_paths = compat_paths
        """Compatibility path -> the task it is answered by."""

    def task_of(self, path: str) -> str | None:
        """The task a request path belongs to, or None for the gateway's own routes."""
        match = TASK_PATH.fullmatch(path) or OPEN_INFERENCE_TASK_PATH.fullmatch(path)
        if match is not None:
            return match["task"]
        return self.compat_paths.get(path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = self.task_of(scope["path"]) if scope["type"] == "http" else None
        if task is None:
            await self.app(scope, receive, send)
            return
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
            context = current_request()
            access_logger.info(
                "request",
                extra={
                    "fields": {
                        "request_id": context.request_id if context else None,
                        "method": scope["method"],
                        "path": scope["path"],
                        "task": task,
                        "status": status_code,
                        "duration_ms": round(duration * 1000, 2),
                        "upstream": context.upstream if context else None,
                        "api_key": context.api_key_name if context else None,
                    }
                },
            )
