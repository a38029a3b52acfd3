"""The audio service's HTTP contract, with a tiny randomly initialised call model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.audio import api as audio_api
from services.audio.api import build_app
from services.audio.decoding import DecodedAudio, decode_audio, decoded_bytes
from services.audio.models.emergency_call import CallClip, EmergencyCallModel, FusedPrediction
from services.audio.models.urgency import URGENCY_LABELS
from services.audio.settings import AudioSettings
from services.core.model import LabelScore
from tests.support.audio_clips import (
    CALL_LABELS,
    build_tiny_call_model,
    encode,
    reencode,
    tiny_fusion_rule,
    tone,
)
from tests.support.service_client import metric, wait_ready

URL = "/v1/audio/predict"
TONE = encode(tone(1.0))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_call_model(tmp_path_factory.mktemp("tiny-call"))


def settings_for(model_dir: Path, **overrides: Any) -> AudioSettings:
    values: dict[str, Any] = {"model_uri": str(model_dir), "asr_enabled": False}
    values.update(overrides)
    return AudioSettings(**values)


@pytest.fixture
def client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(build_app(settings_for(model_dir))) as test_client:
        wait_ready(test_client)
        yield test_client


def upload(*clips: bytes, transcripts: Sequence[str] = ()) -> dict[str, Any]:
    # The declared part type is deliberately wrong: the service must read the content.
    return {
        "files": [("audio", (f"clip{i}.bin", data, "text/plain")) for i, data in enumerate(clips)],
        "data": {"transcript": list(transcripts)} if transcripts else None,
    }


def assert_ranked(scores: list[dict[str, Any]], labels: Sequence[str] = CALL_LABELS) -> None:
    assert sorted(s["label"] for s in scores) == sorted(labels)
    values = [s["score"] for s in scores]
    assert values == sorted(values, reverse=True)
    assert sum(values) == pytest.approx(1.0, abs=1e-4)


def test_clip_with_transcript_gets_both_branches_and_fusion(client: TestClient) -> None:
    response = client.post(URL, **upload(TONE, transcripts=["please send help"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "tiny-call-model", "version": "0.0.1"}
    assert len(body["predictions"]) == 1
    assert_ranked(body["predictions"][0])
    clip = body["clips"][0]
    assert_ranked(clip["audio"], URGENCY_LABELS)
    assert_ranked(clip["text"])
    assert clip["transcript"] == "please send help"
    assert clip["transcript_source"] == "request"
    assert clip["duration_seconds"] == pytest.approx(1.0, abs=0.01)
    assert float(response.headers["x-inference-time"]) >= 0


def urgency_of(clip: dict[str, Any]) -> np.ndarray:
    scores = {s["label"]: s["score"] for s in clip["audio"]}
    return np.array([[scores[label] for label in URGENCY_LABELS]])


def test_fused_scores_follow_the_manifest_rule(client: TestClient) -> None:
    body = client.post(URL, **upload(TONE, transcripts=["a fight outside"])).json()
    clip = body["clips"][0]
    text = {s["label"]: s["score"] for s in clip["text"]}
    expected = tiny_fusion_rule().fuse(
        urgency_of(clip), np.array([[text[label] for label in CALL_LABELS]])
    )[0]
    for entry in body["predictions"][0]:
        assert entry["score"] == pytest.approx(
            expected[CALL_LABELS.index(entry["label"])], rel=1e-4
        )


def test_without_transcript_and_asr_off_the_sound_decides(client: TestClient) -> None:
    body = client.post(URL, **upload(TONE)).json()
    clip = body["clips"][0]
    assert clip["text"] is None
    assert clip["transcript"] is None
    assert clip["transcript_source"] == "none"
    assert_ranked(clip["audio"], URGENCY_LABELS)
    expected = tiny_fusion_rule().fuse(urgency_of(clip), None)[0]
    fused = {s["label"]: s["score"] for s in body["predictions"][0]}
    for label, score in zip(CALL_LABELS, expected, strict=True):
        assert fused[label] == pytest.approx(score, rel=1e-4)
    # The emergency labels share the sound's evidence equally (uniform prior).
    emergencies = {round(fused[label], 6) for label in CALL_LABELS if label != "regular"}
    assert len(emergencies) == 1


def test_fused_prediction_round_trips_through_the_cache_encoding() -> None:
    prediction = FusedPrediction(
        [LabelScore("help", 0.7), LabelScore("regular", 0.3)],
        audio=[LabelScore("urgent", 0.9), LabelScore("calm", 0.1)],
        text=[LabelScore("help", 0.6), LabelScore("regular", 0.4)],
        transcript="my father collapsed",
        transcript_source="asr",
        duration_seconds=2.5,
    )
    model = EmergencyCallModel(asr_enabled=False)
    decoded = model.decode_prediction(model.encode_prediction(prediction))
    assert decoded == prediction


def test_several_clips_answer_in_order(client: TestClient) -> None:
    short, longer = encode(tone(0.5)), encode(tone(2.0, frequency=200))
    body = client.post(URL, **upload(short, longer, transcripts=["one", "two"])).json()
    assert [c["transcript"] for c in body["clips"]] == ["one", "two"]
    assert [round(c["duration_seconds"]) for c in body["clips"]] == [0, 2]


def test_formats_with_the_same_sound_share_the_cache(client: TestClient) -> None:
    wav = encode(tone(1.0, frequency=300))
    first = client.post(URL, **upload(wav, transcripts=["x"]))
    hits_before = metric(client, "mtc_cache_lookups_total", task="audio", result="hit")
    again = client.post(URL, **upload(wav, transcripts=["x"]))
    assert metric(client, "mtc_cache_lookups_total", task="audio", result="hit") == hits_before + 1
    assert again.json() == first.json()
    # Same sound, different transcript: a different answer is possible, so no hit.
    client.post(URL, **upload(wav, transcripts=["y"]))
    assert metric(client, "mtc_cache_lookups_total", task="audio", result="hit") == hits_before + 1
    # FLAC is lossless: the same samples, so the same cache entry.
    client.post(URL, **upload(reencode(wav, "FLAC"), transcripts=["x"]))
    assert metric(client, "mtc_cache_lookups_total", task="audio", result="hit") == hits_before + 2


@pytest.mark.parametrize(
    ("clip", "status", "error_type", "fragment"),
    [
        (b"just some text, not a recording" * 4, 415, "unsupported_media_type", "audio[0]"),
        (b"", 400, "invalid_input", "empty"),
        (encode(tone(2.0))[:20_000], 400, "invalid_input", "truncated WAV"),
        (encode(tone(31.0, rate=8_000), rate=8_000), 413, "item_too_large", "30 s"),
        (encode(np.zeros(16_000, dtype=np.float32)), 422, "unusable_content", "silent"),
    ],
)
def test_bad_clips_get_clear_errors_and_the_service_keeps_serving(
    client: TestClient, clip: bytes, status: int, error_type: str, fragment: str
) -> None:
    response = client.post(URL, **upload(clip))
    assert response.status_code == status, response.text
    assert response.json()["error_type"] == error_type
    assert fragment in response.json()["detail"]
    assert client.post(URL, **upload(TONE)).status_code == 200


def test_eleven_megabytes_is_413(client: TestClient) -> None:
    response = client.post(URL, **upload(b"RIFF" + bytes(11 * 1024 * 1024)))
    assert response.status_code == 413
    assert response.json()["error_type"] in ("body_too_large", "item_too_large")


def test_no_audio_part_is_422(client: TestClient) -> None:
    response = client.post(URL, data={"transcript": "hello"}, files={"other": ("x", b"1")})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "audio"]


def test_json_body_is_415_pointing_to_the_s3_route(client: TestClient) -> None:
    response = client.post(URL, json={"audio": "x"})
    assert response.status_code == 415
    assert "predict-s3" in response.json()["detail"]


def test_transcript_count_must_match(client: TestClient) -> None:
    response = client.post(URL, **upload(TONE, TONE, transcripts=["only one"]))
    assert response.status_code == 400
    assert "one per clip" in response.json()["detail"]


def test_too_many_clips_is_413(model_dir: Path) -> None:
    with TestClient(build_app(settings_for(model_dir, max_clips_per_request=2))) as client:
        wait_ready(client)
        response = client.post(URL, **upload(TONE, TONE, TONE))
        assert response.status_code == 413
        assert "MTC_MAX_CLIPS_PER_REQUEST" in response.json()["detail"]


def test_long_transcript_is_413(model_dir: Path) -> None:
    with TestClient(build_app(settings_for(model_dir, max_transcript_chars=10))) as client:
        wait_ready(client)
        response = client.post(URL, **upload(TONE, transcripts=["x" * 11]))
        assert response.status_code == 413
        assert "MTC_MAX_TRANSCRIPT_CHARS" in response.json()["detail"]


def test_models_lists_labels_limits_and_asr(client: TestClient) -> None:
    (entry,) = client.get("/v1/models").json()["models"]
    assert entry["task"] == "audio"
    assert sorted(entry["labels"]) == sorted(CALL_LABELS)
    assert entry["limits"]["max_audio_seconds"] == 30.0
    assert entry["limits"]["asr_enabled"] is False


def test_s3_route_is_closed_without_an_allowlist(client: TestClient) -> None:
    response = client.post("/v1/audio/predict-s3", json={"s3_uri": "s3://calls/a.wav"})
    assert response.status_code == 403
    assert "MTC_S3_INPUT_ALLOWLIST" in response.json()["detail"]


def test_openapi_documents_both_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    predict = paths[URL]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert {"400", "413", "415", "422", "429", "503", "504"} <= set(predict["responses"])
    assert {"403", "404"} <= set(paths["/v1/audio/predict-s3"]["post"]["responses"])


class GatedCallModel(EmergencyCallModel):
    """The tiny model, held inside `predict` until released (queue tests)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.release = threading.Event()
        self.entered = threading.Event()

    def predict(self, batch: Sequence[CallClip]) -> list[FusedPrediction]:
        self.entered.set()
        self.release.wait(timeout=30)
        return super().predict(batch)


