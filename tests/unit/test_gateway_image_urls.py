"""`/api/v1/pose_classifier` with `{"url": [...]}`: images fetched by the gateway from
allowed hosts only, within a size and a time bound, following redirects only to allowed
hosts. The image host is a local HTTP server on 127.0.0.1, allowed explicitly."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
import pytest
from aiohttp.abc import ResolveResult
from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from gateway.errors import UrlNotAllowed
from gateway.image_urls import ImageUrlFetcher, ImageUrlHosts
from gateway.settings import GatewaySettings
from tests.support.fake_services import FakePoseService
from tests.support.in_thread_servers import served_gateway, serving

PHOTO = b"\xff\xd8\xff\xe0 a small jpeg"
LIMIT = 4096


def image_host() -> FastAPI:
    app = FastAPI()

    @app.get("/photo.jpg")
    async def photo() -> Response:
        return Response(PHOTO, media_type="image/jpeg")

    @app.get("/big.jpg")
    async def big() -> Response:
        return Response(bytes(LIMIT + 1), media_type="image/jpeg")

    @app.get("/big-unsized.jpg")
    async def big_unsized() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield bytes(1024)

        return StreamingResponse(chunks(), media_type="image/jpeg")

    @app.get("/slow.jpg")
    async def slow() -> Response:
        await asyncio.sleep(3)
        return Response(PHOTO, media_type="image/jpeg")

    @app.get("/moved")
    async def moved() -> RedirectResponse:
        return RedirectResponse("/photo.jpg", status_code=302)

    @app.get("/away")
    async def away() -> RedirectResponse:
        return RedirectResponse("http://elsewhere.example/photo.jpg", status_code=302)

    @app.get("/to-localhost")
    async def to_localhost() -> RedirectResponse:
        return RedirectResponse("http://localhost/photo.jpg", status_code=301)

    @app.get("/loop")
    async def loop() -> RedirectResponse:
        return RedirectResponse("/loop", status_code=307)

    @app.get("/missing.jpg")
    async def missing() -> Response:
        return Response(status_code=404)

    return app


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    with serving(image_host()) as url:
        yield url


@pytest.fixture(scope="module")
def pose_service() -> FakePoseService:
    return FakePoseService()


@pytest.fixture(scope="module")
def gateway(pose_service: FakePoseService) -> Iterator[httpx.Client]:
    with serving(pose_service.create_app()) as pose_url:
        settings = GatewaySettings(
            upstreams={"pose": pose_url},
            task_kinds={"pose": "image"},
            image_url_hosts=["127.0.0.1"],
            image_url_max_bytes=LIMIT,
            image_url_timeout_seconds=0.5,
        )
        with served_gateway(settings) as client:
            yield client


def classify(client: httpx.Client, *urls: str) -> httpx.Response:
    return client.post("/api/v1/pose_classifier", json={"url": list(urls)})


def test_images_are_fetched_and_classified(
    gateway: httpx.Client, pose_service: FakePoseService, host: str
) -> None:
    response = classify(gateway, f"{host}/photo.jpg", f"{host}/moved")

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"model_name", "labels", "scores", "prediction_time"}
    assert body["labels"] == ["standing", "standing"]
    sent = base64.b64encode(PHOTO).decode()
    assert pose_service.received[-1].images == [sent, sent]


def test_no_url_is_fetched_by_default(pose_service: FakePoseService, host: str) -> None:
    with serving(pose_service.create_app()) as pose_url:
        settings = GatewaySettings(upstreams={"pose": pose_url}, task_kinds={"pose": "image"})
        with served_gateway(settings) as client:
            response = classify(client, f"{host}/photo.jpg")

    assert response.status_code == 403
    body = response.json()
    assert body["error_type"] == "url_not_allowed"
    assert "MTC_GATEWAY_IMAGE_URL_HOSTS is empty" in body["detail"]


def test_a_host_off_the_list_is_refused_before_anything_is_fetched(
    gateway: httpx.Client, host: str
) -> None:
    port = host.rsplit(":", 1)[1]

    response = classify(gateway, f"{host}/photo.jpg", f"http://localhost:{port}/photo.jpg")

    assert response.status_code == 403
    assert response.json() == {
        "detail": "url[1]: host 'localhost' is not one the gateway fetches images from "
        "(MTC_GATEWAY_IMAGE_URL_HOSTS)",
        "error_type": "url_not_allowed",
    }


@pytest.mark.parametrize("path", ["/away", "/to-localhost"])
def test_a_redirect_to_another_host_is_refused(gateway: httpx.Client, host: str, path: str) -> None:
    response = classify(gateway, f"{host}{path}")

    assert response.status_code == 403
    assert response.json()["error_type"] == "url_not_allowed"
    assert "redirected to host" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/big.jpg", "/big-unsized.jpg"])
def test_an_oversized_image_is_413(gateway: httpx.Client, host: str, path: str) -> None:
    response = classify(gateway, f"{host}{path}")

    assert response.status_code == 413
    assert response.json()["error_type"] == "item_too_large"


def test_a_slow_host_is_504(gateway: httpx.Client, host: str) -> None:
    response = classify(gateway, f"{host}/slow.jpg")

    assert response.status_code == 504
    assert response.json()["error_type"] == "url_timeout"


@pytest.mark.parametrize(
    ("path", "words"), [("/loop", "more than 3 times"), ("/missing.jpg", "HTTP 404")]
)
def test_redirect_loops_and_error_answers_are_502(
    gateway: httpx.Client, host: str, path: str, words: str
) -> None:
    response = classify(gateway, f"{host}{path}")

    assert response.status_code == 502
    assert response.json()["error_type"] == "url_fetch_failed"
    assert words in response.json()["detail"]


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/a.jpg", "not a url", "http://u:p@127.0.0.1/"]
)
def test_urls_that_are_not_plain_http_are_400(gateway: httpx.Client, url: str) -> None:
    response = classify(gateway, url)

    assert response.status_code == 400
    assert response.json()["error_type"] == "invalid_input"


def test_a_body_gives_images_or_urls_not_both(gateway: httpx.Client, host: str) -> None:
    both = gateway.post(
        "/api/v1/pose_classifier", json={"images": ["aGVsbG8="], "url": [f"{host}/photo.jpg"]}
    )
    too_many = classify(gateway, *[f"{host}/photo.jpg"] * 17)

    assert both.status_code == 422
    assert too_many.status_code == 413
    assert too_many.json()["error_type"] == "batch_too_large"


def test_a_wildcard_host_resolving_to_a_private_address_is_refused(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = int(host.rsplit(":", 1)[1])

    async def loopback(
        self: aiohttp.ThreadedResolver,
        name: str,
        port: int = 0,
        family: socket.AddressFamily = socket.AF_INET,
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": name,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    monkeypatch.setattr(aiohttp.ThreadedResolver, "resolve", loopback)
    wildcard = ImageUrlFetcher(ImageUrlHosts(["*.example.com"]), timeout_seconds=2, max_bytes=LIMIT)
    exact = ImageUrlFetcher(
        ImageUrlHosts(["images.example.com"]), timeout_seconds=2, max_bytes=LIMIT
    )
    url = f"http://images.example.com:{port}/photo.jpg"

    with pytest.raises(UrlNotAllowed, match="private or loopback"):
        asyncio.run(wildcard.fetch_all([url]))
    assert asyncio.run(exact.fetch_all([url])) == [PHOTO]


@pytest.mark.parametrize(
    ("entry", "host", "match"),
    [
        ("images.example.com", "IMAGES.example.com.", "exact"),
        ("*.example.com", "cdn.example.com", "wildcard"),
        ("*.example.com", "example.com", None),
        ("*.example.com", "badexample.com", None),
        ("::1", "[::1]", "exact"),
    ],
)
def test_host_matching(entry: str, host: str, match: str | None) -> None:
    settings = GatewaySettings(upstreams={"pose": "http://pose:8000"}, image_url_hosts=[entry])

    assert ImageUrlHosts(settings.image_url_hosts).match(host) == match


@pytest.mark.parametrize("entry", ["*.com", "http://x.example", "a b", "*"])
def test_bad_host_entries_are_refused_at_start(entry: str) -> None:
    with pytest.raises(ValueError, match="image URL host"):
        GatewaySettings(upstreams={"pose": "http://pose:8000"}, image_url_hosts=[entry])
