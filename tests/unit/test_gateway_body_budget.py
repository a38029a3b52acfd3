"""The bodies the gateway holds at once stay under `MTC_GATEWAY_MAX_BUFFERED_BYTES`: the
middleware on its own (an ASGI app that holds requests open), then the gateway over HTTP
with a slow service behind it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx

from gateway.body_budget import BufferedBodyBudget
from gateway.settings import GatewaySettings
from tests.support.fake_services import FakeTextService
from tests.support.in_thread_servers import served_gateway, serving

HANG_GUARD_SECONDS = 15.0


class HoldingApp:
    """Reads each request's whole body, then waits for `release` before answering 200."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.bodies: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.bodies.append(size)
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app: Any, chunks: list[bytes], *, declare: bool = True) -> dict[str, Any]:
    """One POST through `app`; its status, headers and body."""
    headers = [(b"content-length", str(sum(map(len, chunks))).encode())] if declare else []
    scope = {"type": "http", "method": "POST", "path": "/v1/x/predict", "headers": headers}
    pending = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    answer: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        return pending.pop(0)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = dict(message["headers"])
        else:
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer


async def wait_until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never met")


async def test_a_body_that_would_pass_the_budget_is_refused_before_it_is_read() -> None:
    app = HoldingApp()
    budget = BufferedBodyBudget(app, max_bytes=1000)

    first = asyncio.create_task(call(budget, [b"x" * 600]))
    await wait_until(lambda: app.bodies == [600])
    refused = await call(budget, [b"y" * 600])
    app.release.set()
    answered = await first
    after = await call(budget, [b"z" * 600])

    assert refused["status"] == 429
    assert refused["headers"][b"retry-after"] == b"1"
    assert json.loads(refused["body"])["error_type"] == "overloaded"
    assert "MTC_GATEWAY_MAX_BUFFERED_BYTES" in json.loads(refused["body"])["detail"]
    assert app.bodies == [600, 600], "the refused body never reached the app"
    assert (answered["status"], after["status"]) == (200, 200)
    assert budget.held == 0


async def test_a_body_without_a_length_is_counted_as_it_arrives() -> None:
    app = HoldingApp()
    budget = BufferedBodyBudget(app, max_bytes=1000)

    first = asyncio.create_task(call(budget, [b"x" * 600]))
    await wait_until(lambda: app.bodies == [600])
    refused = await call(budget, [b"y" * 300, b"y" * 300], declare=False)
    app.release.set()
    await first

    assert refused["status"] == 429
    assert budget.held == 0


def test_the_gateway_holds_no_more_bodies_than_its_budget() -> None:
    slow = FakeTextService("sentiment", predict_delay_seconds=1.0)
    body = json.dumps({"text": ["x" * 500_000]}).encode()
    with serving(slow.create_app()) as url:
        settings = GatewaySettings(
            upstreams={"sentiment": url}, max_body_bytes=600_000, max_buffered_bytes=1_000_000
        )
        with served_gateway(settings) as gateway:
            first: list[httpx.Response] = []
            sender = threading.Thread(
                target=lambda: first.append(gateway.post("/v1/sentiment/predict", content=body))
            )
            sender.start()
            deadline = time.monotonic() + HANG_GUARD_SECONDS
            while not slow.predicted and time.monotonic() < deadline:
                time.sleep(0.01)
            # The first body is held while the service works on it.
            second = gateway.post("/v1/sentiment/predict", content=body)
            sender.join(HANG_GUARD_SECONDS)
            third = gateway.post("/v1/sentiment/predict", content=body)

    assert second.status_code == 429
    assert second.json()["error_type"] == "overloaded"
    assert second.headers["retry-after"] == "1"
    assert [first[0].status_code, third.status_code] == [200, 200]
