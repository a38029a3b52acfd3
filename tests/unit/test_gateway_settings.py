"""Gateway settings: read from `MTC_GATEWAY_*`, validated before anything is served."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.app import create_app
from gateway.settings import GatewaySettings


def test_reads_json_maps_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "MTC_GATEWAY_UPSTREAMS",
        '{"sentiment": "http://127.0.0.1:8101/", "disaster": "https://Disaster.mtc.svc:8000/v2"}',
    )
    monkeypatch.setenv("MTC_GATEWAY_TASK_TIMEOUTS", '{"disaster": 5}')
    monkeypatch.setenv("MTC_GATEWAY_PORT", "9090")
    monkeypatch.setenv("MTC_GATEWAY_LOG_LEVEL", "DEBUG")

    settings = GatewaySettings()

    assert settings.upstreams == {
        "sentiment": ["http://127.0.0.1:8101"],
        "disaster": ["https://disaster.mtc.svc:8000/v2"],
    }
    assert settings.port == 9090
    assert settings.log_level == "debug"
    assert settings.timeout_for("disaster") == 5.0
    assert settings.timeout_for("sentiment") == settings.request_timeout_seconds == 30.0


def test_ignores_unrelated_variables_sharing_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTC_GATEWAY_UPSTREAMS", '{"sentiment": "http://127.0.0.1:8101"}')
    monkeypatch.setenv("MTC_GATEWAY_SERVICE_HOST", "10.0.0.7")

    assert GatewaySettings().upstreams == {"sentiment": ["http://127.0.0.1:8101"]}


def test_reads_replica_lists_kinds_and_a_keys_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "MTC_GATEWAY_UPSTREAMS",
        '{"sentiment": ["http://10.0.0.5:8000/", "http://10.0.0.6:8000"], "pose": "http://p:1"}',
    )
    monkeypatch.setenv("MTC_GATEWAY_TASK_KINDS", '{"pose": "image"}')
    monkeypatch.setenv("MTC_GATEWAY_API_KEYS_FILE", "/etc/mtc/api-keys")

    settings = GatewaySettings()

    assert settings.upstreams == {
        "sentiment": ["http://10.0.0.5:8000", "http://10.0.0.6:8000"],
        "pose": ["http://p:1"],
    }
    assert (settings.kind_of("pose"), settings.kind_of("sentiment")) == ("image", "text")
    assert str(settings.api_keys_file) == "/etc/mtc/api-keys"
    assert settings.tasks == ["sentiment", "pose"]


def test_auth_and_quotas_are_off_by_default() -> None:
    settings = GatewaySettings(upstreams={"sentiment": "http://a:1"})

    assert settings.api_keys_file is None
    assert settings.redis_url is None
    assert settings.web_page is True


def test_authentication_keys_refuses_to_start_without_a_keys_file() -> None:
    with pytest.raises(ValidationError, match="MTC_GATEWAY_API_KEYS_FILE is unset"):
        GatewaySettings(upstreams={"sentiment": "http://a:1"}, authentication="keys")

    settings = GatewaySettings(
        upstreams={"sentiment": "http://a:1"}, authentication="keys", api_keys_file="/k"
    )
    assert settings.api_keys_file is not None


def test_authentication_anonymous_refuses_a_keys_file_too() -> None:
    with pytest.raises(ValidationError, match="unset one of them"):
        GatewaySettings(
            upstreams={"sentiment": "http://a:1"}, authentication="anonymous", api_keys_file="/k"
        )

    settings = GatewaySettings(upstreams={"sentiment": "http://a:1"}, authentication="anonymous")
    assert settings.api_keys_file is None


def test_an_open_gateway_warns_unless_anonymous_was_asked_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.app")

    create_app(GatewaySettings(upstreams={"sentiment": "http://a:1"}))
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.app"]
    assert len(warnings) == 1
    assert "authentication is off" in warnings[0]
    assert "MTC_GATEWAY_AUTHENTICATION=anonymous" in warnings[0]

    caplog.clear()
    create_app(GatewaySettings(upstreams={"sentiment": "http://a:1"}, authentication="anonymous"))
    assert [r for r in caplog.records if r.name == "gateway.app"] == []


def test_requires_at_least_one_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MTC_GATEWAY_UPSTREAMS", raising=False)

    with pytest.raises(ValidationError, match="upstreams"):
        GatewaySettings()
    with pytest.raises(ValidationError, match="at least 1 item"):
        GatewaySettings(upstreams={})


@pytest.mark.parametrize(
    ("upstreams", "message"),
    [
        ({"Sentiment": "http://a:1"}, "task name 'Sentiment' does not match"),
        ({"9lives": "http://a:1"}, "task name '9lives' does not match"),
        ({"a/b": "http://a:1"}, "task name 'a/b' does not match"),
        ({"sentiment": "ftp://a:1"}, "scheme should be 'http' or 'https'"),
        ({"sentiment": "sentiment:8000"}, "scheme should be 'http' or 'https'"),
        ({"sentiment": "http://"}, "empty host"),
        ({"sentiment": "http://a:99999"}, "invalid port number"),
        ({"sentiment": "http://a:1/?x=1"}, "must not have a query"),
        ({"sentiment": []}, "empty list of upstream URLs"),
        ({"sentiment": ["http://a:1", "http://a:1/"]}, "lists the same upstream URL twice"),
        ({"sentiment": ["http://a:1", "a:2"]}, "scheme should be 'http' or 'https'"),
    ],
)
def test_refuses_bad_upstreams(upstreams: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GatewaySettings(upstreams=upstreams)


def test_refuses_timeouts_for_tasks_without_upstream() -> None:
    with pytest.raises(
        ValidationError, match="task_timeouts names tasks with no upstream: sentimnt"
    ):
        GatewaySettings(upstreams={"sentiment": "http://a:1"}, task_timeouts={"sentimnt": 2})


def test_refuses_kinds_for_tasks_without_upstream_or_unknown_kinds() -> None:
    with pytest.raises(ValidationError, match="task_kinds names tasks with no upstream: pse"):
        GatewaySettings(upstreams={"pose": "http://a:1"}, task_kinds={"pse": "image"})
    with pytest.raises(
        ValidationError, match="unknown kind 'video'; known kinds: audio, image, text"
    ):
        GatewaySettings(upstreams={"pose": "http://a:1"}, task_kinds={"pose": "video"})


@pytest.mark.parametrize(
    "override",
    [
        {"task_timeouts": {"sentiment": 0}},
        {"request_timeout_seconds": 0},
        {"connect_timeout_seconds": -1},
        {"max_connections": 0},
        {"max_body_bytes": 0},
        {"port": 70000},
        {"log_level": "verbose"},
        {"retry_attempts": -1},
        {"retry_backoff_seconds": -0.1},
        {"circuit_failure_threshold": 0},
        {"circuit_open_seconds": 0},
        {"rate_limit_per_second": -1},
        {"rate_limit_burst": 0},
        {"redis_timeout_seconds": 0},
        {"api_keys_reload_seconds": 0},
        {"compat_sentiment_task": "Sentiment Analysis"},
        {"upstream_timeout_margin_seconds": 0},
        {"task_max_body_bytes": {"sentiment": 0}},
        {"task_max_body_bytes": {"sentimnt": 1024}},
        {"max_json_body_bytes": 10},
        {"max_texts_per_request": 0},
        {"max_images_per_request": 0},
        {"max_buffered_bytes": 1024, "max_body_bytes": 2048},
    ],
)
def test_refuses_out_of_range_values(override: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(upstreams={"sentiment": "http://a:1"}, **override)


def test_the_gateway_waits_longer_than_the_services_deadline() -> None:
    settings = GatewaySettings(
        upstreams={"sentiment": "http://a:1", "audio": "http://b:1"},
        task_timeouts={"audio": 60},
        upstream_timeout_margin_seconds=4,
    )

    # The configured timeout is the services' own deadline (the deploy manifests set both
    # to the same value); the gateway leaves them the margin to answer first.
    assert settings.timeout_for("sentiment") == 30
    assert settings.upstream_deadline_for("sentiment") == 34
    assert settings.upstream_deadline_for("audio") == 64


def test_body_limits_follow_the_kind_of_task_and_never_pass_the_global_one() -> None:
    settings = GatewaySettings(
        upstreams={"sentiment": "http://a:1", "pose": "http://b:1", "audio": "http://c:1"},
        task_kinds={"pose": "image", "audio": "audio"},
        task_max_body_bytes={"audio": 100 * 1024 * 1024},
        max_body_bytes=32 * 1024 * 1024,
    )

    assert settings.body_limit_for("sentiment") == 20 * 1024 * 1024
    assert settings.body_limit_for("pose") == 32 * 1024 * 1024
    assert settings.body_limit_for("audio") == 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("keys_file", "relay", "relayed"),
    [
        (None, None, True),
        ("/etc/keys", None, False),
        ("/etc/keys", True, True),
        (None, False, False),
    ],
)
def test_timing_headers_are_relayed_only_without_api_keys_unless_set(
    keys_file: str | None, relay: bool | None, relayed: bool
) -> None:
    settings = GatewaySettings(
        upstreams={"sentiment": "http://a:1"}, api_keys_file=keys_file, relay_timing_headers=relay
    )

    assert settings.relays_timing_headers is relayed


def test_every_field_is_documented() -> None:
    undocumented = [
        name for name, field in GatewaySettings.model_fields.items() if not field.description
    ]

    assert undocumented == []
