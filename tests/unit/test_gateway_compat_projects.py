"""The emergency-call project's routes (`POST /predict`, `POST /predict_s3`, `GET /upload`)
and the async tone project's `POST /api/predict/` without jobs, against fake services over
real HTTP: each request sent exactly as those projects' clients sent it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.api_keys import hash_api_key
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.web_page import CONTENT_SECURITY_POLICY
from services.jobs.settings import JobsSettings
from tests.support.fake_services import FakeAudioService, FakeTextService
from tests.support.in_thread_servers import served_gateway, serving

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32)
KEY = "mtc_test_call_centre_key"


@pytest.fixture(scope="module")
def audio_service() -> FakeAudioService:
    return FakeAudioService()


@pytest.fixture(scope="module")
def gateway(audio_service: FakeAudioService) -> Iterator[httpx.Client]:
    sentiment = FakeTextService("sentiment", labels=("negative", "positive"), scores=(0.2, 0.8))
    with (
        serving(audio_service.create_app()) as audio_url,
        serving(sentiment.create_app()) as sentiment_url,
    ):
        settings = GatewaySettings(
            upstreams={"audio": audio_url, "sentiment": sentiment_url},
            task_kinds={"audio": "audio"},
            task_max_body_bytes={"audio": 64 * 1024},
        )
        with served_gateway(settings) as client:
            yield client


# --------------------------------------------------------------------------- POST /predict


def test_predict_takes_the_wav_in_audio_file_and_answers_label_and_probabilities(
    gateway: httpx.Client, audio_service: FakeAudioService
) -> None:
    # What the project's clients sent: `requests.post(url, files={"audio_file": f})`.
    response = gateway.post("/predict", files={"audio_file": ("call-17.wav", WAV, "audio/wav")})

    assert response.status_code == 200, response.text
    assert response.json() == {
        "filename": "call-17.wav",
        "label": "emergency",
        "probabilities": {"emergency": 0.8, "routine": 0.2},
    }
    sent = audio_service.received[-1]
    assert (sent.filename, sent.data, sent.transcript) == ("call-17.wav", WAV, None)


def test_predict_passes_a_transcript_on(
    gateway: httpx.Client, audio_service: FakeAudioService
) -> None:
    response = gateway.post(
        "/predict",
        files={"audio_file": ("call.wav", WAV)},
        data={"transcript": "불이 났어요, 빨리 와 주세요"},
    )

    assert response.status_code == 200, response.text
    assert audio_service.received[-1].transcript == "불이 났어요, 빨리 와 주세요"


def test_a_file_name_cannot_break_the_forwarded_body(
    gateway: httpx.Client, audio_service: FakeAudioService
) -> None:
    response = gateway.post("/predict", files={"audio_file": ('a"b\r\nc.wav', WAV)})

    assert response.status_code == 200, response.text
    assert audio_service.received[-1].data == WAV


def test_a_korean_file_name_reaches_the_service_as_sent(
    gateway: httpx.Client, audio_service: FakeAudioService
) -> None:
    response = gateway.post("/predict", files={"audio_file": ("신고-0042.wav", WAV)})

    assert response.status_code == 200, response.text
    assert response.json()["filename"] == "신고-0042.wav"
    assert audio_service.received[-1].filename == "신고-0042.wav"


def test_predict_without_audio_file_is_fastapis_422(gateway: httpx.Client) -> None:
    response = gateway.post("/predict", files={"audio": ("call.wav", WAV)})

    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert (error["type"], error["loc"]) == ("missing", ["body", "audio_file"])


def test_predict_refuses_a_body_over_the_audio_tasks_limit(gateway: httpx.Client) -> None:
    response = gateway.post("/predict", files={"audio_file": ("long.wav", bytes(70 * 1024))})

    assert response.status_code == 413
    assert response.json()["error_type"] == "body_too_large"


# --------------------------------------------------------------------------- POST /predict_s3


def test_predict_s3_takes_json(gateway: httpx.Client, audio_service: FakeAudioService) -> None:
    uri = "s3://calls/incoming/call-0042.wav"

    response = gateway.post("/predict_s3", json={"s3_uri": uri})

    assert response.status_code == 200, response.text
    assert response.json() == {
        "s3_uri": uri,
        "label": "emergency",
        "probabilities": {"emergency": 0.8, "routine": 0.2},
    }
    assert audio_service.received_s3[-1].body == {"s3_uri": uri}


def test_predict_s3_takes_json_without_content_type(gateway: httpx.Client) -> None:
    response = gateway.post(
        "/predict_s3", content=b'{"s3_uri": "s3://calls/incoming/call-0042.wav"}'
    )

    assert "content-type" not in response.request.headers
    assert response.status_code == 200, response.text


def test_predict_s3_takes_the_upload_pages_form(
    gateway: httpx.Client, audio_service: FakeAudioService
) -> None:
    uri = "s3://calls/incoming/call-0042.wav"

    form = gateway.post("/predict_s3", data={"s3_uri": uri, "transcript": ""})
    multipart = gateway.post(
        "/predict_s3", data={"s3_uri": uri, "transcript": "help"}, files={"unused": b""}
    )

    assert form.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form.status_code == 200, form.text
    assert form.json()["s3_uri"] == uri
    assert multipart.status_code == 200, multipart.text
    assert audio_service.received_s3[-2].body == {"s3_uri": uri}
    assert audio_service.received_s3[-1].body == {"s3_uri": uri, "transcript": "help"}


@pytest.mark.parametrize(
    "send",
    [
        lambda client: client.post("/predict_s3", json={}),
        lambda client: client.post("/predict_s3", data={"transcript": "x"}),
    ],
    ids=["json", "form"],
)
def test_predict_s3_without_a_uri_is_fastapis_422(gateway: httpx.Client, send: object) -> None:
    response = send(gateway)  # type: ignore[operator]

    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert (error["type"], error["loc"]) == ("missing", ["body", "s3_uri"])


def test_predict_s3_relays_the_services_refusal(gateway: httpx.Client) -> None:
    response = gateway.post("/predict_s3", json={"s3_uri": "s3://other/call.wav"})

    assert response.status_code == 404
    assert response.json() == {
        "detail": "s3://other/call.wav: no such object",
        "error_type": "input_not_found",
    }


def test_predict_s3_refuses_a_large_form(gateway: httpx.Client) -> None:
    response = gateway.post("/predict_s3", data={"s3_uri": "s3://calls/" + "k" * 70_000})

    assert response.status_code == 413
    assert response.json()["error_type"] == "body_too_large"


def test_predict_s3_sends_the_keys_s3_scope(
    audio_service: FakeAudioService, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"call-centre {hash_api_key(KEY)} s3=calls/incoming/centre-a\n")
    with serving(audio_service.create_app()) as audio_url:
        settings = GatewaySettings(
            upstreams={"audio": audio_url}, task_kinds={"audio": "audio"}, api_keys_file=keys
        )
        with served_gateway(settings) as client:
            refused = client.post("/predict_s3", json={"s3_uri": "s3://calls/x.wav"})
            answered = client.post(
                "/predict_s3",
                data={"s3_uri": "s3://calls/incoming/centre-a/x.wav"},
                # A client's own scope header never reaches the service.
                headers={"x-api-key": KEY, "x-mtc-s3-scope": '{"tenant": null}'},
            )

    assert refused.status_code == 401
    assert answered.status_code == 200, answered.text
    scope = audio_service.received_s3[-1].s3_scope
    assert scope is not None
    assert json.loads(scope) == {"tenant": "call-centre", "locations": ["calls/incoming/centre-a"]}


# --------------------------------------------------------------------------- GET /upload


def test_upload_page_is_served_with_the_web_pages_policy(gateway: httpx.Client) -> None:
    page = gateway.get("/upload")
    script = gateway.get("/ui/upload.js")

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert 'name="audio_file"' in page.text
    assert 'name="s3_uri"' in page.text
    assert '<script src="/ui/upload.js"' in page.text
    assert script.status_code == 200
    assert '"/predict"' in script.text
    assert '"/predict_s3"' in script.text


def test_routes_and_page_are_left_out_without_an_audio_task() -> None:
    sentiment = FakeTextService("sentiment")
    with (
        serving(sentiment.create_app()) as url,
        served_gateway(GatewaySettings(upstreams={"sentiment": url})) as client,
    ):
        page = client.get("/upload")
        predict = client.post("/predict", files={"audio_file": ("a.wav", WAV)})
        paths = client.get("/openapi.json").json()["paths"]

    assert page.status_code == 404
    assert predict.status_code == 404
    assert "/predict" not in paths


def test_the_routes_are_in_the_openapi_document(gateway: httpx.Client) -> None:
    paths = gateway.get("/openapi.json").json()["paths"]

    upload = paths["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    s3_body = paths["/predict_s3"]["post"]["requestBody"]["content"]
    assert upload["schema"]["$ref"].endswith("compat_emergency_call_predict")
    assert set(s3_body) == {"application/json", "application/x-www-form-urlencoded"}
    assert "404" in paths["/predict_s3"]["post"]["responses"]
    # Without batch jobs the async route answers 503 and is left out, as `/v1/jobs` is.
    assert "/api/predict/" not in paths


def test_the_async_route_is_documented_when_jobs_are_configured() -> None:
    upstreams = {"sentiment": "http://127.0.0.1:9"}
    jobs = JobsSettings(broker_url="redis://127.0.0.1:9/0", upstreams=upstreams)

    paths = create_app(GatewaySettings(upstreams=upstreams), jobs).openapi()["paths"]

    operation = paths["/api/predict/"]["post"]
    assert {"200", "202", "413", "429", "502", "503"} <= set(operation["responses"])
    assert operation["responses"]["202"]["headers"]["Location"]


# --------------------------------------------------------------------------- POST /api/predict/


def test_async_predict_is_503_without_jobs(gateway: httpx.Client) -> None:
    response = gateway.post("/api/predict/", json={"text": "great service"})

    assert response.status_code == 503
    assert response.json()["error_type"] == "jobs_not_configured"
