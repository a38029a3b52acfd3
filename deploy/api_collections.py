"""A Postman collection and a curl script of every gateway route, written from the
gateway's OpenAPI document (the local stack's tasks, batch jobs on).

`python -m deploy.api_collections` (`make api-collections`) rewrites
`docs/api-collections/`; `--check` exits 1 when the committed files differ. Request bodies
come from the examples in the document's schemas; what a schema cannot carry (a photo as
base64, a file to upload) comes from the sample files in `load/data/`. The e2e suite runs
every request of both files against the local stack.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.external_tools import REPO
from deploy.render import stale_paths, write_files
from gateway.app import create_app
from gateway.local_stack import DEFAULT_MODELS, TASK_KIND_OF_SERVICE
from gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings

OUTPUT_DIR = REPO / "docs" / "api-collections"
POSTMAN_FILE = OUTPUT_DIR / "mtc.postman_collection.json"
CURL_FILE = OUTPUT_DIR / "mtc-requests.sh"
SAMPLE_PHOTO = "load/data/photos/person-1.jpg"
SAMPLE_CLIP = "load/data/clips/call-1.wav"
UPLOADS = {"image": SAMPLE_PHOTO, "audio": SAMPLE_CLIP, "audio_file": SAMPLE_CLIP}
"""Sample file per multipart file field, by field name."""
TEXT_EXAMPLES = {
    "/v1/disaster/predict": {
        "text": ["Evacuation ordered as the wildfire jumps the highway", "this mixtape is fire"]
    },
}
"""Bodies of routes whose schema example belongs to another task."""
JOB_ID_VARIABLE = "jobId"
# Order of the requests: a user reads them top to bottom, and the job routes need the job.
ROUTE_ORDER = (
    "/health",
    "/v1/models",
    "/v1/",
    "/v1/jobs",
    "/project",
    "/api/v1",
    "/api/predict",
    "/predict",
    "/v2",
    "/metrics",
)


@dataclass
class ApiRequest:
    """One request of the collections."""

    name: str
    method: str
    path: str
    """With `{{jobId}}` where the job's id goes."""
    json_body: Any = None
    form_files: dict[str, str] = field(default_factory=dict)
    """Multipart file field -> repository path of the file sent."""
    expected_statuses: tuple[int, ...] = (200,)
    captures_job_id: bool = False


def gateway_document() -> dict[str, Any]:
    """The OpenAPI document of a gateway in front of the local stack's services."""
    tasks = list(DEFAULT_MODELS)
    kinds = {
        task: TASK_KIND_OF_SERVICE[module]
        for task, (module, _) in DEFAULT_MODELS.items()
        if module in TASK_KIND_OF_SERVICE
    }
    upstreams = {task: f"http://127.0.0.1:{8101 + index}" for index, task in enumerate(tasks)}
    settings = GatewaySettings(upstreams=upstreams, task_kinds=kinds, authentication="anonymous")
    jobs = JobsSettings(broker_url="redis://127.0.0.1:6379/0", upstreams=upstreams)
    return create_app(settings, jobs).openapi()


def example_of(
    schema: dict[str, Any], components: dict[str, Any], properties: dict[str, Any] | None = None
) -> Any:
    """An example value of a JSON schema: its own example, else one built from its parts;
    `properties` gives the values of properties no schema example can hold."""
    properties = properties or {}
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return example_of(components[name], components, properties)
    if schema.get("examples"):
        return schema["examples"][0]
    if schema.get("type") == "object" or "properties" in schema:
        required = set(schema.get("required", []))
        return {
            name: properties[name] if name in properties else example_of(part, components)
            for name, part in schema.get("properties", {}).items()
            if name in properties or name in required or part.get("examples")
        }
    if schema.get("type") == "array":
        return [example_of(schema.get("items", {}), components)]
    if "anyOf" in schema:
        concrete = [part for part in schema["anyOf"] if part.get("type") != "null"]
        return example_of(concrete[0], components)
    raise ValueError(f"no example for schema {schema}: add `examples` to its field")