def test_full_queue_answers_429_and_accepted_work_completes(model_dir: Path) -> None:
    settings = settings_for(model_dir, max_queued_items=1, max_batch_size=1, cache_ttl_seconds=0)
    model = GatedCallModel(asr_enabled=False)
    with TestClient(build_app(settings, model)) as client:
        wait_ready(client)
        results: dict[str, int] = {}

        def send(name: str, clip: bytes) -> None:
            results[name] = client.post(URL, **upload(clip)).status_code

        running = threading.Thread(target=send, args=("running", TONE))
        running.start()
        assert model.entered.wait(timeout=30)
        queued = threading.Thread(target=send, args=("queued", encode(tone(1.0, frequency=500))))
        queued.start()
        deadline = threading.Event()
        while client.app.state.dataplane.queue.depth < 1 and not deadline.wait(0.01):
            pass
        refused = client.post(URL, **upload(encode(tone(1.0, frequency=700))))
        assert refused.status_code == 429
        assert "Retry-After" in refused.headers
        model.release.set()
        running.join(timeout=30)
        queued.join(timeout=30)
        assert results == {"running": 200, "queued": 200}


def test_decoded_bytes_limit_refuses_from_the_header_naming_the_setting(model_dir: Path) -> None:
    limit = decoded_bytes(1.0, 2, 48_000)
    stereo = np.stack([tone(1.0, rate=48_000)] * 2, axis=1)
    at_limit = encode(stereo, rate=48_000, file_format="FLAC")
    over = encode(np.concatenate([stereo, stereo[:1]]), rate=48_000, file_format="FLAC")
    settings = settings_for(model_dir, max_audio_decoded_bytes=limit)
    with TestClient(build_app(settings)) as client:
        wait_ready(client)
        accepted = client.post(URL, **upload(at_limit))
        refused = client.post(URL, **upload(at_limit, over))
        (entry,) = client.get("/v1/models").json()["models"]
    assert accepted.status_code == 200, accepted.text
    assert refused.status_code == 413
    assert refused.json()["error_type"] == "item_too_large"
    assert refused.json()["detail"].startswith("audio[1] (clip1.bin)")
    assert "MTC_MAX_AUDIO_DECODED_BYTES" in refused.json()["detail"]
    assert entry["limits"]["max_audio_decoded_bytes"] == limit


