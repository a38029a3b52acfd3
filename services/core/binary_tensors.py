"""Triton's binary tensor data extension of the Open Inference Protocol, free of HTTP.

A request may carry tensors after its JSON header: the `Inference-Header-Content-Length`
header gives the JSON's length, and each input with a `binary_data_size` parameter takes
that many bytes of what follows, in input order. A BYTES tensor's binary form is its
elements one after the other, each a 4-byte little-endian length and then its bytes; FP32 is
4-byte little-endian floats. Responses use the same layout for the outputs asked as binary.

Every length read from a request is checked against the bytes actually there before
anything is sliced or allocated, so a lying size costs a 400, never memory.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from services.core.errors import InvalidInput

INFERENCE_HEADER_LENGTH = "inference-header-content-length"
"""HTTP header giving the length of the JSON part of a body with binary tensor data."""

_ELEMENT_LENGTH = struct.Struct("<I")


def split_inference_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary tensor data) of a request body; without the header the whole
    body is JSON. Raises `InvalidInput` for a header that is not a length within the body."""
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):
        raise InvalidInput(
            f"Inference-Header-Content-Length must be a byte count, not {text[:40]!r}"
        )
    length = int(text)
    if length == 0:
        raise InvalidInput(
            "Inference-Header-Content-Length: 0 (a raw binary request, without a JSON header) "
            "is not supported; send the JSON inference request first"
        )
    if length > len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length is {length}, but the body has only {len(body)} bytes"
        )
    return body[:length], memoryview(body)[length:]


def binary_parts(binary: memoryview, sizes: Sequence[tuple[str, int]]) -> dict[str, memoryview]:
    """Cut the binary tensor data into one part per (input name, `binary_data_size`), in
    order; the sizes must add up to exactly the bytes after the JSON header."""
    declared = sum(size for _, size in sizes)
    if declared != len(binary):
        after = (
            "no binary data follows the JSON (is Inference-Header-Content-Length set?)"
            if len(binary) == 0
            else f"{len(binary)} bytes follow the JSON"
        )
        raise InvalidInput(
            f"the inputs' binary_data_size parameters add up to {declared} bytes, but {after}"
        )
    parts: dict[str, memoryview] = {}
    offset = 0
    for name, size in sizes:
        parts[name] = binary[offset : offset + size]
        offset += size
    return parts


def decode_bytes_elements(data: memoryview | bytes, count: int, label: str) -> list[bytes]:
    """The `count` elements of a BYTES tensor in binary form (4-byte little-endian length,
    then the bytes, per element); anything else in `data` is an error naming `label`."""
    view = memoryview(data)
    elements: list[bytes] = []
    offset = 0
    while offset < len(view):
        if len(elements) == count:
            raise InvalidInput(
                f"{label}: {len(view) - offset} bytes follow its {count} elements (the shape "
                "says how many elements the binary data holds)"
            )
        if len(view) - offset < _ELEMENT_LENGTH.size:
            raise InvalidInput(
                f"{label}: the binary data ends inside the 4-byte length of element {len(elements)}"
            )
        (length,) = _ELEMENT_LENGTH.unpack_from(view, offset)
        offset += _ELEMENT_LENGTH.size
        remaining = len(view) - offset
        if length > remaining:
            raise InvalidInput(
                f"{label}: element {len(elements)} declares {length} bytes, but only "
                f"{remaining} remain"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if len(elements) != count:
        raise InvalidInput(
            f"{label}: the shape says {count} elements, the binary data holds {len(elements)}"
        )
    return elements


def encode_bytes_elements(elements: Iterable[bytes]) -> bytes:
    """BYTES elements in binary form (each prefixed by its 4-byte little-endian length)."""
    return b"".join(_ELEMENT_LENGTH.pack(len(element)) + element for element in elements)


def encode_fp32(values: Sequence[float]) -> bytes:
    """FP32 values in binary form (4-byte little-endian floats)."""
    return struct.pack(f"<{len(values)}f", *values)
