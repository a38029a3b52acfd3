"""The pose service's HTTP contract, with a tiny randomly initialised ViT."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.pose import api as pose_api
from services.pose.api import build_app
from services.pose.images import DecodedImage, ImageLimits, decode_image
from services.pose.models.base import PosePrediction
from services.pose.models.hf_image_classifier import HfImageClassifier
from services.pose.settings import PoseSettings
from tests.support.pose_images import (
    TINY_VIT_LABELS,
    build_tiny_vit,
    image_bytes,
    png_claiming,
    truncated_jpeg,
)
from tests.support.service_client import metric, wait_ready

URL = "/v1/pose/predict"


@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random ViT image classifier directory (no manifest)."""
    return build_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


def settings_for(model_dir: Path, **overrides: Any) -> PoseSettings:
    return PoseSettings(task="pose", model_uri=str(model_dir), **overrides)


@pytest.fixture
def client(tiny_vit_dir: Path) -> Iterator[TestClient]:
    with TestClient(build_app(settings_for(tiny_vit_dir))) as test_client:
        wait_ready(test_client)
        yield test_client


def files(*images: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    # The declared part type is deliberately wrong: the service must not trust it.
    return [("image", (name, data, "application/octet-stream")) for name, data in images]


RED = image_bytes((64, 48), image_format="PNG", color=(220, 30, 30))
BLUE = image_bytes((40, 80), image_format="JPEG", color=(20, 40, 230))
GREEN = image_bytes((50, 50), image_format="WEBP", color=(20, 200, 40))


def assert_ranked(predictions: list[list[dict[str, Any]]]) -> None:
    for scores in predictions:
        assert {entry["label"] for entry in scores} == set(TINY_VIT_LABELS)
        values = [entry["score"] for entry in scores]
        assert values == sorted(values, reverse=True)
        assert sum(values) == pytest.approx(1.0, abs=1e-5)


def test_multipart_upload_of_several_formats(client: TestClient) -> None:
    response = client.post(URL, files=files(("red.png", RED), ("b.jpg", BLUE), ("g.webp", GREEN)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"].startswith("tiny-vit")
    assert body["model"]["version"].startswith("sha256-")
    assert len(body["predictions"]) == 3
    assert_ranked(body["predictions"])
    assert body["keypoints"] == [None, None, None]  # a ViT locates no landmarks
    assert "x-inference-time" in response.headers
    assert "x-queue-time" in response.headers


def test_base64_json_gives_the_same_answer_in_the_same_order(client: TestClient) -> None:
    uploaded = client.post(URL, files=files(("r.png", RED), ("b.jpg", BLUE))).json()
    encoded = [base64.b64encode(data).decode() for data in (RED, BLUE)]
    as_json = client.post(URL, json={"images": encoded})
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["predictions"] == uploaded["predictions"]
    reversed_order = client.post(URL, json={"images": encoded[::-1]}).json()
    assert reversed_order["predictions"] == uploaded["predictions"][::-1]


def test_json_without_content_type_and_data_urls_work(client: TestClient) -> None:
    encoded = base64.b64encode(GREEN).decode()
    body = f'{{"images": ["data:image/webp;base64,{encoded}"]}}'.encode()
    response = client.post(URL, content=body)
    assert response.status_code == 200, response.text
    assert_ranked(response.json()["predictions"])


def test_same_image_twice_runs_the_model_once(client: TestClient) -> None:
    before = metric(client, "mtc_items_inferred_total", task="pose")
    unique = image_bytes((33, 33), color=(1, 2, 3))
    first = client.post(URL, files=files(("a.png", unique), ("same-bytes.png", unique)))
    assert first.status_code == 200
    assert metric(client, "mtc_items_inferred_total", task="pose") == before + 1
    again = client.post(URL, json={"images": [base64.b64encode(unique).decode()]})
    assert again.json()["predictions"][0] == first.json()["predictions"][0]
    assert metric(client, "mtc_items_inferred_total", task="pose") == before + 1
    assert metric(client, "mtc_cache_lookups_total", task="pose", result="hit") >= 1


def test_bad_items_are_refused_naming_them_and_the_service_keeps_serving(
    client: TestClient,
) -> None:
    text_as_jpg = client.post(
        URL, files=files(("ok.png", RED), ("notes.jpg", b"meeting notes, not a photo\n"))
    )
    assert text_as_jpg.status_code == 415
    assert text_as_jpg.json()["error_type"] == "unsupported_media_type"
    assert "image[1] (notes.jpg)" in text_as_jpg.json()["detail"]

    truncated = client.post(
        URL, files=files(("ok.png", RED), ("b.png", BLUE), ("cut.jpg", truncated_jpeg()))
    )
    assert truncated.status_code == 400
    assert truncated.json()["error_type"] == "invalid_input"
    assert "image[2] (cut.jpg): truncated JPEG" in truncated.json()["detail"]

    dot = client.post(URL, files=files(("dot.png", image_bytes((1, 1)))))
    assert dot.status_code == 400
    assert "image[0] (dot.png): 1x1 is too small" in dot.json()["detail"]

    started = time.perf_counter()
    bomb = client.post(URL, files=files(("bomb.png", png_claiming(20_000, 20_000))))
    assert bomb.status_code == 413
    assert bomb.json()["error_type"] == "item_too_large"
    assert "image[0] (bomb.png)" in bomb.json()["detail"]
    assert time.perf_counter() - started < 2.0

    none = client.post(URL, data={"note": "no files here"}, files=[("other", ("x.png", RED))])
    assert none.status_code == 422
    assert none.json()["detail"][0]["loc"] == ["body", "image"]
    empty_json = client.post(URL, json={"images": []})
    assert empty_json.status_code == 422
    assert empty_json.json()["detail"][0]["type"] == "too_short"

    seventeen = client.post(URL, files=files(*[(f"{i}.png", RED) for i in range(17)]))
    assert seventeen.status_code == 413
    assert seventeen.json()["error_type"] == "batch_too_large"
    assert "MTC_MAX_IMAGES_PER_REQUEST" in seventeen.json()["detail"]
    assert client.post(URL, json={"images": ["x"] * 17}).status_code == 413

    good = client.post(URL, files=files(("red.png", RED)))
    assert good.status_code == 200
    assert metric(client, "mtc_requests_total", task="pose", status_class="4xx") >= 7


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"images": ["not base64 !!"]}, 400, "invalid_input"),
        ({"images": [base64.b64encode(b"plain text").decode()]}, 415, "unsupported_media_type"),
    ],
)
def test_bad_base64_items(
    client: TestClient, body: dict[str, Any], status: int, error: str
) -> None:
    response = client.post(URL, json=body)
    assert response.status_code == status
    assert response.json()["error_type"] == error
    assert response.json()["detail"].startswith("images[0]")


