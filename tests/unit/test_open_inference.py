"""The Open Inference Protocol (V2 REST) of every kind of service and through the gateway,
with tiny real models: the same predictions as `/v1`, JSON and binary tensors, and every
refusal as `{"error": ...}` with the status of its cause."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.api_keys import hash_api_key
from gateway.settings import GatewaySettings
from services.audio.api import build_app as build_audio_app
from services.audio.settings import AudioSettings
from services.core.open_inference import as_inference_error
from services.pose.api import build_app as build_pose_app
from services.pose.settings import PoseSettings
from services.text.api import build_app as build_text_app
from services.text.settings import TextSettings
from tests.support.audio_clips import CALL_LABELS, build_tiny_call_model, encode, tone
from tests.support.in_thread_servers import bound_socket, served_gateway, serving, url_of
from tests.support.pose_images import TINY_VIT_LABELS, build_tiny_vit, image_bytes
from tests.support.service_client import wait_ready

INFER = "/v2/models/sentiment/infer"
API_KEY = "mtc_v2-test-key-0123456789"


def text_input(texts: Sequence[str], *, shape: list[int] | None = None) -> dict[str, Any]:
    return {
        "name": "text",
        "shape": shape or [len(texts)],
        "datatype": "BYTES",
        "data": list(texts),
    }


def binary_request(
    inputs: dict[str, Sequence[bytes]], *, outputs: list[dict[str, Any]] | None = None
) -> tuple[bytes, dict[str, str]]:
    """A body with every input as binary tensor data, and its header."""
    parts = [
        b"".join(struct.pack("<I", len(element)) + element for element in elements)
        for elements in inputs.values()
    ]
    document: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "shape": [len(elements), 1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(part)},
            }
            for (name, elements), part in zip(inputs.items(), parts, strict=True)
        ]
    }
    if outputs is not None:
        document["outputs"] = outputs
    header = json.dumps(document).encode()
    return header + b"".join(parts), {"Inference-Header-Content-Length": str(len(header))}


def read_binary_answer(response: httpx.Response) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the JSON, output name -> decoded values) of an answer with binary outputs."""
    length = int(response.headers["inference-header-content-length"])
    document = json.loads(response.content[:length])
    values: dict[str, Any] = {}
    offset = length
    for output in document["outputs"]:
        if "data" in output:
            continue
        size = output["parameters"]["binary_data_size"]
        raw = response.content[offset : offset + size]
        offset += size
        if output["datatype"] == "FP32":
            values[output["name"]] = list(struct.unpack(f"<{size // 4}f", raw))
        else:
            elements, position = [], 0
            while position < len(raw):
                (count,) = struct.unpack_from("<I", raw, position)
                elements.append(raw[position + 4 : position + 4 + count].decode())
                position += 4 + count
            values[output["name"]] = elements
    assert offset == len(response.content)
    return document, values


def ranked_from_v2(document: dict[str, Any]) -> list[list[tuple[str, float]]]:
    outputs = {output["name"]: output for output in document["outputs"]}
    rows, width = outputs["label"]["shape"]
    labels, scores = outputs["label"]["data"], outputs["score"]["data"]
    return [
        [(labels[row * width + k], scores[row * width + k]) for k in range(width)]
        for row in range(rows)
    ]


def ranked_from_v1(body: dict[str, Any]) -> list[list[tuple[str, float]]]:
    return [[(s["label"], s["score"]) for s in scores] for scores in body["predictions"]]


def assert_same_ranking(
    v2: list[list[tuple[str, float]]], v1: list[list[tuple[str, float]]]
) -> None:
    assert [[label for label, _ in row] for row in v2] == [
        [label for label, _ in row] for row in v1
    ]
    for row2, row1 in zip(v2, v1, strict=True):
        assert [score for _, score in row2] == pytest.approx([score for _, score in row1], abs=1e-6)


# --------------------------------------------------------------------------- text service


