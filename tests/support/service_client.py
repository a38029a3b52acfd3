"""Reading a running service app in tests: readiness and Prometheus samples."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    """Block until `/health/ready` answers 200; fail at once if loading failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/health/ready")
        if response.status_code == 200:
            return
        assert response.json()["error_type"] == "model_not_ready"
        assert "failed" not in response.json()["detail"], response.json()
        time.sleep(0.02)
    raise AssertionError("model never became ready")


def metric(client: TestClient, name: str, **labels: str) -> float:
    """The value of one sample of `/metrics` with (at least) these labels."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name}{{") and all(
            f'{key}="{value}"' in line for key, value in labels.items()
        ):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not exported")
