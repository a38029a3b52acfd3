"""Request lists are capped in the schemas, at the configured per-request limits, and a JSON
body is checked against what its schema can need before it is parsed.

A megabyte of `[1,1,1,...]` used to become 500,000 validation errors (half a gigabyte, seconds
of CPU) in whichever process parsed it; now every JSON route refuses it with one 413.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar

import pytest
from pydantic import AfterValidator, Field

from gateway.schemas import BulkPredictRequest, LegacyPoseRequest, LegacyTextRequest
from services.core.errors import BatchTooLarge
from services.core.json_body import json_values_bound, values_budget, within_json_values
from services.jobs.contracts import JobRequest
from services.wire.contracts import BatchRequest, PoseJsonRequest, TextPredictRequest

MEGABYTE_OF_INTS = b",".join([b"1"] * 500_000)
"""The inside of a 1 MB JSON list of 500,000 integers."""


# --------------------------------------------------------------------------- the schemas


# Schema, other required fields, and the documented default limit.
SCHEMAS: dict[str, tuple[type[BatchRequest], dict[str, Any], int]] = {
    "text": (TextPredictRequest, {}, 1024),
    "pose": (PoseJsonRequest, {}, 16),
    "bulk-predict": (BulkPredictRequest, {}, 1024),
    "legacy-text": (LegacyTextRequest, {}, 1024),
    "legacy-pose": (LegacyPoseRequest, {}, 16),
    "job": (JobRequest, {"task": "sentiment"}, 1000),
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_request_list_is_capped_at_its_documented_default(name: str) -> None:
    schema, fields, default = SCHEMAS[name]

    with pytest.raises(BatchTooLarge) as refused:
        schema.model_validate({**fields, schema.batch_field: [1] * 500_000})

    assert schema.max_items() == default
    assert f"500000 {schema.batch_noun}" in refused.value.detail
    assert f"the limit is {default} ({schema.limit_setting})" in refused.value.detail


def test_a_configured_limit_makes_a_schema_of_the_same_name() -> None:
    capped = TextPredictRequest.with_limit(3, setting="MTC_SOMETHING")

    assert capped.__name__ == "TextPredictRequest"
    assert capped.max_items() == 3
    assert capped.model_json_schema()["properties"]["text"]["maxItems"] == 3
    assert capped.model_validate({"text": ["a", "b", "c"]}).text == ["a", "b", "c"]
    with pytest.raises(
        BatchTooLarge, match=r"4 texts in one request; the limit is 3 \(MTC_SOMETHING\)"
    ):
        capped.model_validate({"text": ["a"] * 4})
    assert TextPredictRequest.max_items() == 1024, "the default schema is unchanged"


class CountedItems(BatchRequest):
    """A batch whose items count their own validation."""

    seen: ClassVar[list[str]] = []
    batch_field: ClassVar[str] = "items"
    limit_setting: ClassVar[str] = "LIMIT"

    items: list[
        Annotated[str, AfterValidator(lambda item: CountedItems.seen.append(item) or item)]
    ] = Field(max_length=3)


def test_validation_stops_as_soon_as_the_list_passes_its_cap() -> None:
    CountedItems.seen.clear()

    with pytest.raises(BatchTooLarge):
        CountedItems.model_validate({"items": ["x"] * 100_000})

    # Pydantic validates items until the list passes its cap, then stops: 4 of 100,000.
    assert len(CountedItems.seen) <= 4


# --------------------------------------------------------------------------- the value bound


@pytest.mark.parametrize(
    "document",
    [
        {"text": ["a", "b"]},
        {"text": ["a,b", "[not, {a, list"], "extra": {"nested": [1, 2, {"x": None}]}},
        [[[[]]], {}, {"a": [1, 2.5, True, None, "s"]}],
        {"": "", "k": {"k": {"k": []}}},
        "just a string, with commas",
        12345,
    ],
)
def test_the_bound_is_never_below_the_values_json_would_make(document: Any) -> None:
    body = json.dumps(document).encode()

    assert _values_and_keys(json.loads(body)) <= json_values_bound(body)
    assert within_json_values(body, _values_and_keys(document) * 2 + 1)


def _values_and_keys(document: Any) -> int:
    if isinstance(document, list):
        return 1 + sum(_values_and_keys(item) for item in document)
    if isinstance(document, dict):
        return 1 + sum(1 + _values_and_keys(value) for value in document.values())
    return 1


def test_commas_and_brackets_inside_texts_do_not_count() -> None:
    texts = ['a, b, [c], {d}, "quoted", back\\slash'] * 1024
    body = json.dumps({"text": texts}).encode()

    assert json_values_bound(body) > values_budget(TextPredictRequest)
    assert within_json_values(body, values_budget(TextPredictRequest))


@pytest.mark.parametrize(
    "body",
    [
        b'{"text": [' + MEGABYTE_OF_INTS + b"]}",
        b'{"text": [' + b",".join([b'"ab"'] * 5000) + b"]}",
        b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"text": ["a"], "other": [' + b",".join([b"{}"] * 3000) + b"]}",
    ],
)
def test_bodies_with_more_values_than_the_schema_needs_are_out(body: bytes) -> None:
    assert not within_json_values(body, values_budget(TextPredictRequest))


def test_an_unterminated_string_is_read_once_not_once_per_quote() -> None:
    # 100,000 escaped quotes that never close, after commas enough to need a closer look: a
    # search that retried from every quote would read the body 100,000 times (minutes).
    body = b'{"text": [' + b"," * 5000 + b'"' + b'\\"' * 100_000

    assert not within_json_values(body, values_budget(TextPredictRequest))
