"""The starter emergency-call model served for real: espeak-ng speech the model never heard,
Whisper ASR, both classifiers, fusion; clips read from a real S3-compatible server."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient

from services.audio.api import build_app
from services.audio.settings import AudioSettings
from services.audio.starter.recipe import build_audio_starter
from services.text.starter.emergency_transcripts import TRANSCRIPTS_FILE
from services.text.training import normalise
from tests.support.audio_clips import encode, spoken_wav, tone
from tests.support.service_client import wait_ready

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
URL = "/v1/audio/predict"
BREAK_IN = "help, someone is breaking into my house"
PIZZA = "I would like to order a pizza for tonight"
BUCKET = "calls"


@pytest.fixture(scope="module")
def starter_dir() -> Path:
    # `make models` builds it; rebuilt here only when missing or out of date.
    return build_audio_starter(REPO / ".mtc" / "models" / "audio").out


@pytest.fixture(scope="module")
def s3_bucket(s3_endpoint: str) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        client = boto3.client("s3", endpoint_url=s3_endpoint)
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture(scope="module")
def client(starter_dir: Path, s3_endpoint: str, s3_bucket: Any) -> Iterator[TestClient]:
    settings = AudioSettings(
        model_uri=str(starter_dir),
        s3_endpoint_url=s3_endpoint,
        s3_input_allowlist=[f"{BUCKET}/incoming/"],
    )
    with TestClient(build_app(settings)) as test_client:
        wait_ready(test_client, timeout=120)
        yield test_client


def classify(client: TestClient, clip: bytes, **data: str) -> dict[str, Any]:
    response = client.post(URL, files={"audio": ("call.wav", clip)}, data=data or None)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_acceptance_sentences_are_not_training_data() -> None:
    with TRANSCRIPTS_FILE.open(encoding="utf-8") as handle:
        written = {normalise(row["text"]).lower() for row in csv.DictReader(handle)}
    assert normalise(BREAK_IN).lower() not in written
    assert normalise(PIZZA).lower() not in written


@pytest.mark.parametrize("voice", ["en-us", "en-gb+f3"])
def test_unheard_break_in_call_is_an_emergency(client: TestClient, voice: str) -> None:
    body = classify(client, spoken_wav(BREAK_IN, voice=voice))
    clip = body["clips"][0]
    assert clip["transcript_source"] == "asr"
    assert "breaking into my house" in clip["transcript"].lower()
    assert body["predictions"][0][0]["label"] != "regular", body


@pytest.mark.parametrize("voice", ["en-us", "en-gb+f3"])
def test_unheard_pizza_order_is_regular(client: TestClient, voice: str) -> None:
    body = classify(client, spoken_wav(PIZZA, voice=voice))
    assert "pizza" in body["clips"][0]["transcript"].lower()
    assert body["predictions"][0][0]["label"] == "regular", body


def test_a_sent_transcript_is_used_instead_of_asr(client: TestClient) -> None:
    body = classify(client, spoken_wav(PIZZA), transcript="my car was stolen from the driveway")
    clip = body["clips"][0]
    assert clip["transcript_source"] == "request"
    assert clip["text"][0]["label"] == "theft"


def test_every_format_is_read(client: TestClient) -> None:
    from tests.support.audio_clips import reencode

    wav = spoken_wav(BREAK_IN)
    for file_format in ("FLAC", "OGG", "MP3"):
        body = classify(client, reencode(wav, file_format))
        assert "house" in body["clips"][0]["transcript"].lower(), file_format


def test_clip_from_allowed_s3_prefix(client: TestClient, s3_bucket: Any) -> None:
    s3_bucket.put_object(Bucket=BUCKET, Key="incoming/2026/call-1.wav", Body=spoken_wav(PIZZA))
    response = client.post(
        "/v1/audio/predict-s3", json={"s3_uri": f"s3://{BUCKET}/incoming/2026/call-1.wav"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0][0]["label"] == "regular"


@pytest.mark.parametrize(
    ("uri", "status"),
    [
        (f"s3://{BUCKET}/private/call.wav", 403),
        ("s3://another-bucket/incoming/call.wav", 403),
        (f"s3://{BUCKET}/incoming/../private/call.wav", 403),
        (f"s3://{BUCKET}/incoming/missing.wav", 404),
        ("https://example.com/call.wav", 400),
    ],
)
def test_s3_refusals(client: TestClient, s3_bucket: Any, uri: str, status: int) -> None:
    s3_bucket.put_object(Bucket=BUCKET, Key="private/call.wav", Body=spoken_wav(PIZZA))
    response = client.post("/v1/audio/predict-s3", json={"s3_uri": uri})
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    # Nothing about the endpoint or credentials leaks into the error.
    assert "127.0.0.1" not in response.text


def test_s3_object_over_the_byte_limit_is_413(client: TestClient, s3_bucket: Any) -> None:
    s3_bucket.put_object(Bucket=BUCKET, Key="incoming/huge.wav", Body=bytes(11 * 1024 * 1024))
    response = client.post(
        "/v1/audio/predict-s3", json={"s3_uri": f"s3://{BUCKET}/incoming/huge.wav"}
    )
    assert response.status_code == 413


def test_bad_inputs_answer_4xx_and_the_service_keeps_serving(client: TestClient) -> None:
    whole = encode(tone(2.0))
    bad = {
        "not audio": (b"<html>not a recording</html>" * 20, 415),
        "truncated WAV": (whole[: len(whole) // 2], 400),
        "0 bytes": (b"", 400),
        "31 s": (encode(tone(31.0, rate=8_000), rate=8_000), 413),
        "11 MB": (b"RIFF" + bytes(11 * 1024 * 1024), 413),
    }
    for name, (data, status) in bad.items():
        response = client.post(URL, files={"audio": ("x.wav", data)})
        assert response.status_code == status, (name, response.text)
    assert classify(client, spoken_wav(PIZZA))["predictions"][0][0]["label"] == "regular"
