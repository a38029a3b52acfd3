"""`MetricsServer`: Prometheus metrics (and, for the jobs worker, its health) on a port of
their own, served by a thread.

The model services, the gateway and the jobs worker expose `/metrics` here rather than on
their API port, so the API port can be published through an ingress while the metrics port
stays reachable by Prometheus alone (Istio `AuthorizationPolicy`, NetworkPolicy). A thread of
its own also means a scrape or a probe never waits behind the application's event loop.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    # One thread per connection: a slow scrape never holds up a probe.
    daemon_threads = True


class _ThreadingWSGIServerV6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # Probes and scrapes every few seconds would drown the application's own log.
        pass


def metrics_app(registry: CollectorRegistry, ready: Callable[[], bool] | None = None) -> WsgiApp:
    """A WSGI app: `/metrics` (any other path too, as prometheus_client does) from
    `registry`. With `ready`, also `/health/live` (200 while the process serves) and
    `/health/ready` (200 while `ready()` is true, else 503): `ready` must look at the
    process's own state only, never call out, so a probe is answered at once whatever
    happens downstream."""
    scrape = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if ready is not None and path == "/health/live":
            return _json(start_response, "200 OK", {"status": "alive"})
        if ready is not None and path == "/health/ready":
            if ready():
                return _json(start_response, "200 OK", {"status": "ready"})
            return _json(start_response, "503 Service Unavailable", {"status": "not ready"})
        served: Iterable[bytes] = scrape(environ, start_response)
        return served

    return app


def _json(start_response: StartResponse, status: str, body: dict[str, str]) -> list[bytes]:
    content = json.dumps(body).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(content)))],
    )
    return [content]


class MetricsServer:
    """`metrics_app(registry, ready)` served on `host:port` by a daemon thread until
    `stop()`; the port is bound when it is built, so a port in use fails at once."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        server_class = _ThreadingWSGIServerV6 if ":" in host else _ThreadingWSGIServer
        self._server = make_server(
            host,
            port,
            metrics_app(registry, ready),
            server_class=server_class,
            handler_class=_QuietHandler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="mtc-metrics-server", daemon=True
        )

    @property
    def port(self) -> int:
        """The port listened on (the one picked by the system when 0 was asked for)."""
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        """Serve in the background; returns self."""
        self._thread.start()
        logger.info("metrics on port %d", self.port)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
