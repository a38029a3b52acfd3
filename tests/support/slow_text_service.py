"""`python -m tests.support.slow_text_service --port N --task T --delay S`: a text service
process that lists a ready model at once but takes S seconds to answer each predict request.

It stands in for an overloaded or stuck model service in gateway fault tests. Standard
library only, so it starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def handler_for(task: str, delay_seconds: float) -> type[BaseHTTPRequestHandler]:
    """A request handler answering `/v1/models` at once and predict after the delay."""

    class SlowTextService(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path != "/v1/models":
                self._answer(404, {"detail": "Not Found"})
                return
            entry = {
                "task": task,
                "name": f"{task}-slow",
                "version": "1",
                "labels": ["positive", "negative"],
                "limits": {},
                "ready": True,
                "status": "ready",
                "reason": None,
            }
            self._answer(200, {"models": [entry]})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            time.sleep(delay_seconds)
            scores = [{"label": "positive", "score": 0.5}, {"label": "negative", "score": 0.5}]
            body = {"model": {"name": f"{task}-slow", "version": "1"}, "predictions": [scores]}
            self._answer(200, body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests read answers, not access lines."""

        def _answer(self, status: int, body: object) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return SlowTextService


def main() -> None:
    """Serve on 127.0.0.1 until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--task", default="slow")
    parser.add_argument("--delay", type=float, default=60.0, help="seconds per predict request")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(args.task, args.delay))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
