"""What a media bomb costs: audio and images small on the wire but huge once decoded, sent
through a real gateway to real audio and pose services, at the documented limits and
several requests at once.

The stack runs as processes on 127.0.0.1 and free ports: the audio service (`python -m
services.audio`, a tiny random call model, ASR off), the pose service (`python -m
services.pose`, a tiny random ViT) and the gateway in front of both. The bombs are made
here:

- a FLAC of 8 channels at 384 kHz, exactly `MTC_MAX_AUDIO_SECONDS` long: about 100 KB
  that would decode to 369 MB of float32 samples; four per request (the clip limit);
- stereo 96 kHz FLACs of the same length, exactly at `MTC_MAX_AUDIO_DECODED_BYTES`: these
  are decoded, so they show what a decode at the limit costs (the last of each request is
  silent, so the model never runs and only the decoding is measured);
- 16 RGB PNGs of 40 megapixels each (`MTC_MAX_IMAGE_PIXELS`), about 117 KB apiece: every
  one passes the per-image check, together they are 3.2 times `MTC_MAX_PIXELS_PER_REQUEST`;
- 5 such PNGs, 199.96 megapixels: just within `MTC_MAX_PIXELS_PER_REQUEST`, accepted.

Each attack is four such requests at once. Cost, as in `test_resource_bounds.py`: the
wall time until all are answered, and each process's peak resident memory above its level
before the attack (`VmHWM`, reset first), within bounds stated below. After the attacks,
each process must settle back within 10 % of its memory after warm-up. `pytest -s` prints
what each attack cost.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from tests.hostile.test_resource_bounds import ALLOCATOR_ENV
from tests.support.audio_clips import build_tiny_call_model, constant_flac, encode, tone
from tests.support.gateway_processes import free_ports, start_model_service
from tests.support.pose_images import black_rgb_png, build_tiny_vit, image_bytes
from tests.support.process_memory import peak_growth, rss_mib
from tests.support.processes import start, stop, wait_for_http

MAX_AUDIO_SECONDS = 30.0
"""The audio service's documented `MTC_MAX_AUDIO_SECONDS`."""
AUDIO_DECODED_BYTES_LIMIT = 23_040_000
"""The documented default of `MTC_MAX_AUDIO_DECODED_BYTES` at 30 s: 30 s x 2 channels x
96 kHz x 4 bytes."""
CLIPS_PER_REQUEST = 4
"""The documented `MTC_MAX_CLIPS_PER_REQUEST`."""
IMAGE_SIDE = 6324
"""Sides of the PNG bombs: 6324 x 6324 = 39,992,976 pixels, within `MTC_MAX_IMAGE_PIXELS`
(40,000,000)."""
PIXELS_PER_REQUEST_LIMIT = 200_000_000
"""The documented `MTC_MAX_PIXELS_PER_REQUEST`."""
IMAGES_PER_REQUEST = 16
"""The documented `MTC_MAX_IMAGES_PER_REQUEST`."""
CONCURRENT = 4
"""Copies of each attack sent at once."""

# Bounds (figures measured on a shared 2-core machine in tests/README.md): refusals at many
# times what they cost; decodes at the limits at about twice what they cost, which is about
# half of what the same attack cost before these limits.
MAX_REFUSED_SECONDS = 2.0
"""Wall time until four requests of bombs over a limit are all refused."""
MAX_REFUSED_GROWTH_MIB = 40.0
"""Peak memory growth of any process while four requests of bombs are refused."""
MAX_AUDIO_AT_LIMIT_SECONDS = 15.0
"""Wall time until four requests of four clips at the decoded-bytes limit are decoded and
refused."""
MAX_AUDIO_AT_LIMIT_GROWTH_MIB = 80.0
"""Peak memory growth of any process from decoding those 16 clips: two at a time
(`MTC_MAX_CONCURRENT_DECODES`), each holding a block and the clip at 16 kHz (2 MB), not
the 23 MB of samples the clip decodes to; each request also keeps its decoded clips until
it is answered."""
MAX_IMAGES_AT_LIMIT_SECONDS = 60.0
"""Wall time until four requests of five 40-megapixel PNGs are answered."""
MAX_IMAGES_AT_LIMIT_GROWTH_MIB = 900.0
"""Peak memory growth of any process from those requests: two decodes at a time
(`MTC_MAX_CONCURRENT_DECODES`), each about 5 bytes per pixel of one image at its peak
(4 for the decoded image, 1 for its half-size reduction: 210 MB), instead of one decode,
with a full-size copy, per worker thread."""
MAX_SETTLED_RSS_RATIO = 1.10
"""After the attacks each process is within 10 % of its resident memory after warm-up."""