@pytest.fixture(scope="module")
def text_client(tiny_model_dir: Path) -> Iterator[TestClient]:
    settings = TextSettings(task="sentiment", model_uri=str(tiny_model_dir), max_text_chars=50)
    with TestClient(build_text_app(settings)) as client:
        wait_ready(client)
        yield client


def test_health_and_server_metadata(text_client: TestClient) -> None:
    assert text_client.get("/v2/health/live").json() == {"live": True}
    assert text_client.get("/v2/health/ready").json() == {"ready": True}
    server = text_client.get("/v2").json()
    assert server["name"] == "mtc"
    assert server["extensions"] == ["binary_tensor_data"]


def test_model_metadata_names_the_tensors(text_client: TestClient) -> None:
    metadata = text_client.get("/v2/models/sentiment").json()
    version = metadata["versions"][0]

    assert metadata["name"] == "sentiment"
    assert version.startswith("sha256-")
    assert metadata["platform"].startswith("mtc_")
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1, 2]},
        {"name": "score", "datatype": "FP32", "shape": [-1, 2]},
    ]
    assert text_client.get("/v2/models/sentiment/ready").json() == {
        "name": "sentiment",
        "ready": True,
    }
    assert text_client.get(f"/v2/models/sentiment/versions/{version}/ready").status_code == 200
    assert text_client.get(f"/v2/models/sentiment/versions/{version}").json() == metadata


def test_json_inference_matches_v1(text_client: TestClient) -> None:
    texts = ["good", "a bad movie", "fine"]

    response = text_client.post(INFER, json={"id": "r-1", "inputs": [text_input(texts)]})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "x-inference-time" in response.headers
    document = response.json()
    assert document["model_name"] == "sentiment"
    assert document["id"] == "r-1"
    assert [output["shape"] for output in document["outputs"]] == [[3, 2], [3, 2]]
    assert [output["datatype"] for output in document["outputs"]] == ["BYTES", "FP32"]
    v1 = text_client.post("/v1/sentiment/predict", json={"text": texts}).json()
    assert_same_ranking(ranked_from_v2(document), ranked_from_v1(v1))


def test_n_by_1_shapes_nested_or_flat_and_the_version_route(text_client: TestClient) -> None:
    version = text_client.get("/v2/models/sentiment").json()["versions"][0]
    flat = text_input(["good", "bad"], shape=[2, 1])
    nested = {**flat, "data": [["good"], ["bad"]]}

    answers = [
        text_client.post(INFER, json={"inputs": [flat]}),
        text_client.post(INFER, json={"inputs": [nested]}),
        text_client.post(f"/v2/models/sentiment/versions/{version}/infer", json={"inputs": [flat]}),
    ]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert ranked_from_v2(answers[0].json()) == ranked_from_v2(answers[1].json())
    assert answers[2].json()["model_version"] == version


