"""API keys: every stored hash is compared in constant time, and no key reaches the log."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

import pytest

from gateway.api_keys import ApiKeyStore, hash_api_key
from gateway.settings import GatewaySettings
from tests.support.fake_services import FakeTextService
from tests.support.in_thread_servers import served_gateway, serving

KEYS = [f"mtc_key-number-{index}-abcdefghijklmnop" for index in range(5)]
WRONG_KEY = "mtc_not-a-listed-key-0123456789"


def keys_file(path: Path) -> Path:
    path.write_text("".join(f"user{i} {hash_api_key(key)}\n" for i, key in enumerate(KEYS)))
    return path


@pytest.mark.parametrize("presented", [KEYS[0], KEYS[-1], WRONG_KEY])
def test_every_stored_hash_is_compared_in_constant_time_whatever_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, presented: str
) -> None:
    store = ApiKeyStore(keys_file(tmp_path / "keys"), reload_seconds=3600)
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def counting_compare(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("gateway.api_keys.hmac.compare_digest", counting_compare)
    found = store.identify(presented)
    # An early return or `==` would make the answer time depend on where the key is listed.
    assert len(calls) == len(KEYS)
    assert (found is not None) == (presented in KEYS)


def test_keys_are_never_logged_even_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(FakeTextService("sentiment").create_app()) as upstream:
        settings = GatewaySettings(
            upstreams={"sentiment": upstream},
            api_keys_file=keys_file(tmp_path / "keys"),
            log_level="debug",
        )
        with caplog.at_level(logging.DEBUG), served_gateway(settings) as gateway:
            for headers in (
                {"authorization": f"Bearer {KEYS[1]}"},
                {"x-api-key": KEYS[2]},
                {"authorization": f"Bearer {WRONG_KEY}"},
                {"x-api-key": WRONG_KEY},
            ):
                gateway.post("/v1/sentiment/predict", json={"text": ["hi"]}, headers=headers)
            statuses = [
                gateway.post(
                    "/v1/sentiment/predict", json={"text": ["hi"]}, headers={"x-api-key": key}
                ).status_code
                for key in (KEYS[3], WRONG_KEY)
            ]
    assert statuses == [200, 401]
    assert caplog.records, "the gateway logged nothing: the check below would prove nothing"
    for key in (*KEYS, WRONG_KEY):
        assert key not in caplog.text
