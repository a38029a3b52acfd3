"""`python -m load.audio_latency`: end-to-end time of one 5-second call.

Starts the audio service as its own process (cache off, so every request does the full
work), speaks a 5-second emergency call with espeak-ng, and sends it sequentially: once
per request with Whisper ASR, once with the transcript supplied (no ASR). Client-side wall
time per request is what a caller waits; the service's own `x-inference-time` shows where
it goes. Writes a JSON result file and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

CALL = (
    "Hello, I need an ambulance at forty two Elm Street, my neighbour fell down the stairs "
    "and he is not moving, please hurry"
)
CLIP_SECONDS = 5.0


def five_second_call() -> bytes:
    """The call spoken by espeak-ng, cut or padded to exactly 5 s (16 kHz mono WAV)."""
    with tempfile.TemporaryDirectory(prefix="mtc-bench-") as scratch:
        raw, clip = Path(scratch) / "raw.wav", Path(scratch) / "clip.wav"
        subprocess.run(["espeak-ng", "-s", "185", "-w", str(raw), CALL], check=True)
        length = str(CLIP_SECONDS)
        effects = ["rate", "16000", "channels", "1", "pad", "0", length, "trim", "0", length]
        subprocess.run(["sox", "-V1", str(raw), "-b", "16", str(clip), *effects], check=True)
        return clip.read_bytes()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _measure(
    client: httpx.Client, url: str, clip: bytes, transcript: str | None, requests: int
) -> dict[str, Any]:
    data = {"transcript": transcript} if transcript else None
    wall: list[float] = []
    server: list[float] = []
    for index in range(requests + 3):
        started = time.perf_counter()
        response = client.post(url, files={"audio": ("call.wav", clip)}, data=data)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        if index >= 3:  # the first requests warm caches of the libraries
            wall.append(elapsed * 1000)
            server.append(float(response.headers["x-inference-time"]))
    body = response.json()
    return {
        "requests": requests,
        "wall_ms": {
            "p50": round(statistics.median(wall), 1),
            "p95": round(_percentile(wall, 0.95), 1),
            "mean": round(statistics.fmean(wall), 1),
            "max": round(max(wall), 1),
        },
        "server_inference_ms_p50": round(statistics.median(server), 1),
        "top_label": body["predictions"][0][0]["label"],
        "transcript": body["clips"][0]["transcript"],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m load.audio_latency")
    parser.add_argument("--model-dir", type=Path, default=Path(".mtc/models/audio"))
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("load/results/audio-latency.json"))
    args = parser.parse_args(argv)

    port = _free_port()
    env = {
        **os.environ,
        "MTC_PORT": str(port),
        "MTC_MODEL_URI": str(args.model_dir.absolute()),
        "MTC_CACHE_TTL_SECONDS": "0",
        "MTC_LOG_LEVEL": "WARNING",
    }
    service = subprocess.Popen(
        [sys.executable, "-m", "services.audio"], env=env, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=60) as client:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if client.get(f"{base}/health/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if service.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the audio service did not become ready")
                time.sleep(0.5)
            clip = five_second_call()
            url = f"{base}/v1/audio/predict"
            results: dict[str, Any] = {
                "clip_seconds": CLIP_SECONDS,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "with_asr": _measure(client, url, clip, None, args.requests),
                "transcript_supplied": _measure(client, url, clip, CALL, args.requests),
            }
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=30)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("| 5 s clip, sequential, cache off | p50 | p95 | server p50 |")
    print("|---|---|---|---|")
    for name in ("with_asr", "transcript_supplied"):
        row = results[name]
        print(
            f"| {name.replace('_', ' ')} | {row['wall_ms']['p50']} ms | {row['wall_ms']['p95']} ms "
            f"| {row['server_inference_ms_p50']} ms |"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