@dataclass
class Stack:
    """The running processes and where they listen."""

    gateway_url: str
    pids: dict[str, int]
    settled_rss: dict[str, float] = field(default_factory=dict)
    costs: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("media-bounds")
    call_model = build_tiny_call_model(tmp_path_factory.mktemp("tiny-call"))
    vit = build_tiny_vit(tmp_path_factory.mktemp("tiny-vit"))
    audio_port, pose_port, gateway_port = free_ports(3)
    audio_url = f"http://127.0.0.1:{audio_port}"
    pose_url = f"http://127.0.0.1:{pose_port}"
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        processes["audio"] = start_model_service(
            "services.audio",
            "audio",
            call_model,
            audio_port,
            logs / "audio.log",
            {"MTC_ASR_ENABLED": "false", "MTC_CACHE_TTL_SECONDS": "0", **ALLOCATOR_ENV},
        )
        processes["pose"] = start_model_service(
            "services.pose",
            "pose",
            vit,
            pose_port,
            logs / "pose.log",
            {"MTC_CACHE_TTL_SECONDS": "0", **ALLOCATOR_ENV},
        )
        processes["gateway"] = start(
            [sys.executable, "-m", "gateway"],
            env={
                "MTC_GATEWAY_HOST": "127.0.0.1",
                "MTC_GATEWAY_PORT": str(gateway_port),
                "MTC_GATEWAY_UPSTREAMS": json.dumps({"audio": audio_url, "pose": pose_url}),
                "MTC_GATEWAY_TASK_KINDS": json.dumps({"audio": "audio", "pose": "image"}),
                **ALLOCATOR_ENV,
            },
            log=logs / "gateway.log",
        )
        wait_for_http(f"{audio_url}/health/ready", processes["audio"], timeout=180)
        wait_for_http(f"{pose_url}/health/ready", processes["pose"], timeout=180)
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        wait_for_http(f"{gateway_url}/health/ready", processes["gateway"], timeout=60)
        stack = Stack(gateway_url, {name: process.pid for name, process in processes.items()})
        warm_up(stack)
        yield stack
        print("\n".join(["", "cost of each attack:", *stack.costs]))
    finally:
        for process in reversed(list(processes.values())):
            stop(process)


Parts = list[tuple[str, tuple[str, bytes]]]


def audio_parts(clips: list[bytes]) -> Parts:
    return [("audio", (f"clip{i}.flac", clip)) for i, clip in enumerate(clips)]


def image_parts(images: list[bytes]) -> Parts:
    return [("image", (f"photo{i}.png", image)) for i, image in enumerate(images)]


def warm_up(stack: Stack) -> None:
    """A small valid request to each service (a 44.1 kHz stereo clip, so resampling and
    downmixing run; a small PNG), then the level every process settles at."""
    stereo = np.stack([tone(1.0, rate=44_100), tone(1.0, rate=44_100, frequency=660)], axis=1)
    clip = encode(stereo, rate=44_100, file_format="FLAC")
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as client:
        for _ in range(2):
            audio = client.post("/v1/audio/predict", files=audio_parts([clip, clip]))
            assert audio.status_code == 200, audio.text[:300]
            pose = client.post("/v1/pose/predict", files=image_parts([image_bytes((640, 480))]))
            assert pose.status_code == 200, pose.text[:300]
    time.sleep(1.0)
    stack.settled_rss = {name: rss_mib(pid) for name, pid in stack.pids.items()}


@dataclass(frozen=True)
class Cost:
    """What one attack cost: seconds of wall time, MiB of peak growth per process."""

    seconds: float
    growth: dict[str, float]


def attack(stack: Stack, name: str, path: str, parts: Parts) -> tuple[list[httpx.Response], Cost]:
    """Send CONCURRENT copies of one request at once and measure them."""
    names = list(stack.pids)
    with (
        httpx.Client(base_url=stack.gateway_url, timeout=120) as client,
        ThreadPoolExecutor(CONCURRENT) as pool,
        peak_growth([stack.pids[n] for n in names]) as peak,
    ):
        started = time.monotonic()
        futures = [pool.submit(client.post, path, files=parts) for _ in range(CONCURRENT)]
        responses = [future.result() for future in futures]
        seconds = time.monotonic() - started
    cost = Cost(seconds, {n: peak.growth[stack.pids[n]] for n in names})
    statuses = sorted({response.status_code for response in responses})
    stack.costs.append(
        f"  {name:58} {seconds:6.2f} s  "
        + "  ".join(f"{n} +{g:6.1f} MiB" for n, g in cost.growth.items())
        + f"  {statuses}"
    )
    return responses, cost


def assert_within(cost: Cost, seconds: float, growth_mib: float) -> None:
    assert cost.seconds < seconds, cost
    for process, growth in cost.growth.items():
        assert growth < growth_mib, (process, cost)


def assert_refused(response: httpx.Response, error_type: str, setting: str) -> None:
    assert response.status_code == 413, (response.status_code, response.text[:300])
    body = response.json()
    assert body["error_type"] == error_type, body
    assert setting in body["detail"], body


# --------------------------------------------------------------------------- the attacks
# In file order; the settle check needs every attack behind it.


