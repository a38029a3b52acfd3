"""Images fetched from URLs for `/api/v1/pose_classifier`'s `{"url": [...]}` bodies.

The gateway fetches a URL only from a host on `MTC_GATEWAY_IMAGE_URL_HOSTS` (empty by
default: nothing is fetched), over http or https, within a byte and a time bound. Redirects
are followed by hand, at most `MAX_REDIRECTS` times, and only to allowed hosts. A host
matched only by a `*.domain` entry must resolve to public addresses: the check runs in the
resolver, on the addresses the connection is then made to, so a name that changes what it
resolves to between a check and the connection cannot slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import Literal

import aiohttp
from aiohttp.abc import ResolveResult
from yarl import URL

from gateway.errors import UrlFetchFailed, UrlFetchTimeout, UrlNotAllowed
from services.core.errors import InvalidInput, ItemTooLarge

MAX_REDIRECTS = 3
"""Redirects followed per URL (each to an allowed host)."""
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES = 64 * 1024

HostMatch = Literal["exact", "wildcard"]


class ImageUrlHosts:
    """The allow-list: exact host names and IP addresses, and `*.domain` entries."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.exact = frozenset(entry for entry in entries if not entry.startswith("*."))
        self.suffixes = tuple(entry[1:] for entry in entries if entry.startswith("*."))

    def match(self, host: str) -> HostMatch | None:
        """How `host` is allowed (`exact`: named as is; `wildcard`: by a `*.` entry), or
        None when it is not."""
        normalised = _normalised_host(host)
        if normalised in self.exact:
            return "exact"
        if any(normalised.endswith(suffix) for suffix in self.suffixes):
            return "wildcard"
        return None


def _normalised_host(host: str) -> str:
    host = host.lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host


class _PrivateAddress(Exception):
    """A host allowed only by a wildcard resolved to a non-public address."""


class _PublicOnlyResolver(aiohttp.ThreadedResolver):
    """Resolves as usual, refusing non-public addresses for hosts allowed by a wildcard."""

    def __init__(self, hosts: ImageUrlHosts) -> None:
        super().__init__()
        self.hosts = hosts

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of `host`, all public unless the host is named exactly."""
        results = await super().resolve(host, port, family)
        if self.hosts.match(host) != "exact":
            for result in results:
                if not ipaddress.ip_address(result["host"]).is_global:
                    raise _PrivateAddress(host)
        return results


class ImageUrlFetcher:
    """Fetches the images of one request, all URLs at once, each within the bounds."""

    def __init__(self, hosts: ImageUrlHosts, *, timeout_seconds: float, max_bytes: int) -> None:
        self.hosts = hosts
        self.timeout_seconds = timeout_seconds
        self.max_bytes = max_bytes

    async def fetch_all(self, urls: Sequence[str]) -> list[bytes]:
        """The bytes of every URL, in order; the first failing URL's error otherwise."""
        if not self.hosts.exact and not self.hosts.suffixes:
            raise UrlNotAllowed(
                "this gateway fetches no image URLs (MTC_GATEWAY_IMAGE_URL_HOSTS is empty): "
                "send the images as base64 in `images`"
            )
        # Every URL is checked before anything is fetched: a refused list fetches nothing.
        checked = [self._checked(index, url) for index, url in enumerate(urls)]
        connector = aiohttp.TCPConnector(
            resolver=_PublicOnlyResolver(self.hosts), use_dns_cache=False, limit=len(urls)
        )
        async with aiohttp.ClientSession(
            connector=connector,
            # Image hosts are the client's choice: no proxy from the environment, no cookies.
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # A compressed answer stays compressed: no decompression bomb reaches memory.
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            headers={"Accept-Encoding": "identity", "User-Agent": "mtc-gateway"},
        ) as session:
            outcomes = await asyncio.gather(
                *(self._fetch(session, index, url) for index, url in enumerate(checked)),
                return_exceptions=True,
            )
        images: list[bytes] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            images.append(outcome)
        return images

    def _checked(self, index: int, url: str) -> URL:
        """The URL parsed, http(s) with a host on the allow-list."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            raise InvalidInput(f"url[{index}] is not a URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise InvalidInput(f"url[{index}] is not an http or https URL with a host")
        if parsed.user is not None or parsed.password is not None:
            raise InvalidInput(f"url[{index}]: URLs with credentials are not fetched")
        if self.hosts.match(parsed.host) is None:
            raise UrlNotAllowed(
                f"url[{index}]: host {parsed.host!r} is not one the gateway fetches images "
                "from (MTC_GATEWAY_IMAGE_URL_HOSTS)"
            )
        return parsed

    async def _fetch(self, session: aiohttp.ClientSession, index: int, url: URL) -> bytes:
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await self._follow(session, index, url)
        except TimeoutError:
            raise UrlFetchTimeout(
                f"url[{index}] ({url.host}) did not deliver its image within "
                f"{self.timeout_seconds:g} seconds (MTC_GATEWAY_IMAGE_URL_TIMEOUT_SECONDS)"
            ) from None
        except _PrivateAddress:
            raise UrlNotAllowed(
                f"url[{index}]: host {url.host!r} resolves to a private or loopback address; "
                "only hosts named exactly in MTC_GATEWAY_IMAGE_URL_HOSTS may"
            ) from None
        except aiohttp.ClientError:
            raise UrlFetchFailed(f"url[{index}]: could not fetch from {url.host!r}") from None

    async def _follow(self, session: aiohttp.ClientSession, index: int, url: URL) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            async with session.get(url, allow_redirects=False) as response:
                if response.status in REDIRECT_STATUSES:
                    location = response.headers.get("location", "")
                    if not location:
                        raise UrlFetchFailed(f"url[{index}] redirected without a Location")
                    url = self._redirect_target(index, url.join(URL(location)))
                    continue
                if response.status != 200:
                    raise UrlFetchFailed(
                        f"url[{index}]: {url.host!r} answered HTTP {response.status}"
                    )
                return await self._read(index, response)
        raise UrlFetchFailed(f"url[{index}] redirected more than {MAX_REDIRECTS} times")

    def _redirect_target(self, index: int, target: URL) -> URL:
        if target.scheme not in ("http", "https") or not target.host:
            raise UrlNotAllowed(f"url[{index}] redirected to a URL that is not http or https")
        if self.hosts.match(target.host) is None:
            raise UrlNotAllowed(
                f"url[{index}] redirected to host {target.host!r}, which is not one the "
                "gateway fetches images from (MTC_GATEWAY_IMAGE_URL_HOSTS)"
            )
        return target

    async def _read(self, index: int, response: aiohttp.ClientResponse) -> bytes:
        declared = response.content_length
        if declared is not None and declared > self.max_bytes:
            raise self._too_large(index)
        body = bytearray()
        async for chunk in response.content.iter_chunked(CHUNK_BYTES):
            body += chunk
            if len(body) > self.max_bytes:
                raise self._too_large(index)
        return bytes(body)

    def _too_large(self, index: int) -> ItemTooLarge:
        return ItemTooLarge(
            f"url[{index}]: the image is larger than {self.max_bytes} bytes "
            "(MTC_GATEWAY_IMAGE_URL_MAX_BYTES)"
        )
