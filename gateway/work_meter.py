"""What a request costs in quota tokens: the work it asks for, not one token per request.

A key's bucket (`gateway.quotas`) gives up one token when a request arrives; once the
request's body is read, the rest of its cost is charged (possibly below zero):

    cost = max(1, ceil(items / items_per_token), ceil(body bytes / bytes_per_token))

Items are the texts, images or clips a request carries, counted without parsing the body:
in JSON, the commas and opening brackets outside strings (one per item of a list, plus one
per field); in a multipart upload, its parts; in an Open Inference request, the batch size
(the leading dimension) its inputs' shapes declare. The routes whose JSON the gateway parses
itself (compatibility routes, jobs) give the exact count instead.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from gateway.quotas import TokenBuckets
from gateway.request_context import current_request
from services.core.json_body import is_json_content_type, json_structure_outside_strings

COUNT_IN_THREAD_BYTES = 1024 * 1024
"""Bodies larger than this are counted in a thread: about 2 ms per MiB (40 ms for a 20 MiB
text body, what parsing it costs), which would otherwise hold every other request."""

MAX_PARSED_INFERENCE_HEADER_BYTES = 64 * 1024
"""Open Inference JSON up to this size is parsed for its shapes (well under a millisecond); a
larger one carries its elements in JSON and is counted like any JSON body."""

MAX_COUNTED_QUOTES = 20_000
"""Quotes looked at to tell the commas of texts from those between items; a body with more
carries more items than any service accepts, and is counted high (by its raw commas)."""


@dataclass(frozen=True)
class WorkMeter:
    """Charges one API key's bucket for the work of the request being answered."""

    buckets: TokenBuckets
    bucket: str
    rate: float
    burst: int
    items_per_token: int
    bytes_per_token: int

    def cost(self, items: int, body_bytes: int) -> int:
        """Tokens a request with `items` items and a body of `body_bytes` costs."""
        return max(
            1,
            math.ceil(items / self.items_per_token),
            math.ceil(body_bytes / self.bytes_per_token),
        )

    async def charge(self, items: int, body_bytes: int) -> int:
        """Charge what the request costs beyond the token it took on arrival; the cost."""
        cost = self.cost(items, body_bytes)
        if cost > 1:
            await self.buckets.charge(self.bucket, self.rate, self.burst, cost - 1)
        return cost

    async def charge_counted(self, count_items: Callable[[], int], body_bytes: int) -> int:
        """Charge a request by its body as received, for the items `count_items()` finds
        there (in a thread when the body is over `COUNT_IN_THREAD_BYTES`); the cost."""
        if body_bytes > COUNT_IN_THREAD_BYTES:
            items = await asyncio.to_thread(count_items)
        else:
            items = count_items()
        return await self.charge(items, body_bytes)

    def inference_items(self, body: bytes | bytearray, header_length: str | None) -> int:
        """The items of an Open Inference request: the largest leading dimension of its
        inputs' shapes, read from its JSON (only the JSON part, its length given by
        `Inference-Header-Content-Length`, when tensors follow it as binary data). A shape
        that claims fewer elements than the data holds is refused by the service."""
        header = body
        if header_length is not None and header_length.strip().isdigit():
            header = body[: int(header_length)]
        if len(header) <= MAX_PARSED_INFERENCE_HEADER_BYTES:
            items = _declared_batch_size(header)
            if items is not None:
                return items
        return self.items_in(header, "application/json")

    def items_in(self, body: bytes | bytearray, content_type: str | None) -> int:
        """The items a body carries, counted without parsing it (see the module's text)."""
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type == "multipart/form-data":
            return multipart_parts(body, content_type or "")
        if not is_json_content_type(content_type):
            return 0
        upper_bound = body.count(b",") + body.count(b"[") + body.count(b"{")
        if upper_bound <= self.items_per_token:
            return upper_bound  # one token either way: no need to walk the strings
        return json_structure_outside_strings(body, MAX_COUNTED_QUOTES)


def _declared_batch_size(header: bytes | bytearray) -> int | None:
    """The largest leading dimension of the inputs' shapes, or None if the JSON says none."""
    try:
        document: Any = json.loads(header)
    except (ValueError, RecursionError):
        return None
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, list):
        return None
    sizes = [
        tensor["shape"][0]
        for tensor in inputs
        if isinstance(tensor, dict)
        and isinstance(tensor.get("shape"), list)
        and tensor["shape"]
        and isinstance(tensor["shape"][0], int)
    ]
    return max(sizes, default=None)


def multipart_parts(body: bytes | bytearray, content_type: str) -> int:
    """The parts of a multipart body: its boundary delimiters, less the closing one."""
    _, found, boundary = content_type.partition("boundary=")
    boundary = boundary.split(";", 1)[0].strip().strip('"')
    if not found or not boundary:
        return 0
    return max(0, body.count(b"--" + boundary.encode("latin-1", "replace")) - 1)


async def charge_items(items: int, body_bytes: int = 0) -> None:
    """Charge the request being answered for `items` items, when a key's quota applies
    (the routes that parse their body and know the exact count)."""
    context = current_request()
    if context is not None and context.work_meter is not None:
        await context.work_meter.charge(items, body_bytes)


async def charge_inference_body(body: bytes | bytearray, header_length: str | None) -> None:
    """Charge the Open Inference request being answered, when a key's quota applies."""
    context = current_request()
    if context is not None and (meter := context.work_meter) is not None:
        await meter.charge_counted(partial(meter.inference_items, body, header_length), len(body))


async def charge_body(body: bytes | bytearray, content_type: str | None) -> None:
    """Charge the request being answered by its body, when a key's quota applies (the
    forwarded routes)."""
    context = current_request()
    if context is not None and (meter := context.work_meter) is not None:
        await meter.charge_counted(partial(meter.items_in, body, content_type), len(body))
