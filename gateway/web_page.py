"""The try-it web page at `/ui`, and the emergency-call project's upload page at `/upload`:
a few static files (no build step) served with strict security headers.

The pages only talk to this gateway (`/v1/models`, `/v1/{task}/predict`, `predict-s3`,
`/predict`, `/predict_s3`); the Content Security Policy allows nothing else: no inline
script or style, no other origin, no framing, no native form submission (the pages post
with `fetch`). Photos and recordings are shown from `blob:` URLs made in the browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, HTTPException, Response

UI_DIR: Final = Path(__file__).resolve().parent / "ui"
PAGE_FILES: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    "upload.html": "text/html; charset=utf-8",
    "upload.js": "text/javascript; charset=utf-8",
}

CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' blob:",
        "media-src 'self' blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS: Final = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    # The microphone is for recording audio on this page only; nothing else is used.
    "permissions-policy": "microphone=(self), camera=(), geolocation=(), payment=()",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    # Small files that change with each release; revalidating costs little.
    "cache-control": "no-cache",
}


def web_page_router(*, upload_page: bool = False) -> APIRouter:
    """`GET /ui` (the page) and `GET /ui/{file}` (its script, style sheet and icon), read
    from `gateway/ui` once, when the app is built; with `upload_page`, `GET /upload` too
    (a WAV upload or an S3 key, sent to `/predict` or `/predict_s3`)."""
    files = {name: (UI_DIR / name).read_bytes() for name in PAGE_FILES}
    router = APIRouter(include_in_schema=False)

    @router.get("/ui/{name}")
    async def page_file(name: str) -> Response:
        if name not in files:
            raise HTTPException(status_code=404)
        return Response(files[name], media_type=PAGE_FILES[name], headers=SECURITY_HEADERS)

    @router.get("/ui")
    async def web_page() -> Response:
        return await page_file("index.html")

    if upload_page:

        @router.get("/upload")
        async def upload_page_html() -> Response:
            return await page_file("upload.html")

    return router
