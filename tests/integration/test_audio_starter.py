"""The starter emergency-call model served for real: espeak-ng speech the model never heard,
calm or shouted over a siren, Whisper ASR, both classifiers, fusion; clips read from a real
S3-compatible server."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient

from services.artifacts.manifest import read_manifest
from services.audio.api import build_app
from services.audio.settings import AudioSettings
from services.audio.starter.recipe import build_audio_starter
from services.text.starter.emergency_transcripts import TRANSCRIPTS_FILE
from services.text.training import normalise
from tests.support.audio_clips import encode, spoken_wav, tone, urgent_wav
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


@pytest.fixture(scope="module")
def client_without_asr(starter_dir: Path) -> Iterator[TestClient]:
    with TestClient(build_app(AudioSettings(model_uri=str(starter_dir), asr_enabled=False))) as c:
        wait_ready(c, timeout=120)
        yield c


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
    # The caller sounds calm, but the words name the emergency: the words win.
    assert clip["audio"][0]["label"] == "calm"
    assert body["predictions"][0][0]["label"] == "theft"


@pytest.mark.parametrize("voice", ["en-us", "en-gb+f3"])
def test_without_words_a_shouted_call_over_a_siren_is_an_emergency(
    client_without_asr: TestClient, voice: str
) -> None:
    body = classify(client_without_asr, urgent_wav(PIZZA, voice=voice))
    clip = body["clips"][0]
    assert clip["transcript_source"] == "none"
    assert clip["text"] is None
    assert clip["audio"][0]["label"] == "urgent"
    ranked = body["predictions"][0]
    assert ranked[0]["label"] != "regular", body
    assert {s["label"] for s in ranked} == {
        "regular",
        "help",
        "robbery",
        "sexual",
        "theft",
        "violence",
    }


@pytest.mark.parametrize("voice", ["en-us", "en-gb+f3"])
def test_without_words_a_calm_call_is_regular(client_without_asr: TestClient, voice: str) -> None:
    body = classify(client_without_asr, spoken_wav(BREAK_IN, voice=voice))
    assert body["clips"][0]["audio"][0]["label"] == "calm"
    assert body["predictions"][0][0]["label"] == "regular", body


def test_the_build_reports_its_heldout_figures(starter_dir: Path) -> None:
    manifest = read_manifest(starter_dir)
    assert manifest is not None
    metrics = manifest.metrics
    assert metrics["heldout_audio_labels"] == ["calm", "urgent"]
    assert metrics["heldout_audio_accuracy"] >= 0.85
    assert metrics["heldout_accuracy"] >= metrics["heldout_text_accuracy"] - 0.02
    # Without words, the sound alone separates ordinary calls from emergencies.
    assert metrics["heldout_no_transcript_emergency_balanced_accuracy"] > 0.7
    assert metrics["asr_weights_fitted_on"]["fitted"] is True


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
        # Outside the allow-list: the same answer as a missing object, so a caller cannot
        # tell which objects exist where it may not read.
        (f"s3://{BUCKET}/private/call.wav", 404),
        ("s3://another-bucket/incoming/call.wav", 404),
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
