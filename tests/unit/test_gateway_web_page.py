"""The web page's files and headers, over real HTTP (the page itself is driven by a real
browser in tests/e2e/test_web_page.py)."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser

import httpx
import pytest

from gateway.settings import GatewaySettings
from gateway.web_page import UI_DIR
from tests.support.in_thread_servers import served_gateway

UPSTREAMS = {"sentiment": "http://127.0.0.1:9"}


@pytest.fixture(scope="module")
def gateway() -> Iterator[httpx.Client]:
    with served_gateway(GatewaySettings(upstreams=UPSTREAMS)) as client:
        yield client


class _PageAudit(HTMLParser):
    """Collects what a strict Content Security Policy would block in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str | None] = []
        self.stylesheets: list[str | None] = []
        self.inline_code: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.inline_code += [name for name in attributes if name.startswith("on")]
        self.inline_code += ["style attribute"] if "style" in attributes else []
        self.inline_code += ["style element"] if tag == "style" else []
        if tag == "script":
            self.scripts.append(attributes.get("src"))
            self._in_script = True
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.stylesheets.append(attributes.get("href"))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_code.append("inline script")


def test_page_is_served_with_security_headers(gateway: httpx.Client) -> None:
    response = gateway.get("/ui")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    directives = response.headers["content-security-policy"].split(";")
    policy = dict(directive.strip().split(" ", 1) for directive in directives)
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "microphone=(self)" in response.headers["permissions-policy"]


def test_page_needs_nothing_the_policy_blocks(gateway: httpx.Client) -> None:
    audit = _PageAudit()
    audit.feed(gateway.get("/ui").text)

    assert audit.scripts == ["/ui/app.js"]
    assert audit.stylesheets == ["/ui/app.css"]
    assert audit.inline_code == []


@pytest.mark.parametrize(
    ("path", "content_type", "source"),
    [
        ("/ui/app.js", "text/javascript; charset=utf-8", "app.js"),
        ("/ui/app.css", "text/css; charset=utf-8", "app.css"),
    ],
)
def test_script_and_style_sheet_are_served_with_the_same_headers(
    gateway: httpx.Client, path: str, content_type: str, source: str
) -> None:
    response = gateway.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == (UI_DIR / source).read_bytes()
    assert response.headers["x-content-type-options"] == "nosniff"


def test_script_never_parses_answers_as_html() -> None:
    script = (UI_DIR / "app.js").read_text(encoding="utf-8")

    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert "textContent" in script


@pytest.mark.parametrize("path", ["/ui/secrets.txt", "/ui/..%2Fapp.py", "/ui/app.js/x"])
def test_other_paths_under_ui_are_404(gateway: httpx.Client, path: str) -> None:
    assert gateway.get(path).status_code == 404


def test_root_is_not_the_page(gateway: httpx.Client) -> None:
    response = gateway.get("/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_page_can_be_turned_off() -> None:
    settings = GatewaySettings(upstreams=UPSTREAMS, web_page=False)

    with served_gateway(settings) as gateway:
        assert gateway.get("/ui").status_code == 404
