"""Quotas weighted by work: a request costs a token per `quota_items_per_token` items (texts,
images, clips, inline job inputs) or per `quota_bytes_per_token` bytes, at least one, so a
1,024-text request costs what 1,024 one-text requests of the same key would in items."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.api_keys import hash_api_key
from gateway.app import create_app
from gateway.quotas import MemoryTokenBuckets
from gateway.settings import GatewaySettings
from gateway.work_meter import WorkMeter, multipart_parts
from services.jobs.settings import JobsSettings
from tests.support.fake_services import FakeTextService
from tests.support.in_thread_servers import CLIENT_TIMEOUT, served_gateway, serving
from tests.support.processes import free_port

ALICE_KEY = "mtc_alice-quota-key-0123456789"
BOB_KEY = "mtc_bob-quota-key-9876543210"
BURST = 40


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def meter(items_per_token: int = 32, bytes_per_token: int = 1024 * 1024) -> WorkMeter:
    return WorkMeter(
        MemoryTokenBuckets(),
        "alice",
        1.0,
        BURST,
        items_per_token=items_per_token,
        bytes_per_token=bytes_per_token,
    )


def texts_body(texts: list[str]) -> bytes:
    return json.dumps({"text": texts}).encode()


# --------------------------------------------------------------------------- counting work


@pytest.mark.parametrize(
    ("texts", "tokens"),
    [
        (["fine"], 1),
        (["fine"] * 31, 1),
        (["fine"] * 64, 3),
        (["fine"] * 1024, 33),
        # Commas and brackets inside texts are text, not items.
        (["one, two, three, [four], {five}"] * 31, 1),
    ],
)
def test_a_json_request_costs_a_token_per_32_items(texts: list[str], tokens: int) -> None:
    body = texts_body(texts)

    items = meter().items_in(body, "application/json")

    # One per text, and one for the body's object.
    assert items == len(texts) + 1
    assert meter().cost(items, len(body)) == tokens


def test_escaped_quotes_in_texts_do_not_change_the_count() -> None:
    body = texts_body(['he said "a, b" \\', "x"] * 20)

    assert meter().items_in(body, "application/json") == 40 + 1


def test_a_body_with_more_strings_than_are_walked_counts_high_not_low() -> None:
    body = texts_body(["a,b"] * 20_000)

    assert meter().items_in(body, None) >= 20_000


@pytest.mark.parametrize(
    ("body", "at_least"),
    [
        (json.dumps({"text": ['"' * 500_000]}).encode(), 1),
        (b'{"text": ["' + b"\\" * 1_000_000 + b'"]}', 1),
        (json.dumps({"text": ["a"] * 200_000}).encode(), 200_000),
        (json.dumps({"text": [("word, " * 3400)[:20_000]] * 1024}).encode(), 1024),
    ],
    ids=["escaped-quotes", "backslashes", "200k-strings", "20-MiB-of-texts"],
)
def test_counting_costs_one_pass_and_never_counts_low(body: bytes, at_least: int) -> None:
    started = time.perf_counter()
    items = meter().items_in(body, "application/json")
    elapsed = time.perf_counter() - started

    assert items >= at_least
    # About 2 ms per MiB measured; the bound leaves room for a loaded machine.
    assert elapsed < 0.5


def test_a_multipart_upload_costs_by_its_parts() -> None:
    boundary = "XyZ"
    parts = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="{n}.wav"\r\n'
        f"\r\nRIFF....\r\n"
        for n in range(5)
    )
    body = (parts + f"--{boundary}--\r\n").encode()

    assert multipart_parts(body, f"multipart/form-data; boundary={boundary}") == 5
    assert meter(items_per_token=2).items_in(body, f'multipart/form-data; boundary="{boundary}"')
    assert meter().items_in(body, "multipart/form-data") == 0


def test_large_bodies_cost_by_their_bytes() -> None:
    assert meter(bytes_per_token=1024).cost(1, 10 * 1024 + 1) == 11
    assert meter().items_in(b"x" * 100_000, "text/plain") == 0


async def test_a_charge_may_leave_the_bucket_below_zero_until_it_refills() -> None:
    clock = FakeClock()
    buckets = MemoryTokenBuckets(clock=clock)
    await buckets.take("alice", 1.0, 10)

    remaining = await buckets.charge("alice", 1.0, 10, 32)
    refused = await buckets.take("alice", 1.0, 10)
    clock.now += 24
    allowed = await buckets.take("alice", 1.0, 10)

    assert remaining == pytest.approx(-23)
    assert not refused.allowed
    assert refused.retry_after_seconds == pytest.approx(24)
    assert allowed.allowed


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def sentiment_url() -> Iterator[str]:
    with serving(FakeTextService("sentiment").create_app()) as url:
        yield url


@pytest.fixture
def gateway(sentiment_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    keys = tmp_path / "api-keys"
    keys.write_text(f"alice {hash_api_key(ALICE_KEY)}\nbob {hash_api_key(BOB_KEY)}\n")
    settings = GatewaySettings(
        upstreams={"sentiment": sentiment_url},
        api_keys_file=keys,
        # A token back every 100 s: nothing refills during the test.
        rate_limit_per_second=0.01,
        rate_limit_burst=BURST,
        max_texts_per_request=1024,
    )
    with served_gateway(settings) as client:
        yield client


def requests_until_refused(gateway: httpx.Client, key: str) -> int:
    """One-text requests the key can still make."""
    for made in range(BURST + 1):
        response = gateway.post(
            "/v1/sentiment/predict", json={"text": ["fine"]}, headers={"x-api-key": key}
        )
        if response.status_code == 429:
            return made
        assert response.status_code == 200, response.text
    raise AssertionError("never refused")


@pytest.mark.parametrize(
    ("path", "tokens"),
    [
        # Forwarded as sent: counted in the bytes, 1,024 texts and the body's object.
        ("/v1/sentiment/predict", 33),
        # Parsed by the gateway: the exact count.
        ("/project/bulk-predict", 32),
        ("/api/v1/sentiment_analysis", 32),
    ],
)
def test_a_1024_text_request_costs_32_tokens_and_a_1_text_request_one(
    gateway: httpx.Client, path: str, tokens: int
) -> None:
    small = gateway.post(path, json={"text": ["fine"]}, headers={"x-api-key": ALICE_KEY})
    large = gateway.post(path, json={"text": ["fine"] * 1024}, headers={"x-api-key": BOB_KEY})

    assert small.status_code == large.status_code == 200, large.text
    assert requests_until_refused(gateway, ALICE_KEY) == BURST - 1
    assert requests_until_refused(gateway, BOB_KEY) == BURST - tokens


def test_a_request_is_let_in_while_a_token_is_left_and_the_debt_waits(
    gateway: httpx.Client,
) -> None:
    headers = {"x-api-key": ALICE_KEY}
    first = gateway.post("/v1/sentiment/predict", json={"text": ["fine"] * 1024}, headers=headers)
    second = gateway.post("/v1/sentiment/predict", json={"text": ["fine"] * 1024}, headers=headers)
    third = gateway.post("/v1/sentiment/predict", json={"text": ["fine"]}, headers=headers)

    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    # 40 - 2 x 33 = -26 tokens: 27 to go at one per 100 s.
    assert 2600 <= int(third.headers["retry-after"]) <= 2700


def test_a_job_with_1000_inline_inputs_costs_32_tokens(sentiment_url: str, tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(f"bob {hash_api_key(BOB_KEY)}\n")
    settings = GatewaySettings(
        upstreams={"sentiment": sentiment_url},
        api_keys_file=keys,
        rate_limit_per_second=0.01,
        rate_limit_burst=BURST,
    )
    # No store listens there: each submission is charged, then answered 503.
    jobs = JobsSettings(
        broker_url=f"redis://127.0.0.1:{free_port()}/0", upstreams={"sentiment": sentiment_url}
    )
    headers = {"x-api-key": BOB_KEY}
    with (
        serving(create_app(settings, jobs)) as url,
        httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client,
    ):
        large = client.post(
            "/v1/jobs", json={"task": "sentiment", "inputs": ["fine"] * 1000}, headers=headers
        )
        statuses = [
            client.post("/v1/jobs", json={"task": "sentiment", "inputs": ["x"]}, headers=headers)
            for _ in range(BURST)
        ]

    assert large.status_code == 503
    assert [response.status_code for response in statuses].count(503) == BURST - 32
