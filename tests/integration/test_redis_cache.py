"""The prediction cache against a real redis-server, including Redis dying mid-test."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis
from fastapi.testclient import TestClient

from services.core.cache import RedisCache
from services.text.api import build_app
from services.text.settings import TextSettings
from tests.support.processes import start_redis, stop
from tests.support.service_client import metric, wait_ready
from tests.unit.test_text_api import URL


async def test_values_round_trip_with_ttl(
    redis_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    _, port = redis_server
    cache = RedisCache(
        f"redis://127.0.0.1:{port}/0", ttl_seconds=120, timeout_seconds=1, retry_seconds=1
    )
    await cache.set_many({"k1": b"v1", "k2": b"v2"})
    assert await cache.get_many(["k1", "missing", "k2"]) == [b"v1", None, b"v2"]
    ttl = redis.Redis(port=port).ttl("k1")
    assert 0 < ttl <= 120
    await cache.close()


def test_replicas_share_predictions_and_survive_redis_dying(
    redis_server: tuple[subprocess.Popen[bytes], int], tiny_model_dir: Path
) -> None:
    process, port = redis_server
    settings = TextSettings(
        task="sentiment",
        model_uri=str(tiny_model_dir),
        redis_url=f"redis://127.0.0.1:{port}/0",
        redis_retry_seconds=0.2,
    )
    texts = {"text": ["shared one", "shared two"]}
    with TestClient(build_app(settings)) as first, TestClient(build_app(settings)) as second:
        wait_ready(first)
        wait_ready(second)
        computed = first.post(URL, json=texts)
        assert computed.status_code == 200
        # The second replica answers from Redis without running its model.
        reused = second.post(URL, json=texts)
        assert reused.json()["predictions"] == computed.json()["predictions"]
        assert metric(second, "mtc_items_inferred_total", task="sentiment") == 0
        assert metric(second, "mtc_cache_lookups_total", task="sentiment", result="hit") == 2

        stop(process, kill=True)
        during = [second.post(URL, json={"text": [f"while down {i}"]}) for i in range(3)]
        assert [r.status_code for r in during] == [200, 200, 200]
        assert metric(second, "mtc_cache_errors_total", task="sentiment") >= 1
        assert second.get("/health/ready").status_code == 200

        restarted = start_redis(port)
        try:
            time.sleep(0.3)  # let the retry window pass so the next call tries Redis again
            assert second.post(URL, json={"text": ["after restart"]}).status_code == 200
            errors = metric(second, "mtc_cache_errors_total", task="sentiment")
            assert first.post(URL, json={"text": ["after restart"]}).status_code == 200
            assert metric(first, "mtc_cache_lookups_total", task="sentiment", result="hit") >= 1
            assert metric(second, "mtc_cache_errors_total", task="sentiment") == errors
        finally:
            stop(restarted, kill=True)