def test_json_shape_errors_are_fastapi_validation_errors(client: TestClient) -> None:
    wrong_type = client.post(URL, json={"images": [1]})
    assert wrong_type.status_code == 422
    assert wrong_type.json()["detail"][0]["loc"] == ["body", "images", 0]
    missing = client.post(URL, json={"pictures": []})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "images"]
    broken = client.post(URL, content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["type"] == "json_invalid"


def test_other_content_types_are_415(client: TestClient) -> None:
    response = client.post(URL, content=RED, headers={"content-type": "image/png"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]


def test_per_image_byte_limit(tiny_vit_dir: Path) -> None:
    big = image_bytes((400, 400), image_format="PNG")
    with TestClient(build_app(settings_for(tiny_vit_dir, max_image_bytes=1024))) as small:
        wait_ready(small)
        response = small.post(
            URL, files=files(("small.png", image_bytes((20, 20))), ("big.png", big))
        )
    assert response.status_code == 413
    assert response.json()["error_type"] == "item_too_large"
    assert "image[1] (big.png)" in response.json()["detail"]


def test_models_route_and_openapi(client: TestClient) -> None:
    model = client.get("/v1/models").json()["models"][0]
    assert model["task"] == "pose"
    assert model["labels"] == TINY_VIT_LABELS
    assert model["runtime"] == "torch"
    assert model["limits"]["max_images_per_request"] == 16
    content = client.get("/openapi.json").json()["paths"][URL]["post"]["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}


def test_settings_refuse_inconsistent_limits() -> None:
    with pytest.raises(ValueError, match="max_images_per_request"):
        PoseSettings(max_images_per_request=100, max_queued_items=50, max_batch_size=8)


class SlowImageClassifier(HfImageClassifier):
    """The tiny ViT, one second per batch: keeps the queue full."""

    def predict(self, batch: Sequence[DecodedImage]) -> list[PosePrediction]:
        time.sleep(1.0)
        return super().predict(batch)


def test_a_full_queue_answers_429_and_the_queued_work_completes(tiny_vit_dir: Path) -> None:
    settings = settings_for(
        tiny_vit_dir,
        max_queued_items=4,
        max_items_per_request=4,
        max_images_per_request=4,
        max_batch_size=1,
    )
    distinct = [image_bytes((32 + i, 32), image_format="PNG") for i in range(6)]
    with TestClient(build_app(settings, SlowImageClassifier())) as client:
        wait_ready(client)
        results: list[int] = []

        def fill() -> None:
            batch = files(*((f"a{i}.png", data) for i, data in enumerate(distinct[:4])))
            results.append(client.post(URL, files=batch).status_code)

        first = threading.Thread(target=fill)
        first.start()
        deadline = time.monotonic() + 20
        while metric(client, "mtc_queue_depth", task="pose") < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = client.post(URL, files=files(("b.png", distinct[4]), ("c.png", distinct[5])))
        first.join()
    assert refused.status_code == 429
    assert refused.json()["error_type"] == "overloaded"
    assert refused.headers["retry-after"] == "1"
    assert results == [200]


def test_pixels_per_request_are_bounded_from_the_headers_before_any_decode(
    tiny_vit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []

    def counted_decode(data: bytes, *, label: str, limits: ImageLimits) -> DecodedImage:
        decoded.append(label)
        return decode_image(data, label=label, limits=limits)

    monkeypatch.setattr(pose_api, "decode_image", counted_decode)
    photo = image_bytes((100, 50))  # 5,000 pixels
    settings = settings_for(tiny_vit_dir, max_image_pixels=10_000, max_pixels_per_request=15_000)
    with TestClient(build_app(settings)) as client:
        wait_ready(client)
        three = client.post(URL, files=files(*[(f"{i}.png", photo) for i in range(3)]))
        decoded_for_three = len(decoded)
        four = client.post(URL, files=files(*[(f"{i}.png", photo) for i in range(4)]))
        as_json = client.post(URL, json={"images": [base64.b64encode(photo).decode()] * 4})
        limits = client.get("/v1/models").json()["models"][0]["limits"]
    assert three.status_code == 200, three.text
    assert decoded_for_three == 3
    for refused in (four, as_json):
        assert refused.status_code == 413
        assert refused.json()["error_type"] == "batch_too_large"
        assert "4 images of 20000 pixels" in refused.json()["detail"]
        assert "MTC_MAX_PIXELS_PER_REQUEST" in refused.json()["detail"]
    assert len(decoded) == 3  # the refused requests decoded nothing
    assert limits["max_pixels_per_request"] == 15_000


def test_images_are_decoded_at_most_max_concurrent_decodes_at_once(
    tiny_vit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, most_at_once = [0], [0]
    lock = threading.Lock()

    def tracked_decode(data: bytes, *, label: str, limits: ImageLimits) -> DecodedImage:
        with lock:
            running[0] += 1
            most_at_once[0] = max(most_at_once[0], running[0])
        time.sleep(0.1)
        try:
            return decode_image(data, label=label, limits=limits)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(pose_api, "decode_image", tracked_decode)
    settings = settings_for(tiny_vit_dir, max_concurrent_decodes=2, cache_ttl_seconds=0)
    with TestClient(build_app(settings)) as client, ThreadPoolExecutor(4) as pool:
        wait_ready(client)
        batch = files(("r.png", RED), ("b.jpg", BLUE))
        requests = [pool.submit(client.post, URL, files=batch) for _ in range(4)]
        statuses = [request.result().status_code for request in requests]
    assert statuses == [200] * 4
    assert most_at_once[0] == 2


def test_settings_refuse_a_request_pixel_limit_below_one_image() -> None:
    with pytest.raises(ValueError, match="max_pixels_per_request"):
        PoseSettings(max_image_pixels=40_000_000, max_pixels_per_request=10_000_000)
