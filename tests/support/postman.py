"""Runs a Postman v2.1 collection written by `deploy.api_collections` with httpx.

Only what that generator writes is understood: `{{variable}}` substitution, raw JSON and
multipart file bodies, a status check `pm.expect(pm.response.code).to.be.oneOf([...])` and
`pm.collectionVariables.set("name", pm.response.json().field)`. Anything else in a script
is an error, so a collection this runner cannot judge fails instead of passing unchecked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

_VARIABLE = re.compile(r"\{\{(\w+)\}\}")
_STATUS_CHECK = re.compile(
    r'^pm\.test\("status", \(\) => '
    r"pm\.expect\(pm\.response\.code\)\.to\.be\.oneOf\((\[[\d, ]*\])\)\);$"
)
_CAPTURE = re.compile(r'^pm\.collectionVariables\.set\("(\w+)", pm\.response\.json\(\)\.(\w+)\);$')


@dataclass(frozen=True)
class Outcome:
    name: str
    status: int
    expected: list[int]
    body: str

    @property
    def passed(self) -> bool:
        return self.status in self.expected


def run_collection(collection: dict[str, Any], base_url: str, files_root: Path) -> list[Outcome]:
    """Send every item in order; returns what each answered."""
    variables = {entry["key"]: entry["value"] for entry in collection.get("variable", [])}
    variables["baseUrl"] = base_url
    outcomes = []
    with httpx.Client(timeout=120) as client:
        for item in collection["item"]:
            outcomes.append(_run_item(client, item, variables, files_root))
    return outcomes


def _fill(text: str, variables: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda match: variables[match.group(1)], text)


def _run_item(
    client: httpx.Client, item: dict[str, Any], variables: dict[str, str], files_root: Path
) -> Outcome:
    request = item["request"]
    headers = {
        header["key"]: _fill(header["value"], variables)
        for header in request.get("header", [])
        if not header.get("disabled")
    }
    body = request.get("body")
    content: bytes | None = None
    files: list[tuple[str, tuple[str, bytes]]] | None = None
    if body is not None and body["mode"] == "raw":
        content = _fill(body["raw"], variables).encode()
    elif body is not None and body["mode"] == "formdata":
        files = [
            (part["key"], (Path(part["src"]).name, (files_root / part["src"]).read_bytes()))
            for part in body["formdata"]
        ]
    elif body is not None:
        raise ValueError(f"{item['name']}: body mode {body['mode']!r} is not understood")
    response = client.request(
        request["method"],
        _fill(request["url"], variables),
        headers=headers,
        content=content,
        files=files,
    )
    expected: list[int] | None = None
    for event in item.get("event", []):
        for line in event["script"]["exec"]:
            if status := _STATUS_CHECK.match(line):
                expected = json.loads(status.group(1))
            elif capture := _CAPTURE.match(line):
                variables[capture.group(1)] = str(response.json()[capture.group(2)])
            else:
                raise ValueError(f"{item['name']}: script line not understood: {line}")
    if expected is None:
        raise ValueError(f"{item['name']}: no status check")
    return Outcome(item["name"], response.status_code, expected, response.text[:500])