def test_binary_inputs_and_outputs(text_client: TestClient) -> None:
    body, headers = binary_request(
        {"text": [b"good", "caf\u00e9 au lait".encode()]},
        outputs=[{"name": "score", "parameters": {"binary_data": True}}, {"name": "label"}],
    )

    response = text_client.post(INFER, content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    document, values = read_binary_answer(response)
    assert [output["name"] for output in document["outputs"]] == ["score", "label"]
    assert "data" not in document["outputs"][0]
    assert len(values["score"]) == 4
    labels = document["outputs"][1]["data"]
    json_answer = text_client.post(
        INFER, json={"inputs": [text_input(["good", "caf\u00e9 au lait"])]}
    ).json()
    assert labels == [label for row in ranked_from_v2(json_answer) for label, _ in row]
    assert values["score"] == pytest.approx(
        [score for row in ranked_from_v2(json_answer) for _, score in row], abs=1e-6
    )


def test_binary_data_output_returns_every_output_as_binary(text_client: TestClient) -> None:
    body = {"inputs": [text_input(["good"])], "parameters": {"binary_data_output": True}}

    response = text_client.post(INFER, json=body)

    _, values = read_binary_answer(response)
    assert sorted(values["label"]) == ["NEGATIVE", "POSITIVE"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": [{**text_input(["a"]), "datatype": "FP32"}]}, "datatype FP32"),
        ({"inputs": [text_input(["a", "b"], shape=[3])]}, "data holds 2"),
        ({"inputs": [text_input(["a", "b"], shape=[2, 2])]}, "shape [2, 2]"),
        ({"inputs": [text_input(["a"], shape=[1, 1, 1])]}, "shape [1, 1, 1]"),
        ({"inputs": [text_input([], shape=[0])]}, "no elements"),
        ({"inputs": [{**text_input(["a"]), "name": "words"}]}, "unknown input 'words'"),
        ({"inputs": [text_input(["a"]), text_input(["b"])]}, "given twice"),
        ({"inputs": [{**text_input(["a"]), "data": [3]}]}, "is a int; BYTES elements"),
        ({"inputs": [{**text_input(["a"]), "data": None}]}, "no `data`"),
        ({"inputs": []}, "inputs: List should have at least 1 item"),
        ({"inputs": [text_input(["a"])], "outputs": [{"name": "probs"}]}, "unknown output"),
        (
            {"inputs": [text_input(["a"])], "outputs": [{"name": "label", "parameters": {}}] * 2},
            "asked for twice",
        ),
        (
            {
                "inputs": [text_input(["a"])],
                "outputs": [{"name": "label", "parameters": {"binary_data": "yes"}}],
            },
            "must be true or false",
        ),
        (
            {
                "inputs": [text_input(["a"])],
                "outputs": [{"name": "label", "parameters": {"classification": 2}}],
            },
            "classification extension is not supported",
        ),
        (
            {"inputs": [{**text_input(["a"]), "parameters": {"binary_data_size": -1}}]},
            "must be a byte count",
        ),
        ({"inputs": [text_input(["\ud800"])]}, "Invalid JSON"),
    ],
)
def test_bad_requests_are_400_in_the_protocol_shape(
    text_client: TestClient, body: dict[str, Any], fragment: str
) -> None:
    response = text_client.post(INFER, content=json.dumps(body))

    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"]
    assert fragment in response.json()["error"]


def test_bad_binary_sizes_are_400(text_client: TestClient) -> None:
    body, headers = binary_request({"text": [b"good", b"bad"]})
    header_length = int(headers["Inference-Header-Content-Length"])

    cases = [
        (body[:-1], headers, "add up to"),
        (body + b"x", headers, "add up to"),
        (body, {"Inference-Header-Content-Length": "abc"}, "must be a byte count"),
        (body, {"Inference-Header-Content-Length": str(len(body) + 1)}, "but the body has only"),
        (body[:header_length], {}, "no binary data follows"),
        (
            body[:header_length] + struct.pack("<I", 1000) + b"x" * 11,
            headers,
            "declares 1000 bytes",
        ),
    ]
    for content, sent_headers, fragment in cases:
        response = text_client.post(INFER, content=content, headers=sent_headers)
        assert response.status_code == 400, (fragment, response.text)
        assert fragment in response.json()["error"]


def test_binary_text_must_be_utf8(text_client: TestClient) -> None:
    body, headers = binary_request({"text": [b"\xff\xfe"]})

    response = text_client.post(INFER, content=body, headers=headers)

    assert response.status_code == 400
    assert response.json() == {"error": "text[0] is not valid UTF-8"}


def test_unknown_models_and_versions_are_404(text_client: TestClient) -> None:
    unknown = text_client.post("/v2/models/nope/infer", json={"inputs": []})
    version = text_client.get("/v2/models/sentiment/versions/0/ready")
    metadata = text_client.get("/v2/models/nope")

    assert unknown.status_code == version.status_code == metadata.status_code == 404
    assert unknown.json() == {"error": "unknown model 'nope'; this service serves 'sentiment'"}
    assert "no version '0'" in version.json()["error"]
    assert text_client.get("/v2/anything").json() == {"error": "Not Found"}


