"""How the local stack lays out its processes: replicas, ports and the gateway's settings
(the processes themselves run in tests/e2e)."""

from __future__ import annotations

import json

import pytest

from gateway.local_stack import (
    POSE_SERVICE,
    TEXT_SERVICE,
    banner,
    gateway_environment,
    parse_args,
    plan_services,
    replica_counts,
)
from gateway.settings import GatewaySettings

MODELS = {
    "sentiment": (TEXT_SERVICE, "/models/sentiment"),
    "pose": (POSE_SERVICE, "/models/pose"),
}


def test_every_task_has_one_replica_unless_told() -> None:
    assert replica_counts([], ["sentiment", "pose"]) == {"sentiment": 1, "pose": 1}
    assert replica_counts(["sentiment=3"], ["sentiment", "pose"]) == {"sentiment": 3, "pose": 1}


@pytest.mark.parametrize("option", ["sentiment", "sentiment=0", "sentiment=two", "weather=2"])
def test_bad_replica_options_stop_with_a_message(option: str) -> None:
    with pytest.raises(SystemExit, match="--replicas expects TASK=N"):
        replica_counts([option], ["sentiment", "pose"])


def test_replicas_take_consecutive_ports_in_task_order() -> None:
    services = plan_services(MODELS, {"sentiment": 2}, first_port=8101)

    assert [(service.name, service.port) for service in services] == [
        ("sentiment service (replica 1 of 2)", 8101),
        ("sentiment service (replica 2 of 2)", 8102),
        ("pose service", 8103),
    ]
    assert {service.model_uri for service in services[:2]} == {"/models/sentiment"}


def test_gateway_gets_every_replica_and_the_kind_of_image_tasks() -> None:
    services = plan_services(MODELS, {"sentiment": 2}, first_port=8101)

    env = gateway_environment(services, "127.0.0.1", 8080)

    assert json.loads(env["MTC_GATEWAY_UPSTREAMS"]) == {
        "sentiment": ["http://127.0.0.1:8101", "http://127.0.0.1:8102"],
        "pose": ["http://127.0.0.1:8103"],
    }
    assert json.loads(env["MTC_GATEWAY_TASK_KINDS"]) == {"pose": "image"}
    settings = GatewaySettings(
        upstreams=json.loads(env["MTC_GATEWAY_UPSTREAMS"]),
        task_kinds=json.loads(env["MTC_GATEWAY_TASK_KINDS"]),
    )
    assert settings.kind_of("pose") == "image"


def test_replicas_option_is_repeatable() -> None:
    args = parse_args(["--replicas", "sentiment=2", "--replicas", "pose=2"])

    assert args.replicas == ["sentiment=2", "pose=2"]


def test_banner_points_at_the_web_page() -> None:
    text = banner("http://127.0.0.1:8080", MODELS)

    assert "web page:  http://127.0.0.1:8080/ui" in text
