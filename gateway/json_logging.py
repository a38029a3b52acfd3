"""Log lines as JSON objects, one per line, for log collectors to parse without rules."""

from __future__ import annotations

import json
import logging
from typing import Any

from gateway.request_context import current_request

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object.

    Structured fields travel in `extra={"fields": {...}}` and become top-level keys; a
    record written while answering a request carries its `request_id`.
    """

    _second = -1
    _second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        # One access line per request: the timestamp text is made once per second.
        second = int(record.created)
        if second != self._second:
            self._second, self._second_text = second, self.formatTime(record, TIME_FORMAT)
        entry: dict[str, Any] = {
            "time": self._second_text,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = current_request()
        if context is not None:
            entry["request_id"] = context.request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """Send every logger's records (the gateway's and uvicorn's) to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # No line carries the thread, process or source location, so logging need not look
    # them up for every record (the documented way to make records cheaper).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # httpx logs every upstream call at INFO (readiness polls included); the gateway's own
    # access line already covers each proxied request.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
