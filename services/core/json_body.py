"""JSON request bodies read within limits, before anything parses them.

Parsing JSON into Python objects multiplies its size: a 1 MB body of `[],[],...` becomes
330,000 lists, some 24 MB, and a body at a 20 MiB size limit half a gigabyte, before any
schema sees it. A route's schema knows how many values a body of its shape can need (one
per item of its list, plus a few fields), so `check_json_values` counts an upper bound of
the values in the raw bytes (at C speed, no object made per value) and refuses a body with
more before `json.loads` runs: the parse then costs at most a few hundred bytes per allowed
value on top of the body itself. `BoundedJsonRoute` does that (and an optional byte limit)
for every FastAPI route with a JSON body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from services.core.errors import BatchTooLarge, BodyTooLarge
from services.wire.contracts import BatchRequest

# A JSON string, escapes included (DOTALL: an escaped line break is still one string). The
# closing quote is optional: an unterminated string runs to the end of the body instead of
# failing the match, which would make the search try again from every later quote (time
# quadratic in the body). Valid JSON has none; json.loads stops at one, so nothing after
# it is ever parsed. Possessive repeats (`*+`): nothing to backtrack into, so the regex
# engine keeps no state per escape (else some 110 bytes each, 55 MiB for 1 MB of `\"`).
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)

FIELD_ALLOWANCE = 64
"""Values a body may hold besides its list's items: the fields of the schema and some
unknown ones, which the schemas ignore."""


def values_budget(model: type[BaseModel]) -> int:
    """Most JSON values (keys included) a body for `model` may hold: two per item of a
    batch list (the bound counted by `json_values_bound` is twice the items), plus
    `FIELD_ALLOWANCE`."""
    if issubclass(model, BatchRequest):
        items = model.max_items()
        if items is not None:
            return 2 * items + FIELD_ALLOWANCE
    return 4 * FIELD_ALLOWANCE


def json_values_bound(body: bytes) -> int:
    """An upper bound of the values and keys `json.loads(body)` would create.

    In JSON every value after the first of an array or object follows a comma, and the
    first follows an opening bracket, so values + keys <= 1 + 2 x (commas + openings).
    Bytes inside strings only make the bound larger, never smaller.
    """
    return 1 + 2 * _structure_bytes(body)


def _structure_bytes(text: bytes | bytearray, start: int = 0, end: int | None = None) -> int:
    return sum(text.count(mark, start, end) for mark in (b",", b"[", b"{"))


def within_json_values(body: bytes, max_values: int) -> bool:
    """Whether `body` holds at most `max_values` JSON values (by the bound above).

    Cheap when the raw bytes already show few enough; otherwise the commas and brackets
    inside strings (text, not structure) are taken off the count, string by string, giving
    up as soon as there are more strings than values allowed: no copy of the body is made.
    """
    structure = _structure_bytes(body)
    if 1 + 2 * structure <= max_values:
        return True
    for count, string in enumerate(_JSON_STRING.finditer(body)):
        if count >= max_values:
            return False
        structure -= _structure_bytes(string.group())
    return 1 + 2 * structure <= max_values


def json_structure_outside_strings(body: bytes | bytearray, max_quotes: int) -> int:
    """The commas and opening brackets of `body` outside its strings: one per item of its
    lists and per field of its objects, an estimate of how many items a body carries that
    commas inside texts do not inflate.

    Strings are skipped by searching for quotes (at C speed, no copy), so a body costs about
    one pass whatever its texts hold. A body that makes the search work per quote (more
    than `max_quotes` quotes, escaped ones included, or a run of over
    `MAX_BACKSLASH_RUN` backslashes before one) gets the raw count, which only errs high.
    """
    structure = 0
    position = 0
    quotes = 0
    while True:
        opening = body.find(b'"', position)
        stop = len(body) if opening < 0 else opening
        structure += _structure_bytes(body, position, stop)
        if opening < 0:
            return structure
        closing = opening
        while True:
            quotes += 1
            if quotes > max_quotes:
                return _structure_bytes(body)
            closing = body.find(b'"', closing + 1)
            if closing < 0:
                return structure  # an unterminated string runs to the end of the body
            backslashes = _backslashes_before(body, closing, opening)
            if backslashes is None:
                return _structure_bytes(body)
            if backslashes % 2 == 0:
                break  # not escaped: the string ends here
        position = closing + 1


MAX_BACKSLASH_RUN = 64
"""Backslashes counted before a quote; past them, `json_structure_outside_strings` gives
up on the body (no text needs so many in a row)."""


def _backslashes_before(body: bytes | bytearray, index: int, floor: int) -> int | None:
    """Backslashes right before `body[index]` (not reaching back to `floor`), or None past
    `MAX_BACKSLASH_RUN`."""
    count = 0
    while index - count - 1 > floor and body[index - count - 1] == 0x5C:
        count += 1
        if count > MAX_BACKSLASH_RUN:
            return None
    return count


def check_json_values(body: bytes, model: type[BaseModel]) -> None:
    """Refuse with 413 a body that may hold more JSON values than any valid body for
    `model`: `batch_too_large` naming the item limit for a `BatchRequest` (many values in
    a valid shape can only be many items), else `body_too_large`."""
    max_values = values_budget(model)
    if within_json_values(body, max_values):
        return
    too_many = f"the body holds more than {max_values:,} JSON values"
    if issubclass(model, BatchRequest) and model.max_items() is not None:
        raise BatchTooLarge(
            f"{too_many}; at most {model.max_items()} {model.batch_noun} {model.batch_unit} "
            f"({model.limit_setting}){model.limit_hint}"
        )
    raise BodyTooLarge(f"{too_many}, more than any valid body of this route")


def is_json_content_type(content_type: str | None) -> bool:
    """Whether FastAPI reads a body of this Content-Type as JSON (no header counts, as
    the apps accept JSON without one)."""
    if not content_type:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class _LimitedBodyRequest(Request):
    """A request whose body is read at most `max_bytes` long (then 413)."""

    max_bytes: int | None = None

    async def body(self) -> bytes:
        """The whole body, cached for FastAPI's own read of it."""
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length", "")
            limit = self.max_bytes
            if limit is not None and declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge.over(limit)
            chunks: list[bytes] = []
            size = 0
            async for chunk in self.stream():
                size += len(chunk)
                if limit is not None and size > limit:
                    raise BodyTooLarge.over(limit)
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body


