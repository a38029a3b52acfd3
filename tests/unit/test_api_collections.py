"""The Postman collection and curl file cover the gateway's whole OpenAPI document and are
what the generator writes (the e2e suite runs them against the local stack)."""

from __future__ import annotations

import json

from deploy.api_collections import (
    CURL_FILE,
    POSTMAN_FILE,
    curl_script,
    gateway_document,
    render,
    requests_of,
    with_path_examples,
)


def test_the_committed_files_are_the_generated_ones() -> None:
    for path, content in render().items():
        assert path.read_text(encoding="utf-8") == content, "run `make api-collections`"


def test_every_documented_operation_has_a_request() -> None:
    document = gateway_document()
    # Path parameters with an example (the Open Inference model name) are filled in.
    operations = {
        (
            method.upper(),
            with_path_examples(path, operation).replace("{job_id}", "{{jobId}}"),
        )
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    collection = json.loads(POSTMAN_FILE.read_text(encoding="utf-8"))
    requested = {
        (item["request"]["method"], item["request"]["url"].removeprefix("{{baseUrl}}"))
        for item in collection["item"]
    }
    assert operations == requested


def test_a_multipart_route_uploads_a_sample_file_and_json_routes_send_json() -> None:
    requests = requests_of(gateway_document())
    pose = [r for r in requests if r.path == "/v1/pose/predict"]
    assert {bool(r.form_files) for r in pose} == {True, False}
    assert all(r.json_body is not None for r in requests if r.path == "/v1/jobs")
    script = curl_script(requests)
    assert "-F image=@load/data/photos/person-1.jpg" in script
    assert CURL_FILE.name == "mtc-requests.sh"
