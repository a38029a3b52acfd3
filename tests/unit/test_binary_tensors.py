"""Triton's binary tensor data extension: splitting a body, cutting its parts and reading
BYTES elements, with every lying length refused before anything is sliced."""

from __future__ import annotations

import struct

import pytest

from services.core.binary_tensors import (
    binary_parts,
    decode_bytes_elements,
    encode_bytes_elements,
    encode_fp32,
    split_inference_body,
)
from services.core.errors import InvalidInput


def element(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def test_elements_round_trip_including_empty_and_binary_ones() -> None:
    elements = [b"good", b"", b"\x00\xff\x10 jpeg bytes", "café".encode()]

    encoded = encode_bytes_elements(elements)

    assert encoded == b"".join(element(data) for data in elements)
    assert decode_bytes_elements(encoded, 4, "input 'text'") == elements


def test_fp32_is_little_endian_four_bytes_per_value() -> None:
    assert encode_fp32([1.0, 0.25]) == struct.pack("<ff", 1.0, 0.25)
    assert encode_fp32([]) == b""


def test_without_the_header_the_whole_body_is_json() -> None:
    header, binary = split_inference_body(b'{"inputs": []}', None)

    assert header == b'{"inputs": []}'
    assert len(binary) == 0


def test_the_header_length_splits_json_from_tensors() -> None:
    body = b'{"inputs": []}' + element(b"abc")

    header, binary = split_inference_body(body, " 14 ")

    assert header == b'{"inputs": []}'
    assert bytes(binary) == element(b"abc")


@pytest.mark.parametrize(
    ("header_length", "fragment"),
    [
        ("-3", "must be a byte count"),
        ("12abc", "must be a byte count"),
        ("1e3", "must be a byte count"),
        ("٣", "must be a byte count"),  # an Arabic-Indic digit: isdigit(), but not a length
        ("", "must be a byte count"),
        ("0", "raw binary request"),
        ("999", "is 999, but the body has only 20 bytes"),
    ],
)
def test_malformed_header_lengths_are_refused(header_length: str, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        split_inference_body(b"x" * 20, header_length)


def test_parts_are_cut_in_input_order() -> None:
    binary = memoryview(b"aaabbbbb")

    parts = binary_parts(binary, [("first", 3), ("second", 5)])

    assert {name: bytes(part) for name, part in parts.items()} == {
        "first": b"aaa",
        "second": b"bbbbb",
    }


@pytest.mark.parametrize(
    ("binary", "sizes", "fragment"),
    [
        (b"aaaa", [("text", 3)], "add up to 3 bytes, but 4 bytes follow"),
        (b"aa", [("text", 3)], "add up to 3 bytes, but 2 bytes follow"),
        (b"", [("text", 3)], "no binary data follows the JSON"),
        (b"stray", [], "add up to 0 bytes, but 5 bytes follow"),
        (b"a" * 10, [("text", 2**62)], "add up to 4611686018427387904 bytes"),
    ],
)
def test_sizes_that_do_not_add_up_to_the_body_are_refused(
    binary: bytes, sizes: list[tuple[str, int]], fragment: str
) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        binary_parts(memoryview(binary), sizes)


def test_an_element_length_past_the_end_is_refused_without_allocating_it() -> None:
    overflowing = struct.pack("<I", 0xFFFFFFFF) + b"abc"

    with pytest.raises(InvalidInput, match="element 0 declares 4294967295 bytes, but only 3"):
        decode_bytes_elements(overflowing, 1, "input 'text'")


def test_a_body_ending_inside_a_length_prefix_is_refused() -> None:
    truncated = element(b"good") + b"\x03\x00"

    with pytest.raises(InvalidInput, match="ends inside the 4-byte length of element 1"):
        decode_bytes_elements(truncated, 2, "input 'text'")


def test_an_element_cut_short_is_refused() -> None:
    truncated = element(b"good")[:-1]

    with pytest.raises(InvalidInput, match="declares 4 bytes, but only 3 remain"):
        decode_bytes_elements(truncated, 1, "input 'text'")


def test_element_count_must_match_the_shape() -> None:
    two = element(b"a") + element(b"b")

    with pytest.raises(InvalidInput, match="the shape says 3 elements, the binary data holds 2"):
        decode_bytes_elements(two, 3, "input 'text'")
    with pytest.raises(InvalidInput, match="5 bytes follow its 1 elements"):
        decode_bytes_elements(two, 1, "input 'text'")


def test_many_empty_elements_stop_at_the_declared_count() -> None:
    # 4 bytes per empty element: a large body could declare millions; reading stops at n.
    many = element(b"") * 100_000

    with pytest.raises(InvalidInput, match="follow its 2 elements"):
        decode_bytes_elements(many, 2, "input 'text'")