Endpoint = Callable[..., Coroutine[Any, Any, Any]]


def with_body_schema(
    endpoint: Endpoint, schema: type[BaseModel], parameter: str = "body"
) -> Endpoint:
    """`endpoint` with its body `parameter` read by `schema`, a class made at start (its
    limits are settings): FastAPI takes a route's body schema from the annotation."""
    endpoint.__annotations__[parameter] = schema
    return endpoint


class BoundedJsonRoute(APIRoute):
    """A route that reads its JSON body within limits before FastAPI parses it: at most
    `max_body_bytes` (when set) and at most the values its body schema can need (see
    `values_budget`). Refusals are 413 in the documented error shape (`body_too_large`, or
    `batch_too_large` for a batch schema, see `check_json_values`).

    Use it as a router's `route_class`; `with_max_body_bytes` makes one with a byte limit.
    """

    max_body_bytes: ClassVar[int | None] = None

    @classmethod
    def with_max_body_bytes(cls, max_body_bytes: int) -> type[BoundedJsonRoute]:
        """A route class that also refuses bodies over `max_body_bytes`."""
        return type(cls.__name__, (cls,), {"max_body_bytes": max_body_bytes})

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, behind the limits when the route reads a JSON model."""
        handler = super().get_route_handler()
        body_type = self.body_field.field_info.annotation if self.body_field else None
        if not (isinstance(body_type, type) and issubclass(body_type, BaseModel)):
            return handler
        schema: type[BaseModel] = body_type
        max_bytes = self.max_body_bytes

        async def bounded(request: Request) -> Response:
            limited = _LimitedBodyRequest(request.scope, request.receive)
            limited.max_bytes = max_bytes
            # Read here, outside FastAPI's body parsing, which would turn any error raised
            # while reading into a generic 400; FastAPI then reads the cached bytes.
            body = await limited.body()
            if is_json_content_type(limited.headers.get("content-type")):
                check_json_values(body, schema)
            return await handler(limited)

        return bounded
