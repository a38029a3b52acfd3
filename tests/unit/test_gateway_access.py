"""API keys and quotas: the keys file and its command, token buckets, and the gateway over
real HTTP with authentication on (401, 429 with Retry-After, public paths)."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.api_keys import (
    ApiKeysFileError,
    ApiKeyStore,
    hash_api_key,
    main,
    new_api_key,
    parse_api_keys,
)
from gateway.app import create_app
from gateway.quotas import MemoryTokenBuckets, RedisTokenBuckets
from gateway.settings import GatewaySettings
from tests.support.fake_services import FakeTextService
from tests.support.in_thread_servers import bound_socket, served_gateway, serving

ALICE_KEY = "mtc_alice-test-key-0123456789"
BOB_KEY = "mtc_bob-test-key-9876543210"
UNLIMITED_KEY = "mtc_batch-test-key-5555"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- the keys file


def test_hash_is_the_sha256_hex_of_the_key() -> None:
    assert hash_api_key("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_keys_file_lines_with_comments_and_quota_options() -> None:
    text = f"""
    # the web team
    alice   {hash_api_key(ALICE_KEY)}
    batch   {hash_api_key(BOB_KEY).upper()}  rate=50 burst=100  # nightly jobs
    free    {hash_api_key(UNLIMITED_KEY)} rate=0
    """

    keys = parse_api_keys(text, "keys.txt")

    assert [(key.name, key.rate_per_second, key.burst) for key in keys] == [
        ("alice", None, None),
        ("batch", 50.0, 100),
        ("free", 0.0, None),
    ]
    assert keys[1].sha256 == hashlib.sha256(BOB_KEY.encode()).digest()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice", "line 1: expected NAME SHA256_HEX"),
        ("alice not-a-hash", "line 1: expected NAME SHA256_HEX"),
        (f"al ice {'0' * 64}", "line 1: expected NAME SHA256_HEX"),
        (f"al/ice {'0' * 64}", "key name 'al/ice' must match"),
        (f"alice {'0' * 64} rate=fast", "line 1: 'rate=fast' needs a number"),
        (f"alice {'0' * 64} burst=0", "line 1: 'burst=0' needs a number"),
        (f"alice {'0' * 64} colour=red", "line 1: unknown option 'colour=red'"),
        (f"alice {'0' * 64}\nalice {'1' * 64}", "line 2: key name 'alice' is listed twice"),
        (f"alice {'0' * 64}\nbob {'0' * 64}", "line 2: the same key is listed twice"),
    ],
)
def test_invalid_keys_file_lines_are_refused_naming_the_line(line: str, message: str) -> None:
    with pytest.raises(ApiKeysFileError, match=message):
        parse_api_keys(line, "keys.txt")


def test_new_key_command_prints_a_key_and_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", "carol", "--rate", "2.5", "--burst", "5"]) == 0

    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    key, file_line = lines[1], lines[3]
    assert key.startswith("mtc_")
    assert len(key) > 40
    assert file_line == f"carol {hash_api_key(key)} rate=2.5 burst=5"
    (parsed,) = parse_api_keys(file_line, "printed line")
    assert (parsed.name, parsed.rate_per_second, parsed.burst) == ("carol", 2.5, 5)


def test_hash_command_reads_the_key_from_standard_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{ALICE_KEY}\n"))

    assert main(["hash", "alice"]) == 0

    assert capsys.readouterr().out == f"alice {hash_api_key(ALICE_KEY)}\n"


def test_new_keys_differ() -> None:
    assert len({new_api_key() for _ in range(20)}) == 20


# --------------------------------------------------------------------------- key store


def _write_keys(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_store_identifies_listed_keys_only(tmp_path: Path) -> None:
    path = _write_keys(tmp_path / "keys", f"alice {hash_api_key(ALICE_KEY)}")
    store = ApiKeyStore(path, reload_seconds=60)

    found = store.identify(ALICE_KEY)

    assert found is not None
    assert found.name == "alice"
    assert store.identify(BOB_KEY) is None
    assert store.identify("") is None
    assert store.identify(ALICE_KEY + "x" * 300) is None


def test_store_refuses_to_start_without_a_readable_file(tmp_path: Path) -> None:
    with pytest.raises(ApiKeysFileError, match="cannot read API keys file"):
        ApiKeyStore(tmp_path / "missing", reload_seconds=60)


def test_store_picks_up_a_changed_file(tmp_path: Path) -> None:
    clock = FakeClock()
    path = _write_keys(tmp_path / "keys", f"alice {hash_api_key(ALICE_KEY)}")
    store = ApiKeyStore(path, reload_seconds=10, clock=clock)
    _write_keys(path, f"bob {hash_api_key(BOB_KEY)}", "# alice's key was rotated out")

    before_check = store.identify(BOB_KEY)
    clock.now += 10

    assert before_check is None
    assert store.identify(BOB_KEY) is not None
    assert store.identify(ALICE_KEY) is None
    assert store.names == ["bob"]


def test_a_key_revoked_in_a_file_with_a_bad_line_stops_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    path = _write_keys(
        tmp_path / "keys", f"alice {hash_api_key(ALICE_KEY)}", f"bob {hash_api_key(BOB_KEY)}"
    )
    store = ApiKeyStore(path, reload_seconds=10, clock=clock)
    # Alice's key is revoked; the same edit leaves a broken line behind.
    _write_keys(path, f"bob {hash_api_key(BOB_KEY)}", "carol half-written")
    clock.now += 10

    with caplog.at_level(logging.ERROR):
        revoked = store.identify(ALICE_KEY)
    assert revoked is None
    assert store.identify(BOB_KEY) is not None
    assert store.names == ["bob"]
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert any("line 2" in record.getMessage() for record in errors), caplog.text
    assert any("1 invalid lines skipped" in record.getMessage() for record in errors)
    assert "half-written" not in caplog.text, "the line's content stays out of the log"


def test_store_keeps_its_keys_while_the_file_cannot_be_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    path = _write_keys(tmp_path / "keys", f"alice {hash_api_key(ALICE_KEY)}")
    store = ApiKeyStore(path, reload_seconds=10, clock=clock)
    path.unlink()  # a mounted Secret between two versions
    clock.now += 10

    assert store.identify(ALICE_KEY) is not None
    assert "keeping the API keys already loaded" in caplog.text


# --------------------------------------------------------------------------- token buckets


async def test_memory_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    buckets = MemoryTokenBuckets(clock=clock)

    burst = [await buckets.take("alice", 2.0, 3) for _ in range(3)]
    refused = await buckets.take("alice", 2.0, 3)
    other = await buckets.take("bob", 2.0, 3)
    clock.now += 0.5
    refilled = await buckets.take("alice", 2.0, 3)

    assert [decision.allowed for decision in burst] == [True, True, True]
    assert not refused.allowed
    assert refused.retry_after_seconds == pytest.approx(0.5)
    assert other.allowed
    assert refilled.allowed
    assert refilled.remaining == pytest.approx(0)


async def test_memory_bucket_never_holds_more_than_the_burst() -> None:
    clock = FakeClock()
    buckets = MemoryTokenBuckets(clock=clock)
    await buckets.take("alice", 1.0, 2)
    clock.now += 3600

    decisions = [await buckets.take("alice", 1.0, 2) for _ in range(3)]

    assert [decision.allowed for decision in decisions] == [True, True, False]


async def test_redis_buckets_fall_back_to_memory_while_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors: list[None] = []
    with bound_socket() as sock:
        port = sock.getsockname()[1]
        buckets = RedisTokenBuckets(
            f"redis://127.0.0.1:{port}/0",
            timeout_seconds=0.25,
            retry_seconds=30,
            on_error=lambda: errors.append(None),
        )
        decisions = [await buckets.take("alice", 1.0, 2) for _ in range(3)]
        await buckets.close()

    assert [decision.allowed for decision in decisions] == [True, True, False]
    assert len(errors) == 3
    assert not buckets.available
    assert caplog.text.count("redis quota store at redis://127.0.0.1") == 1


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def sentiment_service() -> FakeTextService:
    return FakeTextService("sentiment")


@pytest.fixture(scope="module")
def sentiment_url(sentiment_service: FakeTextService) -> Iterator[str]:
    with serving(sentiment_service.create_app()) as url:
        yield url


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return _write_keys(
        tmp_path / "api-keys",
        f"alice {hash_api_key(ALICE_KEY)}",
        f"bob {hash_api_key(BOB_KEY)}",
        f"batch {hash_api_key(UNLIMITED_KEY)} rate=0",
    )


@pytest.fixture
def gateway(sentiment_url: str, keys_file: Path) -> Iterator[httpx.Client]:
    settings = GatewaySettings(
        upstreams={"sentiment": sentiment_url},
        api_keys_file=keys_file,
        rate_limit_per_second=0.01,
        rate_limit_burst=3,
    )
    with served_gateway(settings) as client:
        yield client


def _predict(gateway: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    return gateway.post("/v1/sentiment/predict", json={"text": ["fine"]}, headers=headers)


def test_no_key_is_401_and_nothing_is_forwarded(
    gateway: httpx.Client, sentiment_service: FakeTextService
) -> None:
    forwarded_before = len(sentiment_service.received)

    response = _predict(gateway, {})

    assert response.status_code == 401
    assert response.json() == {
        "detail": "this route needs an API key: send it as `Authorization: Bearer <key>` "
        "or `X-API-Key: <key>`",
        "error_type": "missing_api_key",
    }
    assert response.headers["www-authenticate"] == 'Bearer realm="mtc"'
    assert len(sentiment_service.received) == forwarded_before


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {ALICE_KEY}x"},
        {"x-api-key": BOB_KEY[:-1]},
        {"authorization": f"Basic {ALICE_KEY}", "x-api-key": "wrong"},
    ],
)
def test_wrong_key_is_401(gateway: httpx.Client, headers: dict[str, str]) -> None:
    response = _predict(gateway, headers)

    assert response.status_code == 401
    assert response.json() == {
        "detail": "the API key is not valid",
        "error_type": "invalid_api_key",
    }


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {ALICE_KEY}"},
        {"authorization": f"bearer   {ALICE_KEY}"},
        {"x-api-key": ALICE_KEY},
    ],
)
def test_good_key_is_forwarded_without_the_key(
    gateway: httpx.Client, sentiment_service: FakeTextService, headers: dict[str, str]
) -> None:
    response = _predict(gateway, headers)

    assert response.status_code == 200
    assert response.json() == sentiment_service.prediction_body(["fine"])
    forwarded = sentiment_service.received[-1].headers
    assert "authorization" not in forwarded
    assert "x-api-key" not in forwarded


def test_quota_exceeded_is_429_with_retry_after_per_key(gateway: httpx.Client) -> None:
    alice = {"x-api-key": ALICE_KEY}

    allowed = [_predict(gateway, alice).status_code for _ in range(3)]
    refused = _predict(gateway, alice)
    bob = _predict(gateway, {"x-api-key": BOB_KEY})

    assert allowed == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["error_type"] == "rate_limited"
    assert refused.json()["detail"].startswith(
        "API key 'alice' is over its quota of 0.01 tokens per second (bursts of 3; a request "
        "costs a token per 32 items or 1,048,576 bytes it sends, at least one)"
    )
    # One token comes back every 100 s at this rate.
    assert 1 <= int(refused.headers["retry-after"]) <= 100
    assert bob.status_code == 200


def test_a_key_with_rate_zero_has_no_quota(gateway: httpx.Client) -> None:
    statuses = {_predict(gateway, {"x-api-key": UNLIMITED_KEY}).status_code for _ in range(8)}

    assert statuses == {200}


@pytest.mark.parametrize(
    "path",
    [
        "/health/live",
        "/health/ready",
        "/metrics",
        "/docs",
        "/docs/assets/swagger-ui-bundle.js",
        "/redoc",
        "/docs/assets/redoc.standalone.js",
        "/openapi.json",
        "/v1/models",
        "/ui",
        "/ui/app.js",
        "/project/health",
        "/project/docs",
        "/project/openapi.json",
    ],
)
def test_health_metrics_docs_and_the_page_stay_public(gateway: httpx.Client, path: str) -> None:
    response = gateway.get(path)

    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/", "/v1/sentiment/about", "/api/v1/sentiment_analysis"])
def test_every_other_path_needs_a_key(gateway: httpx.Client, path: str) -> None:
    assert gateway.get(path).status_code == 401


def test_keys_never_reach_the_log_but_their_names_do(
    gateway: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    _predict(gateway, {"x-api-key": ALICE_KEY})
    _predict(gateway, {"x-api-key": "mtc_a-guess"})

    assert ALICE_KEY not in caplog.text
    assert "mtc_a-guess" not in caplog.text
    access = [record for record in caplog.records if record.name == "gateway.access"]
    assert [record.__dict__["fields"]["api_key"] for record in access] == ["alice", None]


def test_refusals_are_counted_by_reason(gateway: httpx.Client) -> None:
    _predict(gateway, {})
    _predict(gateway, {"x-api-key": "wrong"})
    for _ in range(4):
        _predict(gateway, {"x-api-key": BOB_KEY})

    metrics = gateway.get("/metrics").text

    assert 'mtc_gateway_rejected_total{reason="missing_api_key"} 1.0' in metrics
    assert 'mtc_gateway_rejected_total{reason="invalid_api_key"} 1.0' in metrics
    assert 'mtc_gateway_rejected_total{reason="rate_limited"} 1.0' in metrics
    assert 'mtc_gateway_requests_total{status_class="4xx",task="sentiment"} 3.0' in metrics


def test_openapi_declares_the_keys_on_protected_routes_only(gateway: httpx.Client) -> None:
    document = gateway.get("/openapi.json").json()

    schemes = document["components"]["securitySchemes"]
    predict = document["paths"]["/v1/sentiment/predict"]["post"]
    models = document["paths"]["/v1/models"]["get"]
    assert schemes["ApiKeyBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <API key>`",
    }
    assert schemes["ApiKeyHeader"]["name"] == "X-API-Key"
    assert predict["security"] == [{"ApiKeyBearer": []}, {"ApiKeyHeader": []}]
    assert "missing_api_key" in predict["responses"]["401"]["description"]
    assert "rate_limited" in predict["responses"]["429"]["description"]
    assert "overloaded" in predict["responses"]["429"]["description"]
    assert "security" not in models


def test_unreadable_keys_file_stops_the_gateway_at_build_time(tmp_path: Path) -> None:
    settings = GatewaySettings(
        upstreams={"sentiment": "http://127.0.0.1:8101"},
        api_keys_file=_write_keys(tmp_path / "keys", "alice nothex"),
    )

    with pytest.raises(ApiKeysFileError, match="line 1"):
        create_app(settings)
