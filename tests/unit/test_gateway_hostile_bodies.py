"""Bodies no parser should trust, sent without a Content-Type to every JSON route of the
gateway (a real text service behind it, over HTTP): each gets a 4xx in the documented
shape, never a 500.

Among them, bytes that are not UTF-8 but that Python's JSON reader decodes anyway: the
UTF-8 form of a surrogate (`ED A0 80`) becomes a lone surrogate, which the compatibility
routes used to fail to re-encode (500).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings
from services.text.api import build_app
from services.text.settings import TextSettings
from tests.support.in_thread_servers import CLIENT_TIMEOUT, serving
from tests.support.processes import free_port

# Route -> the bytes before and after its list of texts.
ROUTES = {
    "/v1/sentiment/predict": (b'{"text": [', b"]}"),
    "/project/bulk-predict": (b'{"text": [', b"]}"),
    "/api/v1/sentiment_analysis": (b'{"text": [', b"]}"),
    "/v1/jobs": (b'{"task": "sentiment", "inputs": [', b"]}"),
}

# Hostile contents of the route's list, and hostile bodies on their own.
LIST_CONTENTS = {
    "surrogate-as-utf8-bytes": b'"\xed\xa0\x80"',
    "surrogate-pair-as-utf8-bytes": b'"\xed\xa0\xbd\xed\xb8\x80"',
    "lone-surrogate-escape": b'"\\ud800"',
    "overlong-utf8": b'"\xc0\xaf"',
    "invalid-utf8-bytes": b'"' + b"\xff\xfe\xc3" * 10_000 + b'"',
    "nul-bytes": b'"\x00\x00"',
    "nested-100000-deep": b"[" * 100_000 + b"]" * 100_000,
    "1e999999": b"1e999999",
    "minus-1e999999": b"-1e999999",
    "5000-digit-integer": b"9" * 5000,
    "nan": b"NaN",
}
WHOLE_BODIES = {
    "only-invalid-bytes": b"\xff" * 10_000,
    "utf16-byte-order-mark": b"\xff\xfe{\x00",
    "nul-prefix": b"\x00\x00\x00{",
    "truncated": b'{"text": ["abc',
}


@pytest.fixture(scope="module")
def gateway(tiny_model_dir: Path) -> Iterator[httpx.Client]:
    service = build_app(TextSettings(task="sentiment", model_uri=str(tiny_model_dir)))
    with serving(service) as service_url:
        _wait_ready(service_url)
        jobs = JobsSettings(
            # Nothing listens there: a submission that passed every check would get 503.
            broker_url=f"redis://127.0.0.1:{free_port()}/0",
            upstreams={"sentiment": service_url},
        )
        settings = GatewaySettings(upstreams={"sentiment": service_url})
        with (
            serving(create_app(settings, jobs)) as url,
            httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client,
        ):
            yield client


def _wait_ready(url: str) -> None:
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT) as client:
        for _ in range(600):
            if client.get("/health/ready").status_code == 200:
                return
            time.sleep(0.05)
    raise AssertionError("the text service never became ready")


def assert_documented_refusal(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    body = response.json()
    if response.status_code == 422 and isinstance(body["detail"], list):
        assert all({"loc", "msg", "type"} <= set(issue) for issue in body["detail"])
    else:
        assert set(body) == {"detail", "error_type"}, body
    assert "Traceback" not in response.text


@pytest.mark.parametrize("content", sorted(LIST_CONTENTS))
@pytest.mark.parametrize("path", sorted(ROUTES))
def test_hostile_list_contents_without_content_type_get_a_4xx(
    gateway: httpx.Client, path: str, content: str
) -> None:
    prefix, suffix = ROUTES[path]

    response = gateway.post(path, content=prefix + LIST_CONTENTS[content] + suffix)

    assert_documented_refusal(response)


@pytest.mark.parametrize("body", sorted(WHOLE_BODIES))
@pytest.mark.parametrize("path", sorted(ROUTES))
def test_hostile_whole_bodies_without_content_type_get_a_4xx(
    gateway: httpx.Client, path: str, body: str
) -> None:
    assert_documented_refusal(gateway.post(path, content=WHOLE_BODIES[body]))


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_a_lone_surrogate_is_named_as_invalid_unicode(gateway: httpx.Client, path: str) -> None:
    prefix, suffix = ROUTES[path]

    response = gateway.post(path, content=prefix + b'"fine", "\xed\xa0\x80"' + suffix)

    assert response.status_code == 400
    assert response.json()["error_type"] == "invalid_input"
    assert "[1] is not valid Unicode" in response.json()["detail"]
