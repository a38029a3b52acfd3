"""The whole stack as local processes (the `make run` code path), called through the gateway."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.audio_clips import encode, spoken_wav, urgent_wav
from tests.support.pose_images import opencv_doc_data, pedestrian_crop
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
MODELS_DIR = REPO / ".mtc" / "models"


@dataclass
class Stack:
    base: str
    service_port: int
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def starter_models() -> list[str]:
    """`--model` options for the starter models (`make models` builds them; here if missing)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "services.lifecycle.cli",
            "models",
            "build",
            "--out-dir",
            str(MODELS_DIR),
        ],
        check=True,
        cwd=REPO,
    )
    return [
        *(
            option
            for task in ("sentiment", "disaster")
            for option in ("--model", f"{task}={MODELS_DIR / task}")
        ),
        "--pose-model",
        f"pose={MODELS_DIR / 'pose'}",
        "--audio-model",
        f"audio={MODELS_DIR / 'audio'}",
    ]


SERVICES = 4  # sentiment, disaster, pose, audio: on consecutive ports


def stack_command(gateway_port: int, service_port: int, models: list[str]) -> list[str]:
    return local_stack_command(
        gateway_port,
        service_port,
        *models,
    )


@pytest.fixture(scope="module")
def stack(starter_models: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    gateway_port, service_port = free_port(), free_port_run(SERVICES)
    log = tmp_path_factory.mktemp("stack") / "stack.log"
    process = start(stack_command(gateway_port, service_port, starter_models), log=log)
    base = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_for_http(f"{base}/health/ready", process, timeout=300)
    except Exception:
        stop(process)
        print(log.read_text())
        raise
    yield Stack(base, service_port, process)
    stop(process)


def test_sentiment_through_the_gateway(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.base}/v1/sentiment/predict",
        json={
            "text": [
                "An absolute triumph, moving and beautifully acted",
                "a tedious, badly written mess",
            ]
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [scores[0]["label"] for scores in body["predictions"]] == ["POSITIVE", "NEGATIVE"]
    assert body["model"]["name"] == "mtc-sentiment-minilm"
    assert "x-total-time" in response.headers
    assert "x-inference-time" in response.headers


def test_disaster_through_the_gateway(stack: Stack) -> None:
    texts = [
        "this mixtape is fire",
        "I'm dying of laughter",
        "Evacuation ordered as wildfire jumps the highway, homes burning on Ridge Road",
        "Magnitude 6.8 earthquake: buildings collapsed downtown, rescuers searching rubble",
    ]
    response = httpx.post(f"{stack.base}/v1/disaster/predict", json={"text": texts}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"] == "mtc-disaster-minilm"
    top = [scores[0]["label"] for scores in body["predictions"]]
    assert top == ["not_disaster", "not_disaster", "disaster", "disaster"]


def test_pose_through_the_gateway(stack: Stack) -> None:
    data = opencv_doc_data()
    walker = pedestrian_crop(data)
    multipart = httpx.post(
        f"{stack.base}/v1/pose/predict",
        files=[("image", ("walker.png", walker, "image/png"))],
        timeout=60,
    )
    assert multipart.status_code == 200, multipart.text
    body = multipart.json()
    assert body["predictions"][0][0]["label"] == "standing"
    assert len(body["keypoints"][0]) == 33
    as_json = httpx.post(
        f"{stack.base}/v1/pose/predict",
        json={"images": [base64.b64encode(walker).decode()]},
        timeout=60,
    )
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["predictions"] == body["predictions"]
    refused = httpx.post(
        f"{stack.base}/v1/pose/predict",
        files=[("image", ("notes.jpg", b"just some text", "image/jpeg"))],
        timeout=60,
    )
    assert refused.status_code == 415
    assert "image[0]" in refused.json()["detail"]


def test_audio_through_the_gateway(stack: Stack) -> None:
    clip = spoken_wav("please send an ambulance, my father collapsed in the garden")
    response = httpx.post(
        f"{stack.base}/v1/audio/predict", files={"audio": ("call.wav", clip)}, timeout=120
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"] == "mtc-emergency-call"
    assert body["clips"][0]["transcript_source"] == "asr"
    assert "ambulance" in body["clips"][0]["transcript"].lower()
    assert body["predictions"][0][0]["label"] == "help"
    assert "x-total-time" in response.headers
    given = httpx.post(
        f"{stack.base}/v1/audio/predict",
        files={"audio": ("call.wav", clip)},
        data={"transcript": "I want to book a table for four on Friday"},
        timeout=120,
    )
    assert given.status_code == 200, given.text
    assert given.json()["clips"][0]["transcript_source"] == "request"
    assert given.json()["predictions"][0][0]["label"] == "regular"
    silent = httpx.post(
        f"{stack.base}/v1/audio/predict",
        files={"audio": ("quiet.wav", encode(np.zeros(16_000, dtype=np.float32)))},
        timeout=60,
    )
    assert silent.status_code == 422, silent.text
    assert silent.json()["error_type"] == "unusable_content"


def test_korean_transcript_through_the_gateway(stack: Stack) -> None:
    # A Korean call spoken by espeak-ng's Korean voice, with its transcript (ASR is English).
    transcript = "가게에 칼을 든 남자가 들어와서 계산대 돈을 내놓으라고 위협하고 있어요"
    response = httpx.post(
        f"{stack.base}/v1/audio/predict",
        files={"audio": ("call.wav", urgent_wav(transcript, voice="ko"))},
        data={"transcript": transcript},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["clips"][0]["transcript_language"] == "ko"
    assert body["predictions"][0][0]["label"] == "robbery", body


def test_json_without_content_type_through_the_gateway(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.base}/v1/sentiment/predict",
        content=json.dumps({"text": ["I loved it"]}).encode(),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_errors_through_the_gateway(stack: Stack) -> None:
    invalid = httpx.post(f"{stack.base}/v1/sentiment/predict", json={"text": []}, timeout=30)
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "text"]
    unknown = httpx.post(f"{stack.base}/v1/nope/predict", json={"text": ["x"]}, timeout=30)
    assert unknown.status_code == 404
    assert unknown.json()["error_type"] == "unknown_task"
    assert "sentiment" in unknown.json()["detail"]
    too_many = httpx.post(
        f"{stack.base}/v1/sentiment/predict", json={"text": ["x"] * 1025}, timeout=30
    )
    assert too_many.status_code == 413
    assert too_many.json()["error_type"] == "batch_too_large"


def test_models_and_service_endpoints(stack: Stack) -> None:
    models = httpx.get(f"{stack.base}/v1/models", timeout=30).json()["models"]
    by_task = {m["task"]: m for m in models}
    assert sorted(by_task) == ["audio", "disaster", "pose", "sentiment"]
    assert all(m["ready"] for m in models)
    assert by_task["sentiment"]["labels"] == ["NEGATIVE", "POSITIVE"]
    assert by_task["disaster"]["labels"] == ["not_disaster", "disaster"]
    for path in ("/health/live", "/metrics", "/docs", "/openapi.json"):
        assert httpx.get(f"{stack.base}{path}", timeout=30).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{stack.service_port}{path}").status_code == 200


def test_interrupt_stops_every_process(starter_models: list[str], tmp_path: Path) -> None:
    gateway_port, service_port = free_port(), free_port_run(SERVICES)
    process = start(
        stack_command(gateway_port, service_port, starter_models), log=tmp_path / "stack.log"
    )
    try:
        wait_for_http(f"http://127.0.0.1:{gateway_port}/health/ready", process, timeout=300)
        # The runner polls readiness itself; interrupt only once it says the stack is up.
        deadline = time.monotonic() + 60
        while "mtc is up" not in (tmp_path / "stack.log").read_text():
            assert time.monotonic() < deadline, "the runner never reported the stack as up"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        stop(process, kill=True)
    for port in (gateway_port, *range(service_port, service_port + SERVICES)):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