def test_limits_are_the_v1_limits(text_client: TestClient) -> None:
    too_many = text_client.post(INFER, json={"inputs": [text_input(["a"] * 1025)]})
    too_long = text_client.post(INFER, json={"inputs": [text_input(["x" * 51])]})
    many_values = text_client.post(
        INFER, content=b'{"inputs": [{"name": "text", "data": [' + b"[]," * 10_000 + b"[]]}]}"
    )

    assert too_many.status_code == 413
    assert "1024 (MTC_MAX_ITEMS_PER_REQUEST)" in too_many.json()["error"]
    assert too_long.status_code == 413
    assert "MTC_MAX_TEXT_CHARS" in too_long.json()["error"]
    assert many_values.status_code == 413
    assert "JSON holds more than" in many_values.json()["error"]


def test_the_body_limit_answers_in_the_protocol_shape(tiny_model_dir: Path) -> None:
    settings = TextSettings(task="sentiment", model_uri=str(tiny_model_dir), max_body_bytes=2048)
    with TestClient(build_text_app(settings)) as client:
        wait_ready(client)
        response = client.post(INFER, json={"inputs": [text_input(["x" * 3000])]})

    assert response.status_code == 413
    assert response.json() == {"error": "request body is larger than 2048 bytes"}


def test_error_bodies_of_other_shapes_are_rewritten() -> None:
    assert as_inference_error(b'{"detail": "gone", "error_type": "x"}') == b'{"error": "gone"}'
    validation = b'{"detail": [{"loc": ["path", "model_name"], "msg": "bad"}]}'
    assert as_inference_error(validation) == b'{"error": "path.model_name: bad"}'
    assert as_inference_error(b'{"error": "already"}') is None
    assert as_inference_error(b"not json") is None


# --------------------------------------------------------------------------- images, audio