@pytest.fixture(scope="module")
def flac_bomb() -> bytes:
    bomb = constant_flac(8, 384_000, MAX_AUDIO_SECONDS)
    assert len(bomb) < 150_000
    return bomb


@pytest.fixture(scope="module")
def png_bomb() -> bytes:
    bomb = black_rgb_png(IMAGE_SIDE, IMAGE_SIDE)
    assert len(bomb) < 150_000
    return bomb


def test_flac_bombs_at_the_duration_limit_are_refused_from_their_headers(
    stack: Stack, flac_bomb: bytes
) -> None:
    """Each clip passes the byte, rate, channel and duration checks; the samples it
    declares (8 x 384 kHz x 30 s in float32: 369 MB) are 16 times the decoded-bytes
    budget, so it is refused before decoding."""
    responses, cost = attack(
        stack,
        f"audio: {CONCURRENT} x {CLIPS_PER_REQUEST} FLAC 8 ch 384 kHz 30 s",
        "/v1/audio/predict",
        audio_parts([flac_bomb] * CLIPS_PER_REQUEST),
    )
    for response in responses:
        assert_refused(response, "item_too_large", "MTC_MAX_AUDIO_DECODED_BYTES")
        assert "audio[0] (clip0.flac)" in response.json()["detail"]
    assert_within(cost, MAX_REFUSED_SECONDS, MAX_REFUSED_GROWTH_MIB)


def test_clips_at_the_decoded_bytes_limit_cost_little_to_decode(stack: Stack) -> None:
    """Stereo 96 kHz for 30 s is exactly the budget, so these are decoded; the fourth
    clip of each request is silent, so every clip is decoded and the request is then
    refused (422) before the model: what is measured is the decoding alone."""
    loud = constant_flac(2, 96_000, MAX_AUDIO_SECONDS)
    silent = constant_flac(2, 96_000, MAX_AUDIO_SECONDS, level=0.0)
    assert round(MAX_AUDIO_SECONDS * 96_000) * 2 * 4 == AUDIO_DECODED_BYTES_LIMIT
    responses, cost = attack(
        stack,
        f"audio: {CONCURRENT} x {CLIPS_PER_REQUEST} FLAC 2 ch 96 kHz 30 s, the last silent",
        "/v1/audio/predict",
        audio_parts([loud] * (CLIPS_PER_REQUEST - 1) + [silent]),
    )
    for response in responses:
        assert response.status_code == 422, response.text[:300]
        body = response.json()
        assert body["error_type"] == "unusable_content", body
        assert body["detail"].startswith(f"audio[{CLIPS_PER_REQUEST - 1}]"), body
    assert_within(cost, MAX_AUDIO_AT_LIMIT_SECONDS, MAX_AUDIO_AT_LIMIT_GROWTH_MIB)


def test_png_sets_over_the_request_pixel_limit_are_refused_from_their_headers(
    stack: Stack, png_bomb: bytes
) -> None:
    """16 images each within the per-image limit, 640 megapixels together: refused from
    their headers before any is decoded."""
    responses, cost = attack(
        stack,
        f"pose: {CONCURRENT} x {IMAGES_PER_REQUEST} PNG of 40 MP",
        "/v1/pose/predict",
        image_parts([png_bomb] * IMAGES_PER_REQUEST),
    )
    for response in responses:
        assert_refused(response, "batch_too_large", "MTC_MAX_PIXELS_PER_REQUEST")
    assert_within(cost, MAX_REFUSED_SECONDS, MAX_REFUSED_GROWTH_MIB)


def test_png_sets_at_the_request_pixel_limit_decode_in_bounded_memory(
    stack: Stack, png_bomb: bytes
) -> None:
    count = PIXELS_PER_REQUEST_LIMIT // IMAGE_SIDE**2
    assert count == 5
    responses, cost = attack(
        stack,
        f"pose: {CONCURRENT} x {count} PNG of 40 MP (at the limit)",
        "/v1/pose/predict",
        image_parts([png_bomb] * count),
    )
    for response in responses:
        assert response.status_code == 200, response.text[:300]
        assert len(response.json()["predictions"]) == count
    assert_within(cost, MAX_IMAGES_AT_LIMIT_SECONDS, MAX_IMAGES_AT_LIMIT_GROWTH_MIB)


def test_every_process_settles_back_after_the_attacks(stack: Stack) -> None:
    """Runs last (file order): no attack left memory behind."""
    time.sleep(2.0)
    settled = {name: rss_mib(pid) for name, pid in stack.pids.items()}
    stack.costs.append(
        "  settled RSS after warm-up / after the attacks: "
        + "  ".join(
            f"{name} {stack.settled_rss[name]:.1f} / {settled[name]:.1f} MiB" for name in settled
        )
    )
    for name, rss in settled.items():
        assert rss < stack.settled_rss[name] * MAX_SETTLED_RSS_RATIO, (
            name,
            stack.settled_rss,
            settled,
        )
