"""Apps served over real HTTP on 127.0.0.1 from a thread of the test process: fake model
services, a gateway built from settings, and a server that drops every connection."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from starlette.types import ASGIApp

from gateway.app import create_app
from gateway.settings import GatewaySettings

# Generous, so a gateway that hangs fails a test instead of being measured.
CLIENT_TIMEOUT = httpx.Timeout(15.0)


def bound_socket() -> socket.socket:
    """A TCP socket bound to a free 127.0.0.1 port but not listening: connections to it are
    refused until something serves on it (see `serving(app, sock=...)`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def url_of(sock: socket.socket) -> str:
    """The base URL of a bound socket."""
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def serving(app: ASGIApp, sock: socket.socket | None = None) -> Iterator[str]:
    """Run `app` in uvicorn in a thread, on `sock` or a free 127.0.0.1 port; yield its base
    URL. The socket is closed on exit."""
    sock = sock or bound_socket()
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {url_of(sock)} did not start")
            time.sleep(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextmanager
def connection_breaker() -> Iterator[str]:
    """A TCP server that accepts each connection and closes it without answering."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.05)
    stop = threading.Event()

    def accept_and_close() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.close()

    thread = threading.Thread(target=accept_and_close, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@contextmanager
def served_gateway(settings: GatewaySettings) -> Iterator[httpx.Client]:
    """A gateway built from `settings`, served in a thread, and a client for it."""
    with (
        serving(create_app(settings)) as base_url,
        httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT) as client,
    ):
        yield client