def test_images_as_base64_json_and_as_binary_match_v1(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    model_dir = build_tiny_vit(tmp_path_factory.mktemp("v2-vit"))
    red = image_bytes((64, 48), image_format="PNG", color=(220, 30, 30))
    blue = image_bytes((40, 80), image_format="JPEG", color=(20, 40, 230))
    with TestClient(build_pose_app(PoseSettings(task="pose", model_uri=str(model_dir)))) as client:
        wait_ready(client)
        as_base64 = [base64.b64encode(image).decode() for image in (red, blue)]
        json_answer = client.post(
            "/v2/models/pose/infer",
            json={
                "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": as_base64}]
            },
        )
        body, headers = binary_request({"image": [red, blue]})
        binary_answer = client.post("/v2/models/pose/infer", content=body, headers=headers)
        v1 = client.post("/v1/pose/predict", json={"images": as_base64}).json()
        not_an_image = client.post(
            "/v2/models/pose/infer",
            content=binary_request({"image": [b"text"]})[0],
            headers=binary_request({"image": [b"text"]})[1],
        )
        bad_base64 = client.post(
            "/v2/models/pose/infer",
            json={"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["@@"]}]},
        )
        metadata = client.get("/v2/models/pose").json()

    assert json_answer.status_code == binary_answer.status_code == 200
    assert_same_ranking(ranked_from_v2(json_answer.json()), ranked_from_v1(v1))
    assert_same_ranking(ranked_from_v2(binary_answer.json()), ranked_from_v1(v1))
    assert {label for label, _ in ranked_from_v2(json_answer.json())[0]} == set(TINY_VIT_LABELS)
    assert not_an_image.status_code in (400, 415)
    assert list(not_an_image.json()) == ["error"]
    assert bad_base64.status_code == 400
    assert "not valid base64" in bad_base64.json()["error"]
    assert [tensor["name"] for tensor in metadata["inputs"]] == ["image"]


def test_clips_with_and_without_transcripts(tmp_path_factory: pytest.TempPathFactory) -> None:
    model_dir = build_tiny_call_model(tmp_path_factory.mktemp("v2-call"))
    clip = encode(tone(1.0))
    settings = AudioSettings(model_uri=str(model_dir), asr_enabled=False, max_clips_per_request=2)
    with TestClient(build_audio_app(settings)) as client:
        wait_ready(client)
        body, headers = binary_request({"audio": [clip, clip], "transcript": [b"help, fire", b""]})
        binary_answer = client.post("/v2/models/audio/infer", content=body, headers=headers)
        v1 = client.post(
            "/v1/audio/predict",
            files=[
                ("audio", ("a.wav", clip, "audio/wav")),
                ("audio", ("b.wav", clip, "audio/wav")),
            ],
            data={"transcript": ["help, fire", ""]},
        ).json()
        json_answer = client.post(
            "/v2/models/audio/infer",
            json={
                "inputs": [
                    {
                        "name": "audio",
                        "shape": [1],
                        "datatype": "BYTES",
                        "data": [base64.b64encode(clip).decode()],
                    }
                ]
            },
        )
        mismatched = client.post(
            "/v2/models/audio/infer",
            content=binary_request({"audio": [clip], "transcript": [b"a", b"b"]})[0],
            headers=binary_request({"audio": [clip], "transcript": [b"a", b"b"]})[1],
        )
        too_many = client.post(
            "/v2/models/audio/infer",
            content=binary_request({"audio": [clip] * 3})[0],
            headers=binary_request({"audio": [clip] * 3})[1],
        )
        only_transcript = client.post(
            "/v2/models/audio/infer",
            json={
                "inputs": [{"name": "transcript", "shape": [1], "datatype": "BYTES", "data": ["x"]}]
            },
        )

    assert binary_answer.status_code == 200, binary_answer.text
    assert_same_ranking(ranked_from_v2(binary_answer.json()), ranked_from_v1(v1))
    assert json_answer.status_code == 200
    assert {label for label, _ in ranked_from_v2(json_answer.json())[0]} == set(CALL_LABELS)
    assert mismatched.status_code == 400
    assert "as many elements each" in mismatched.json()["error"]
    assert too_many.status_code == 413
    assert "MTC_MAX_CLIPS_PER_REQUEST" in too_many.json()["error"]
    assert only_transcript.status_code == 400
    assert "missing input 'audio'" in only_transcript.json()["error"]


# --------------------------------------------------------------------------- the gateway


@pytest.fixture(scope="module")
def text_service_url(tiny_model_dir: Path) -> Iterator[str]:
    with serving(
        build_text_app(TextSettings(task="sentiment", model_uri=str(tiny_model_dir)))
    ) as url:
        with httpx.Client(base_url=url) as client:
            wait_ready(client)  # type: ignore[arg-type]
        yield url


@pytest.fixture
def gateway(text_service_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    keys = tmp_path / "api-keys"
    keys.write_text(f"tester {hash_api_key(API_KEY)}\n")
    settings = GatewaySettings(
        upstreams={"sentiment": text_service_url},
        api_keys_file=keys,
        rate_limit_per_second=0.01,
        rate_limit_burst=4,
        quota_items_per_token=2,
    )
    with served_gateway(settings) as client:
        client.headers["x-api-key"] = API_KEY
        yield client


def test_the_gateway_forwards_binary_requests_and_relays_binary_answers(
    gateway: httpx.Client,
) -> None:
    body, headers = binary_request(
        {"text": [b"good"]}, outputs=[{"name": "label", "parameters": {"binary_data": True}}]
    )

    response = gateway.post(INFER, content=body, headers=headers)

    assert response.status_code == 200, response.text
    document, values = read_binary_answer(response)
    assert document["model_name"] == "sentiment"
    assert sorted(values["label"]) == ["NEGATIVE", "POSITIVE"]
    assert "x-total-time" in response.headers


def test_the_gateway_answers_health_itself_and_without_a_key(gateway: httpx.Client) -> None:
    anonymous = {"x-api-key": ""}
    assert gateway.get("/v2/health/live", headers=anonymous).json() == {"live": True}
    assert gateway.get("/v2/health/ready", headers=anonymous).json() == {"ready": True}
    assert gateway.get("/v2", headers=anonymous).json()["extensions"] == ["binary_tensor_data"]


def test_the_gateway_refuses_in_the_protocol_shape(gateway: httpx.Client) -> None:
    unknown = gateway.post("/v2/models/nope/infer", json={"inputs": []})
    no_key = gateway.get("/v2/models/sentiment", headers={"x-api-key": ""})
    compressed = gateway.post(INFER, content=b"x", headers={"content-encoding": "gzip"})
    bad_version = gateway.get("/v2/models/sentiment/versions/v%201/ready")

    assert unknown.status_code == 404
    assert unknown.json() == {"error": "unknown model 'nope'; the models are the tasks: sentiment"}
    assert no_key.status_code == 401
    assert "needs an API key" in no_key.json()["error"]
    assert compressed.status_code == 415
    assert list(compressed.json()) == ["error"]
    assert bad_version.status_code == 404
    assert list(bad_version.json()) == ["error"]


def test_the_quota_counts_the_declared_batch(gateway: httpx.Client) -> None:
    # Burst 4 tokens, one per 2 items: a binary request declaring 8 texts takes all four.
    body, headers = binary_request({"text": [b"fine"] * 8})

    first = gateway.post(INFER, content=body, headers=headers)
    second = gateway.post(INFER, json={"inputs": [text_input(["fine"])]})

    assert first.status_code == 200
    assert second.status_code == 429
    assert "over its quota" in second.json()["error"]
    assert "retry-after" in second.headers


def test_the_gateway_documents_the_protocol(gateway: httpx.Client) -> None:
    document = gateway.get("/openapi.json").json()
    infer = document["paths"]["/v2/models/{model_name}/infer"]["post"]

    assert {"/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}"} <= set(
        document["paths"]
    )
    assert infer["parameters"][0]["schema"]["examples"] == ["sentiment"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    for status in ("400", "401", "404", "413", "429", "503", "504"):
        schema = infer["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/InferenceErrorBody"}
    assert "security" in infer
    assert "security" not in document["paths"]["/v2/health/ready"]["get"]


def test_a_model_that_is_not_loaded_answers_503(tmp_path: Path) -> None:
    settings = TextSettings(task="sentiment", model_uri=str(tmp_path / "missing"))
    with TestClient(build_text_app(settings)) as client:
        ready = client.get("/v2/health/ready")
        model_ready = client.get("/v2/models/sentiment/ready")
        infer = client.post(INFER, json={"inputs": [text_input(["good"])]})
        metadata = client.get("/v2/models/sentiment")

    assert ready.status_code == model_ready.status_code == infer.status_code == 503
    assert list(infer.json()) == ["error"]
    assert "not loaded" in infer.json()["error"]
    assert metadata.status_code == 200
    assert metadata.json()["versions"] == []
    assert metadata.json()["outputs"][0]["shape"] == [-1, -1]


def test_the_gateway_is_ready_only_when_every_task_is(text_service_url: str) -> None:
    unreachable = bound_socket()  # bound, never listening: connections are refused
    settings = GatewaySettings(
        upstreams={"sentiment": text_service_url, "pose": url_of(unreachable)},
        task_kinds={"sentiment": "text", "pose": "image"},
        authentication="anonymous",
    )
    with served_gateway(settings) as client:
        ready = client.get("/v2/health/ready")
        pose = client.get("/v2/models/pose/ready")
        sentiment = client.get("/v2/models/sentiment/ready")
    unreachable.close()

    assert ready.status_code == 503
    assert ready.json() == {"error": "not ready: pose (unreachable)"}
    assert pose.status_code == 503
    assert list(pose.json()) == ["error"]
    assert sentiment.json() == {"name": "sentiment", "ready": True}
