"""Interactive API docs (`/docs`, `/redoc`) served from the process itself, never a CDN.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, unpinned: a browser opening
`/docs` would run whatever that CDN serves, on the API's origin, and an air-gapped cluster
would show a blank page. Here the scripts and styles come from the `fastapi-offline`
package (a pinned release in the lock file, installed like any other dependency), and each
page carries a Content-Security-Policy that allows only this origin plus the page's own
inline start-up script, by hash.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from typing import Final

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response

OPENAPI_PATH: Final = "/openapi.json"
DOCS_PATH: Final = "/docs"
REDOC_PATH: Final = "/redoc"
OAUTH2_REDIRECT_PATH: Final = "/docs/oauth2-redirect"
ASSETS_PATH: Final = "/docs/assets"
"""Where the page assets are served; `is_docs_asset` tells the gateway's key check."""

ASSET_TYPES: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
"""The only files served under `ASSETS_PATH`: no other name reaches the file system."""

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def is_docs_asset(path: str) -> bool:
    """Whether `path` is one of the docs pages' static files."""
    prefix, _, name = path.rpartition("/")
    return prefix == ASSETS_PATH and name in ASSET_TYPES


def content_security_policy(html: str) -> str:
    """This origin only, plus the page's inline scripts by their SHA-256."""
    hashes = " ".join(
        "'sha256-"
        + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
        + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        "default-src 'none'; "
        f"script-src 'self' {hashes}; "
        # Both UIs set styles inline at run time; a style cannot run code.
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def docs_page(page: HTMLResponse) -> HTMLResponse:
    """One of FastAPI's docs pages with its Content-Security-Policy."""
    html = bytes(page.body).decode("utf-8")
    return HTMLResponse(html, headers={"Content-Security-Policy": content_security_policy(html)})


def swagger_ui_page(openapi_url: str, title: str) -> HTMLResponse:
    """Swagger UI for the document at `openapi_url`, with every asset from this origin."""
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=title,
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
    )
    return docs_page(page)


def install_api_docs(app: FastAPI) -> None:
    """Serve `/docs`, `/redoc`, Swagger's OAuth2 redirect page and their assets.

    Build the app with `docs_url=None, redoc_url=None` so FastAPI's CDN pages are not
    registered first.
    """
    title = app.title

    async def swagger_ui() -> HTMLResponse:
        return swagger_ui_page(OPENAPI_PATH, f"{title} - docs")

    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=OPENAPI_PATH,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
        return docs_page(page)

    async def oauth2_redirect() -> HTMLResponse:
        return docs_page(get_swagger_ui_oauth2_redirect_html())

    async def asset(name: str) -> Response:
        if name not in ASSET_TYPES:
            raise HTTPException(status_code=404, detail=f"no docs asset named {name!r}")
        return Response(
            (resources.files("fastapi_offline") / "static" / name).read_bytes(),
            media_type=ASSET_TYPES[name],
            # The files change only with the installed package, i.e. with a new release.
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.add_api_route(DOCS_PATH, swagger_ui, include_in_schema=False)
    app.add_api_route(REDOC_PATH, redoc, include_in_schema=False)
    app.add_api_route(OAUTH2_REDIRECT_PATH, oauth2_redirect, include_in_schema=False)
    app.add_api_route(f"{ASSETS_PATH}/{{name}}", asset, include_in_schema=False)
