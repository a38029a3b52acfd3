"""S3 clip references: parsing, traversal and the allow-list, before any network call."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.audio.s3_input import S3ClipReader, parse_object_uri
from services.audio.settings import AudioSettings
from services.core.errors import AccessDenied, InputNotFound, InvalidInput
from services.wire.s3_locations import UNRESTRICTED, S3Scope


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
    reader("calls/incoming/").check_allowed(parse_object_uri(uri), UNRESTRICTED)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://calls/other/a.wav",
        "s3://other-bucket/incoming/a.wav",
        "s3://calls/incoming-evil/a.wav",
        "s3://calls/incomingx.wav",
    ],
)
def test_objects_outside_the_allowlist_are_404_like_missing_ones(uri: str) -> None:
    with pytest.raises(InputNotFound) as refused:
        reader("calls/incoming").check_allowed(parse_object_uri(uri), UNRESTRICTED)
    assert refused.value.detail == (
        f"{uri}: no such object in the S3 locations this caller may read"
    )


@pytest.mark.parametrize(
    ("scope", "uri", "allowed"),
    [
        (S3Scope("alice"), "s3://calls/incoming/alice/a.wav", True),
        (S3Scope("alice"), "s3://calls/incoming/bob/a.wav", False),
        (S3Scope("alice"), "s3://calls/incoming/alice-2/a.wav", False),
        (S3Scope("alice"), "s3://calls/incoming/a.wav", False),
        (S3Scope(".."), "s3://calls/incoming/x.wav", False),
        (S3Scope("team", ("calls/incoming/shared",)), "s3://calls/incoming/shared/a.wav", True),
        (S3Scope("team", ("calls/incoming/shared",)), "s3://calls/incoming/team/a.wav", False),
        # An s3= location wider than the allow-list opens only the allow-list.
        (S3Scope("team", ("calls",)), "s3://calls/incoming/any/a.wav", True),
        (S3Scope("team", ("calls",)), "s3://calls/private/a.wav", False),
        (S3Scope("team", ("other/x",)), "s3://other/x/a.wav", False),
        (S3Scope("", ()), "s3://calls/incoming/a.wav", False),
    ],
)
def test_a_key_reads_only_its_own_locations(scope: S3Scope, uri: str, allowed: bool) -> None:
    check = reader("calls/incoming").check_allowed
    if allowed:
        check(parse_object_uri(uri), scope)
    else:
        with pytest.raises(InputNotFound):
            check(parse_object_uri(uri), scope)


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
    reader("calls").check_allowed(parse_object_uri("s3://calls/any/depth/a.wav"), UNRESTRICTED)


def test_empty_allowlist_disables_s3() -> None:
    with pytest.raises(AccessDenied, match="disabled"):
        reader().check_allowed(parse_object_uri("s3://calls/a.wav"), UNRESTRICTED)


@pytest.mark.parametrize("entry", ["Calls/x", "calls/../x", "a", "calls bucket/x"])
def test_settings_refuse_malformed_allowlist_entries(entry: str) -> None:
    with pytest.raises(ValidationError):
        AudioSettings(s3_input_allowlist=[entry])
