"""The Open Inference Protocol through the gateway of the local stack (starter models), spoken
by the real clients: Triton's `tritonclient[http]` (binary tensor data by default) and the
KServe SDK's REST client (in a virtualenv of its own under `.mtc/tools/`, as its pins
conflict with mtc's). Each classifies a review, a photo and a clip as `/v1` does; bad
requests get the protocol's `{"error": ...}` with a 4xx."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.support.processes import (
    free_port,
    free_port_run,
    local_stack_command,
    start,
    stop,
    wait_for_http,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PHOTO = REPO / "load" / "data" / "photos" / "person-1.jpg"
CLIP = REPO / "load" / "data" / "clips" / "call-1.wav"
REVIEWS = ["An absolute triumph, moving and beautifully acted", "a tedious, badly written mess"]
TRANSCRIPT = "There is a fire in the building, please send help"
SERVICES = 4  # sentiment, disaster, pose, audio
KSERVE_VERSION = "0.21.0"
KSERVE_ENV = REPO / ".mtc" / "tools" / "kserve-client"
KSERVE_SCRIPT = REPO / "tests" / "support" / "kserve_v2_client.py"

Ranking = list[list[tuple[str, float]]]


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    subprocess.run(
        [sys.executable, "-m", "services.lifecycle.cli", "models", "build"], check=True, cwd=REPO
    )
    log = tmp_path_factory.mktemp("open-inference") / "stack.log"
    gateway_port, service_port = free_port(), free_port_run(SERVICES + 1)
    command = local_stack_command(
        gateway_port,
        service_port,
        "--jobs-metrics-port",
        str(service_port + SERVICES),
    )
    stack = start(command, log=log)
    base = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_for_http(f"{base}/v2/health/ready", stack, timeout=300)
    except Exception:
        stop(stack)
        print(log.read_text())
        raise
    yield base
    stop(stack)


@pytest.fixture(scope="module")
def client(gateway_url: str) -> Iterator[triton.InferenceServerClient]:
    triton_client = triton.InferenceServerClient(
        gateway_url.removeprefix("http://"), network_timeout=120.0, connection_timeout=120.0
    )
    yield triton_client
    triton_client.close()


@pytest.fixture(scope="module")
def v1_rankings(gateway_url: str) -> dict[str, Ranking]:
    """What `/v1` answers for the same review, photo and clip: the reference."""
    with httpx.Client(base_url=gateway_url, timeout=120) as http:
        answers = {
            "sentiment": http.post("/v1/sentiment/predict", json={"text": REVIEWS}),
            "pose": http.post(
                "/v1/pose/predict",
                json={"images": [base64.b64encode(PHOTO.read_bytes()).decode()]},
            ),
            "audio": http.post(
                "/v1/audio/predict", files=[("audio", ("call-1.wav", CLIP.read_bytes()))]
            ),
            "audio+transcript": http.post(
                "/v1/audio/predict",
                files=[("audio", ("call-1.wav", CLIP.read_bytes()))],
                data={"transcript": TRANSCRIPT},
            ),
        }
    for answer in answers.values():
        assert answer.status_code == 200, answer.text
    return {
        name: [
            [(s["label"], s["score"]) for s in scores] for scores in answer.json()["predictions"]
        ]
        for name, answer in answers.items()
    }


def bytes_input(
    name: str, elements: list[bytes | str], *, binary: bool = True
) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(elements)], "BYTES")
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    return tensor


def ranking_of(result: triton.InferResult) -> Ranking:
    labels, scores = result.as_numpy("label"), result.as_numpy("score")
    assert labels is not None
    assert scores is not None
    return [
        [
            (label.decode() if isinstance(label, bytes) else str(label), float(score))
            for label, score in zip(label_row, score_row, strict=True)
        ]
        for label_row, score_row in zip(labels, scores, strict=True)
    ]


def assert_same(ranking: Ranking, reference: Ranking) -> None:
    assert [[label for label, _ in row] for row in ranking] == [
        [label for label, _ in row] for row in reference
    ]
    for row, expected in zip(ranking, reference, strict=True):
        assert [score for _, score in row] == pytest.approx(
            [score for _, score in expected], abs=1e-5
        )


def test_tritonclient_sees_a_live_ready_server_and_its_models(
    client: triton.InferenceServerClient,
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    for model in ("sentiment", "disaster", "pose", "audio"):
        assert client.is_model_ready(model)
    audio = client.get_model_metadata("audio")
    assert [tensor["name"] for tensor in audio["inputs"]] == ["audio", "transcript"]
    assert [tensor["name"] for tensor in audio["outputs"]] == ["label", "score"]


def test_tritonclient_classifies_a_review(
    client: triton.InferenceServerClient, v1_rankings: dict[str, Ranking]
) -> None:
    binary = client.infer("sentiment", [bytes_input("text", list(REVIEWS))])
    in_json = client.infer(
        "sentiment",
        [bytes_input("text", list(REVIEWS), binary=False)],
        outputs=[
            triton.InferRequestedOutput("label", binary_data=False),
            triton.InferRequestedOutput("score", binary_data=False),
        ],
        request_id="review-1",
    )

    assert_same(ranking_of(binary), v1_rankings["sentiment"])
    assert_same(ranking_of(in_json), v1_rankings["sentiment"])
    assert ranking_of(binary)[0][0][0] == "POSITIVE"
    assert in_json.get_response()["id"] == "review-1"


def test_tritonclient_classifies_a_photo_and_a_clip(
    client: triton.InferenceServerClient, v1_rankings: dict[str, Ranking]
) -> None:
    photo = client.infer("pose", [bytes_input("image", [PHOTO.read_bytes()])])
    clip = client.infer("audio", [bytes_input("audio", [CLIP.read_bytes()])])
    with_transcript = client.infer(
        "audio",
        [bytes_input("audio", [CLIP.read_bytes()]), bytes_input("transcript", [TRANSCRIPT])],
    )

    assert_same(ranking_of(photo), v1_rankings["pose"])
    assert_same(ranking_of(clip), v1_rankings["audio"])
    assert_same(ranking_of(with_transcript), v1_rankings["audio+transcript"])


@pytest.mark.parametrize(
    ("model", "tensor", "status", "fragment"),
    [
        (
            "sentiment",
            ("text", [1], "FP32", np.array([0.5], dtype=np.float32)),
            "400",
            "datatype FP32",
        ),
        ("sentiment", ("words", [1], "BYTES", np.array(["hi"], dtype=np.object_)), "400", "words"),
        ("nope", ("text", [1], "BYTES", np.array(["hi"], dtype=np.object_)), "404", "nope"),
    ],
)
def test_tritonclient_bad_requests_get_protocol_errors(
    client: triton.InferenceServerClient,
    model: str,
    tensor: tuple[str, list[int], str, Any],
    status: str,
    fragment: str,
) -> None:
    name, shape, datatype, data = tensor
    bad = triton.InferInput(name, shape, datatype)
    bad.set_data_from_numpy(data)

    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, [bad])

    assert raised.value.status() == status
    assert fragment in str(raised.value.message())


def test_shape_mismatch_and_bad_binary_sizes_are_400(gateway_url: str) -> None:
    element = b"\x04\x00\x00\x00good"
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(element)},
                }
            ]
        }
    ).encode()
    url = f"{gateway_url}/v2/models/sentiment/infer"
    shape_mismatch = httpx.post(
        url,
        json={"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a", "b"]}]},
    )
    one_element_for_two = httpx.post(
        url,
        content=header + element,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    sizes_past_the_body = httpx.post(
        url,
        content=header + element[:5],
        headers={"Inference-Header-Content-Length": str(len(header))},
    )

    for response, fragment in (
        (shape_mismatch, "data holds 2"),
        (one_element_for_two, "the shape says 2 elements"),
        (sizes_past_the_body, "add up to 8 bytes, but 5"),
    ):
        assert response.status_code == 400
        assert fragment in response.json()["error"]


@pytest.fixture(scope="module")
def kserve_python() -> Path:
    """The Python of a virtualenv with the KServe SDK (made, or updated, on first use)."""
    python = KSERVE_ENV / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('kserve'))"]
    installed = (
        subprocess.run(probe, capture_output=True, text=True, check=False).stdout.strip()
        if python.exists()
        else ""
    )
    if installed != KSERVE_VERSION:
        subprocess.run([sys.executable, "-m", "venv", str(KSERVE_ENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"kserve=={KSERVE_VERSION}"],
            check=True,
        )
    return python


def test_the_kserve_sdk_classifies_a_review_a_photo_and_a_clip(
    kserve_python: Path, gateway_url: str, v1_rankings: dict[str, Ranking]
) -> None:
    run = subprocess.run(
        [str(kserve_python), str(KSERVE_SCRIPT), gateway_url, str(PHOTO), str(CLIP)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout)

    assert results["live"] is True
    assert results["ready"] is True
    assert results["model_ready"] is True
    for model in ("sentiment", "pose", "audio"):
        assert results[model]["model_name"] == model
        ranking = [[(label, score) for label, score in row] for row in results[model]["ranked"]]
        assert_same(ranking, v1_rankings[model])
    assert results["wrong_datatype"] == {
        "status": 400,
        "body": {"error": "input 'text' has datatype FP32; this model takes BYTES"},
    }
