"""`/docs` and `/redoc` work without any other origin: every script, style and image the
pages name is served by the same process, and the browser is told to load nothing else."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from services.core.api_docs import ASSET_TYPES, content_security_policy, install_api_docs
from tests.support.in_thread_servers import serving

DOC_PAGES = ("/docs", "/redoc", "/docs/oauth2-redirect", "/project/docs")
_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*['"]([^'"]+)['"]""")


@pytest.fixture(scope="module")
def gateway() -> Iterator[httpx.Client]:
    app = create_gateway(
        GatewaySettings(upstreams={"sentiment": "http://127.0.0.1:9"}, authentication="anonymous")
    )
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def referenced_urls(html: str) -> list[str]:
    return [src or url for src, url in _REFERENCE.findall(html)]


@pytest.mark.parametrize("path", DOC_PAGES)
def test_a_docs_page_names_nothing_from_another_origin(gateway: httpx.Client, path: str) -> None:
    page = gateway.get(path)

    assert page.status_code == 200
    assert "http://" not in page.text
    assert "https://" not in page.text
    references = referenced_urls(page.text)
    for reference in references:
        assert reference.startswith("/"), reference
        assert not reference.startswith("//"), reference
        assert gateway.get(reference).status_code == 200, reference


@pytest.mark.parametrize("path", DOC_PAGES)
def test_the_browser_may_run_only_this_origin_and_the_page_own_script(
    gateway: httpx.Client, path: str
) -> None:
    page = gateway.get(path)
    policy = page.headers["content-security-policy"]

    assert "default-src 'none'" in policy
    script_sources = next(p for p in policy.split(";") if p.strip().startswith("script-src"))
    assert "unsafe-inline" not in script_sources
    assert "http" not in script_sources
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    if path != "/redoc":  # ReDoc starts from a custom element, Swagger UI from a script.
        assert inline, "the page starts its UI with an inline script"
    for script in inline:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in script_sources


def test_a_changed_inline_script_is_not_allowed() -> None:
    policy = content_security_policy("<script>alert(1)</script>")

    assert "'sha256-" in policy
    assert content_security_policy("<script>alert(2)</script>") != policy


@pytest.mark.parametrize(("name", "media_type"), sorted(ASSET_TYPES.items()))
def test_every_asset_is_served_with_its_type(
    gateway: httpx.Client, name: str, media_type: str
) -> None:
    response = gateway.get(f"/docs/assets/{name}")

    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert len(response.content) > 1000


@pytest.mark.parametrize(
    "path", ["/docs/assets/core.py", "/docs/assets/..%2f__init__.py", "/docs/assets/"]
)
def test_nothing_else_is_served_from_the_assets_path(gateway: httpx.Client, path: str) -> None:
    response = gateway.get(path)

    assert response.status_code == 404
    assert response.json()["detail"]


def test_a_service_serves_the_same_pages() -> None:
    app = FastAPI(title="a service", docs_url=None, redoc_url=None)
    install_api_docs(app)
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert "/docs/assets/swagger-ui-bundle.js" in page.text
        assert "'sha256-" in page.headers["content-security-policy"]
        assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
