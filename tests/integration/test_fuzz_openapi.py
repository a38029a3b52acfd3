"""Schemathesis against the OpenAPI document of every service and of the gateway.

Each app runs with a tiny real model behind a real uvicorn server (so lifespan loading and
the body-size middleware are exercised), and every generated request must get a documented
status code with a body and headers that match the document, never a 5xx. Cases are
derandomised, so a CI failure reproduces locally with the same inputs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from fastapi import FastAPI

from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from services.audio.api import build_app as build_audio_app
from services.audio.settings import AudioSettings
from services.pose.api import build_app as build_pose_app
from services.pose.settings import PoseSettings
from services.text.api import build_app as build_text_app
from services.text.settings import TextSettings
from tests.support.audio_clips import build_tiny_call_model
from tests.support.fuzzing import derandomised
from tests.support.in_thread_servers import serving
from tests.support.pose_images import build_tiny_vit

pytestmark = pytest.mark.integration

# Per operation with inputs (operations without any have a single case), so each app gets
# several hundred cases and the gateway thousands. Figures are in tests/README.md.
CASES_PER_OPERATION = 300

FUZZ_SETTINGS = derandomised(CASES_PER_OPERATION)


def wait_until_ready(url: str) -> None:
    """Fuzzing a loading model would only ever see 503s."""
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(600):
            if client.get("/health/ready").status_code == 200:
                return
            time.sleep(0.05)
    raise RuntimeError(f"{url} never became ready")


def gateway_settings(text_url: str, pose_url: str, audio_url: str) -> GatewaySettings:
    return GatewaySettings(
        upstreams={"sentiment": [text_url], "pose": [pose_url], "audio": [audio_url]},
        task_kinds={"sentiment": "text", "pose": "image", "audio": "audio"},
    )


@pytest.fixture(scope="module")
def text_url(tiny_model_dir: Path) -> Iterator[str]:
    app = build_text_app(TextSettings(task="sentiment", model_uri=str(tiny_model_dir)))
    with serving(app) as url:
        wait_until_ready(url)
        yield url


@pytest.fixture(scope="module")
def pose_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model_dir = build_tiny_vit(tmp_path_factory.mktemp("fuzz-vit"))
    app = build_pose_app(PoseSettings(task="pose", model_uri=str(model_dir)))
    with serving(app) as url:
        wait_until_ready(url)
        yield url


@pytest.fixture(scope="module")
def audio_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model_dir = build_tiny_call_model(tmp_path_factory.mktemp("fuzz-call"))
    app = build_audio_app(AudioSettings(model_uri=str(model_dir), asr_enabled=False))
    with serving(app) as url:
        wait_until_ready(url)
        yield url


@pytest.fixture(scope="module")
def gateway_url(text_url: str, pose_url: str, audio_url: str) -> Iterator[str]:
    with serving(create_gateway(gateway_settings(text_url, pose_url, audio_url))) as url:
        wait_until_ready(url)
        yield url


# A schema cannot say that uploaded bytes must decode as an image or a clip, nor state every
# size limit or allow-list, so a schema-valid request may still get a documented refusal.
CHECKS_CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": [
                    "2xx",
                    "400",
                    "401",
                    "403",
                    "404",
                    "409",
                    "413",
                    "415",
                    "422",
                    "429",
                ]
            },
            # A schema-violating request may also break a size limit (five clips where four
            # are allowed): refusing it with 413 is a rejection too.
            "negative_data_rejection": {
                "expected-statuses": [
                    "400",
                    "401",
                    "403",
                    "404",
                    "405",
                    "406",
                    "409",
                    "413",
                    "415",
                    "422",
                    "428",
                    "429",
                    "5xx",
                ]
            },
        }
    }
)


def document_of(app: FastAPI) -> schemathesis.BaseSchema:
    """The app's own OpenAPI document; building it needs no model and no upstream."""
    return schemathesis.openapi.from_dict(app.openapi(), config=CHECKS_CONFIG)


# Placeholder URIs and URLs: only the documents are read at import, the fixtures serve.
text_api = document_of(build_text_app(TextSettings(task="sentiment", model_uri="unused")))
pose_api = document_of(build_pose_app(PoseSettings(task="pose", model_uri="unused")))
audio_api = document_of(build_audio_app(AudioSettings(model_uri="unused", asr_enabled=False)))
gateway_api = document_of(create_gateway(gateway_settings("http://a", "http://b", "http://c")))


@text_api.parametrize()
@FUZZ_SETTINGS
def test_text_service_conforms(case: schemathesis.Case, text_url: str) -> None:
    case.call_and_validate(base_url=text_url)


@pose_api.parametrize()
@FUZZ_SETTINGS
def test_pose_service_conforms(case: schemathesis.Case, pose_url: str) -> None:
    case.call_and_validate(base_url=pose_url)


@audio_api.parametrize()
@FUZZ_SETTINGS
def test_audio_service_conforms(case: schemathesis.Case, audio_url: str) -> None:
    case.call_and_validate(base_url=audio_url)


@gateway_api.parametrize()
@FUZZ_SETTINGS
def test_gateway_conforms(case: schemathesis.Case, gateway_url: str) -> None:
    case.call_and_validate(base_url=gateway_url)
