"""Hand-written hostile inputs: each gets a clear 4xx, never a 5xx, a hang or a crash.

A clear 4xx is FastAPI's own 422 validation body, or the documented error shape
`{"detail", "error_type"}`; neither may carry internals (tracebacks, file paths).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.audio.api import build_app as build_audio_app
from services.audio.settings import AudioSettings
from services.pose.api import build_app as build_pose_app
from services.pose.settings import PoseSettings
from services.text.api import build_app as build_text_app
from services.text.settings import TextSettings
from tests.support.audio_clips import build_tiny_call_model, encode, tone
from tests.support.pose_images import build_tiny_vit, png_claiming
from tests.support.service_client import wait_ready

CORPUS = Path(__file__).parent / "corpus"
TEXT_URL = "/v1/sentiment/predict"
POSE_URL = "/v1/pose/predict"
AUDIO_URL = "/v1/audio/predict"


@pytest.fixture(scope="module")
def text(tiny_model_dir: Path) -> Iterator[TestClient]:
    app = build_text_app(TextSettings(task="sentiment", model_uri=str(tiny_model_dir)))
    with TestClient(app) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def pose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    model_dir = build_tiny_vit(tmp_path_factory.mktemp("hostile-vit"))
    with TestClient(build_pose_app(PoseSettings(task="pose", model_uri=str(model_dir)))) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    model_dir = build_tiny_call_model(tmp_path_factory.mktemp("hostile-call"))
    app = build_audio_app(AudioSettings(model_uri=str(model_dir), asr_enabled=False))
    with TestClient(app) as client:
        wait_ready(client)
        yield client


def corpus_file(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def assert_clear_refusal(response: Any) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    body = response.json()
    if response.status_code == 422 and isinstance(body["detail"], list):
        assert all({"loc", "msg", "type"} <= set(issue) for issue in body["detail"])
    else:
        assert set(body) == {"detail", "error_type"}
        assert body["error_type"] != "internal_error"
    text = response.text
    for internal in ("Traceback", "/work/", "site-packages", '.py"', 'File "'):
        assert internal not in text


JSON = {"content-type": "application/json"}

TEXT_BODIES: dict[str, Callable[[], tuple[bytes, dict[str, str]]]] = {
    "nul-bytes": lambda: (corpus_file("nul-bytes.json"), JSON),
    "invalid-utf8": lambda: (corpus_file("invalid-utf8.json"), JSON),
    "huge-float": lambda: (corpus_file("huge-float.json"), JSON),
    "huge-integer": lambda: (corpus_file("huge-integer.json"), JSON),
    "lone-surrogates": lambda: (corpus_file("lone-surrogates.json"), JSON),
    "xml": lambda: (corpus_file("not-json.xml"), {"content-type": "application/xml"}),
    "deeply-nested": lambda: (b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", JSON),
    "ten-megabyte-string": lambda: (json.dumps({"text": ["x" * 10_000_000]}).encode(), JSON),
    "thousands-of-texts": lambda: (json.dumps({"text": ["a"] * 5000}).encode(), JSON),
    "multipart-to-json-route": lambda: (
        b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\nhi\r\n--b--\r\n',
        {"content-type": "multipart/form-data; boundary=b"},
    ),
    "empty-body": lambda: (b"", JSON),
}


@pytest.mark.parametrize("case", sorted(TEXT_BODIES))
def test_text_service_refuses(text: TestClient, case: str) -> None:
    body, headers = TEXT_BODIES[case]()
    assert_clear_refusal(text.post(TEXT_URL, content=body, headers=headers))


def many_parts(field: str, count: int, payload: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = "hostileboundary"
    part = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="x"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + b"\r\n"
    )
    body = part * count + f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def one_part(field: str, payload: bytes) -> tuple[bytes, dict[str, str]]:
    return many_parts(field, 1, payload)


POSE_BODIES: dict[str, Callable[[], tuple[bytes, dict[str, str]]]] = {
    "decompression-bomb-png": lambda: one_part("image", png_claiming(30_000, 30_000)),
    "text-named-png": lambda: one_part("image", corpus_file("text-as-image.png")),
    "thousands-of-parts": lambda: many_parts("image", 5000, b"x"),
    "nul-bytes-image": lambda: one_part("image", b"\x00" * 4096),
    "unterminated-multipart": lambda: (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n\r\nabc',
        {"content-type": "multipart/form-data; boundary=b"},
    ),
    "invalid-base64-json": lambda: (json.dumps({"images": ["%%%not base64%%%"]}).encode(), JSON),
    "xml": lambda: (corpus_file("not-json.xml"), {"content-type": "application/xml"}),
    "invalid-utf8-json": lambda: (b'{"images": ["\xff\xfe"]}', JSON),
    "huge-integer-json": lambda: (b'{"images": [' + b"9" * 5000 + b"]}", JSON),
    "huge-float-json": lambda: (b'{"images": [1e999999]}', JSON),
    "deeply-nested-json": lambda: (b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", JSON),
    "megabyte-of-integers-json": lambda: (
        b'{"images": [' + b",".join([b"1"] * 500_000) + b"]}",
        JSON,
    ),
}


@pytest.mark.parametrize("case", sorted(POSE_BODIES))
def test_pose_service_refuses(pose: TestClient, case: str) -> None:
    body, headers = POSE_BODIES[case]()
    assert_clear_refusal(pose.post(POSE_URL, content=body, headers=headers))


AUDIO_BODIES: dict[str, Callable[[], tuple[bytes, dict[str, str]]]] = {
    "absurd-header-wav": lambda: one_part("audio", corpus_file("absurd-header.wav")),
    "oversized-chunk-wav": lambda: one_part("audio", corpus_file("oversized-chunk.wav")),
    "truncated-wav": lambda: one_part("audio", encode(tone(1.0))[:200]),
    "text-named-png": lambda: one_part("audio", corpus_file("text-as-image.png")),
    "thousands-of-parts": lambda: many_parts("audio", 5000, b"x"),
    "json-instead-of-multipart": lambda: (b'{"audio": "x"}', JSON),
    "nul-bytes-clip": lambda: one_part("audio", b"\x00" * 4096),
}


@pytest.mark.parametrize("case", sorted(AUDIO_BODIES))
def test_audio_service_refuses(audio: TestClient, case: str) -> None:
    body, headers = AUDIO_BODIES[case]()
    assert_clear_refusal(audio.post(AUDIO_URL, content=body, headers=headers))