def photo_base64() -> str:
    return base64.b64encode((REPO / SAMPLE_PHOTO).read_bytes()).decode("ascii")


def requests_of(document: dict[str, Any]) -> list[ApiRequest]:
    """Every operation of the document as a request, in `ROUTE_ORDER`."""
    components = document.get("components", {}).get("schemas", {})
    found: list[ApiRequest] = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            found.extend(_requests_of_operation(path, method.upper(), operation, components))
    return sorted(found, key=_route_rank)


def _route_rank(request: ApiRequest) -> tuple[int, int]:
    """Position in `ROUTE_ORDER` (the longest prefix that matches), then by method."""
    matches = [
        (len(prefix), index)
        for index, prefix in enumerate(ROUTE_ORDER)
        if request.path.startswith(prefix)
    ]
    rank = max(matches)[1] if matches else len(ROUTE_ORDER)
    return rank, {"POST": 0, "GET": 1, "DELETE": 2}.get(request.method, 3)


def _requests_of_operation(
    path: str, method: str, operation: dict[str, Any], components: dict[str, Any]
) -> list[ApiRequest]:
    name = operation.get("summary") or f"{method} {path}"
    path = with_path_examples(path, operation)
    job_path = path.replace("{job_id}", "{{" + JOB_ID_VARIABLE + "}}")
    statuses = tuple(int(code) for code in operation.get("responses", {}) if code.startswith("2"))
    if method == "DELETE" and "{job_id}" in path:
        # A small job may finish before it is cancelled: 409 is its documented answer then.
        statuses = (*statuses, 409)
    content = operation.get("requestBody", {}).get("content", {})
    if not content:
        return [ApiRequest(name, method, job_path, expected_statuses=statuses or (200,))]
    request = functools.partial(ApiRequest, method=method, path=path, expected_statuses=statuses)
    requests = []
    for media_type, body in content.items():
        schema = body["schema"]
        if "$ref" in schema:  # a component: FastAPI's own form bodies, the models' JSON bodies
            schema = components[schema["$ref"].rsplit("/", 1)[-1]]
        if media_type == "multipart/form-data":
            files = {part: UPLOADS[part] for part in schema.get("required", []) if part in UPLOADS}
            requests.append(request(f"{name} (multipart)", form_files=files))
        elif media_type == "application/json":
            wants_photos = "images" in schema.get("properties", {})
            photos = {"images": [photo_base64()]} if wants_photos else {}
            example = TEXT_EXAMPLES.get(path) or example_of(schema, components, photos)
            suffix = " (JSON)" if len(content) > 1 else ""
            requests.append(
                request(f"{name}{suffix}", json_body=example, captures_job_id=path == "/v1/jobs")
            )
    return requests


def with_path_examples(path: str, operation: dict[str, Any]) -> str:
    """`path` with each path parameter that has an example (e.g. the Open Inference
    Protocol's `{model_name}`) replaced by it; a job's id is filled in when the job exists."""
    for parameter in operation.get("parameters", []):
        examples = parameter.get("schema", {}).get("examples") or []
        if parameter.get("in") == "path" and examples:
            path = path.replace("{" + parameter["name"] + "}", str(examples[0]))
    return path