def test_the_default_decoded_bytes_limit_is_stereo_96_khz_for_the_longest_clip() -> None:
    assert AudioSettings().decoded_bytes_limit == 30 * 2 * 96_000 * 4
    assert AudioSettings(max_audio_seconds=60).decoded_bytes_limit == 60 * 2 * 96_000 * 4
    assert AudioSettings(max_audio_decoded_bytes=1_000_000).decoded_bytes_limit == 1_000_000


def test_clips_are_decoded_at_most_max_concurrent_decodes_at_once(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, most_at_once = [0], [0]
    lock = threading.Lock()

    def tracked_decode(*args: Any, **kwargs: Any) -> DecodedAudio:
        with lock:
            running[0] += 1
            most_at_once[0] = max(most_at_once[0], running[0])
        time.sleep(0.1)
        try:
            return decode_audio(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(audio_api, "decode_audio", tracked_decode)
    settings = settings_for(model_dir, max_concurrent_decodes=1, cache_ttl_seconds=0)
    with TestClient(build_app(settings)) as client, ThreadPoolExecutor(3) as pool:
        wait_ready(client)
        requests = [pool.submit(client.post, URL, **upload(TONE, TONE)) for _ in range(3)]
        statuses = [request.result().status_code for request in requests]
    assert statuses == [200, 200, 200]
    assert most_at_once[0] == 1
