"""S3 clip references: parsing, traversal and the allow-list, before any network call."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.audio.s3_input import S3ClipReader, parse_object_uri
from services.audio.settings import AudioSettings
from services.core.errors import AccessDenied, InvalidInput


def reader(*allowed: str) -> S3ClipReader:
    # No client is ever created by these checks: a call would need credentials.
    return S3ClipReader(list(allowed), max_bytes=1024)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://calls/incoming/a.wav",
        "s3://calls/incoming/2026/11/a b.wav",
    ],
)
def test_allowed_objects_pass(uri: str) -> None:
    reader("calls/incoming/").check_allowed(parse_object_uri(uri))


@pytest.mark.parametrize(
    "uri",
    [
        "s3://calls/other/a.wav",
        "s3://other-bucket/incoming/a.wav",
        "s3://calls/incoming-evil/a.wav",
        "s3://calls/incomingx.wav",
    ],
)
def test_objects_outside_the_allowlist_are_403(uri: str) -> None:
    with pytest.raises(AccessDenied, match="outside the allowed locations"):
        reader("calls/incoming").check_allowed(parse_object_uri(uri))


@pytest.mark.parametrize(
    "uri",
    [
        "s3://calls/incoming/../secrets/key.wav",
        "s3://calls/incoming/./a.wav",
        "s3://calls/incoming//a.wav",
        "s3://calls/incoming\\..\\a.wav",
    ],
)
def test_traversal_is_refused(uri: str) -> None:
    with pytest.raises(AccessDenied):
        parse_object_uri(uri)


@pytest.mark.parametrize(
    "uri", ["https://calls/a.wav", "s3://", "s3://calls", "s3://calls/dir/", "s3://c/a\x01.wav"]
)
def test_malformed_uris_are_400(uri: str) -> None:
    with pytest.raises(InvalidInput):
        parse_object_uri(uri)


def test_whole_bucket_entry_allows_every_key() -> None:
    reader("calls").check_allowed(parse_object_uri("s3://calls/any/depth/a.wav"))


def test_empty_allowlist_disables_s3() -> None:
    with pytest.raises(AccessDenied, match="disabled"):
        reader().check_allowed(parse_object_uri("s3://calls/a.wav"))


@pytest.mark.parametrize("entry", ["Calls/x", "calls/../x", "a", "calls bucket/x"])
def test_settings_refuse_malformed_allowlist_entries(entry: str) -> None:
    with pytest.raises(ValidationError):
        AudioSettings(s3_input_allowlist=[entry])