def postman_collection(requests: list[ApiRequest]) -> dict[str, Any]:
    """A Postman v2.1 collection; `baseUrl` and `apiKey` are collection variables."""
    items = []
    for request in requests:
        url = "{{baseUrl}}" + request.path
        headers: list[dict[str, Any]] = [
            # Enable once the gateway has API keys on.
            {"key": "X-API-Key", "value": "{{apiKey}}", "disabled": True}
        ]
        entry: dict[str, Any] = {"method": request.method, "header": headers, "url": url}
        if request.json_body is not None:
            headers.append({"key": "Content-Type", "value": "application/json"})
            entry["body"] = {"mode": "raw", "raw": json.dumps(request.json_body, indent=2)}
        elif request.form_files:
            entry["body"] = {
                "mode": "formdata",
                "formdata": [
                    {"key": part, "type": "file", "src": source}
                    for part, source in request.form_files.items()
                ],
            }
        test = [
            f'pm.test("status", () => pm.expect(pm.response.code).to.be.oneOf('
            f"{json.dumps(list(request.expected_statuses))}));"
        ]
        if request.captures_job_id:
            test.append(f'pm.collectionVariables.set("{JOB_ID_VARIABLE}", pm.response.json().id);')
        items.append(
            {
                "name": request.name,
                "request": entry,
                "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": test}}],
            }
        )
    return {
        "info": {
            "name": "mtc gateway",
            "description": "Every route of the mtc gateway, generated from its OpenAPI document "
            "(python -m deploy.api_collections). File uploads name files of the mtc "
            "repository: set Postman's working directory to a checkout.",
            "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
        },
        "variable": [
            {"key": "baseUrl", "value": "http://127.0.0.1:8080"},
            {"key": "apiKey", "value": ""},
            {"key": JOB_ID_VARIABLE, "value": ""},
        ],
        "item": items,
    }


def curl_script(requests: list[ApiRequest]) -> str:
    """A bash script sending every request with curl; it stops at the first failure."""
    lines = [
        "#!/usr/bin/env bash",
        "# Every route of the mtc gateway, one curl call each, generated from its OpenAPI",
        "# document (python -m deploy.api_collections). Run it from a checkout of mtc:",
        "#   MTC_URL=http://127.0.0.1:8080 MTC_API_KEY=... \\",
        "#     bash docs/api-collections/mtc-requests.sh",
        "set -euo pipefail",
        'MTC_URL="${MTC_URL:-http://127.0.0.1:8080}"',
        "auth=()",
        'if [ -n "${MTC_API_KEY:-}" ]; then auth=(-H "X-API-Key: ${MTC_API_KEY}"); fi',
        "",
        "# Sends one request; fails unless the status is one of the expected ones.",
        "call() {",
        '  local expected="$1"; shift',
        "  local status",
        '  status=$(curl -sS -o /tmp/mtc-answer.$$ -w "%{http_code}" "${auth[@]}" "$@")',
        '  echo "$status $*" | cut -c1-160',
        '  case " $expected " in *" $status "*) ;; *) cat /tmp/mtc-answer.$$; echo; exit 1 ;; esac',
        "}",
        "",
    ]
    for request in requests:
        expected = " ".join(str(status) for status in request.expected_statuses)
        # Paths are plain (letters, digits, `/`, `_`, `-`): double quotes are enough.
        path = request.path.replace("{{" + JOB_ID_VARIABLE + "}}", "${JOB_ID}")
        arguments = [f"-X {request.method}", f'"${{MTC_URL}}{path}"']
        if request.json_body is not None:
            arguments += [
                "-H 'content-type: application/json'",
                "-d " + shlex.quote(json.dumps(request.json_body)),
            ]
        for part, source in request.form_files.items():
            arguments.append(f"-F {part}=@{source}")
        lines += [f"# {request.name}", f'call "{expected}" ' + " ".join(arguments)]
        if request.captures_job_id:
            lines.append(
                "JOB_ID=$(python3 -c 'import json, sys; print(json.load(sys.stdin)[\"id\"])' "
                "< /tmp/mtc-answer.$$)"
            )
        lines.append("")
    lines.append("rm -f /tmp/mtc-answer.$$")
    return "\n".join(lines) + "\n"


def render() -> dict[Path, str]:
    """Both files' contents."""
    requests = requests_of(gateway_document())
    return {
        POSTMAN_FILE: json.dumps(postman_collection(requests), indent=2) + "\n",
        CURL_FILE: curl_script(requests),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write docs/api-collections/")
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are stale")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = [str(path.relative_to(REPO)) for path in stale_paths(files)]
        if stale:
            print("out of date (run make api-collections): " + ", ".join(stale))
        return 1 if stale else 0
    for path in write_files(files):
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
