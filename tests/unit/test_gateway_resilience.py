"""Circuit breakers, replica balancing and retries: the parts on their own with a fake
clock, then the gateway over real HTTP with replicas that are up, down, slow or broken."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.replicas import CircuitBreaker, CircuitState, ReplicaSet
from gateway.settings import GatewaySettings
from tests.support.fake_services import FakeTextService
from tests.support.in_thread_servers import (
    bound_socket,
    connection_breaker,
    served_gateway,
    serving,
    url_of,
)

HANG_GUARD_SECONDS = 15.0


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- circuit breaker


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failure_threshold=3, open_seconds=5, clock=FakeClock())

    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.can_send()

    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.can_send()


def test_open_breaker_lets_one_probe_through_after_the_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, open_seconds=5, clock=clock)
    breaker.record_failure()

    clock.now += 4
    assert breaker.seconds_until_probe() == pytest.approx(1)
    assert not breaker.can_send()
    clock.now += 1
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.can_send()
    breaker.claim()
    assert not breaker.can_send(), "a second request while the probe is out"


def test_failed_probe_opens_the_breaker_again() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, open_seconds=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    breaker.claim()

    breaker.record_failure()

    assert breaker.state is CircuitState.OPEN
    assert breaker.seconds_until_probe() == pytest.approx(5)


def test_successful_probe_closes_the_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, open_seconds=5, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 5
    breaker.claim()

    breaker.record_success()

    assert breaker.state is CircuitState.CLOSED
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED, "the failure count started again"


def test_probe_without_verdict_frees_the_probe_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, open_seconds=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    breaker.claim()

    breaker.release()

    assert breaker.can_send()


# --------------------------------------------------------------------------- replica choice


def _replicas(*urls: str, clock: FakeClock | None = None) -> ReplicaSet:
    return ReplicaSet(urls, lambda: CircuitBreaker(1, 5, clock or FakeClock()))


def test_idle_replicas_take_turns() -> None:
    replicas = _replicas("http://a", "http://b", "http://c")

    chosen = [replicas.choose() for _ in range(6)]

    assert [replica.url for replica in chosen if replica] == [
        "http://a",
        "http://b",
        "http://c",
        "http://a",
        "http://b",
        "http://c",
    ]


def test_the_replica_with_fewest_requests_in_flight_is_chosen() -> None:
    replicas = _replicas("http://a", "http://b")
    replicas.replicas[0].in_flight = 2
    replicas.replicas[1].in_flight = 1

    chosen = [replicas.choose() for _ in range(3)]

    assert {replica.url for replica in chosen if replica} == {"http://b"}


def test_open_circuits_are_skipped_and_none_is_left_when_all_are_open() -> None:
    replicas = _replicas("http://a", "http://b")
    replicas.replicas[0].breaker.record_failure()

    assert {replica.url for replica in (replicas.choose() for _ in range(3)) if replica} == {
        "http://b"
    }
    replicas.replicas[1].breaker.record_failure()
    assert replicas.choose() is None
    assert replicas.seconds_until_probe() == pytest.approx(5)


def test_replicas_not_yet_tried_by_the_request_come_first() -> None:
    replicas = _replicas("http://a", "http://b")

    retry = replicas.choose(tried=["http://a"])
    only_one_left = _replicas("http://a").choose(tried=["http://a"])

    assert retry is not None
    assert retry.url == "http://b"
    assert only_one_left is not None
    assert only_one_left.url == "http://a"


def test_choosing_a_half_open_replica_makes_the_request_its_probe() -> None:
    clock = FakeClock()
    replicas = _replicas("http://a", clock=clock)
    replicas.replicas[0].breaker.record_failure()
    clock.now += 5

    probe = replicas.choose()

    assert probe is not None
    assert replicas.choose() is None, "only one probe at a time"


# --------------------------------------------------------------------------- over HTTP


def _samples(client: httpx.Client, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = client.get("/metrics").text
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


@pytest.fixture(scope="module")
def replica_a() -> FakeTextService:
    return FakeTextService("sentiment")


@pytest.fixture(scope="module")
def replica_b() -> FakeTextService:
    return FakeTextService("sentiment")


@pytest.fixture(scope="module")
def replica_urls(replica_a: FakeTextService, replica_b: FakeTextService) -> Iterator[list[str]]:
    with serving(replica_a.create_app()) as url_a, serving(replica_b.create_app()) as url_b:
        yield [url_a, url_b]


@pytest.fixture
def refused_url() -> Iterator[str]:
    with bound_socket() as sock:
        yield url_of(sock)


def test_idle_replicas_share_the_requests(
    replica_urls: list[str], replica_a: FakeTextService, replica_b: FakeTextService
) -> None:
    before = len(replica_a.predicted), len(replica_b.predicted)
    settings = GatewaySettings(upstreams={"sentiment": replica_urls})

    with served_gateway(settings) as gateway:
        statuses = [
            gateway.post("/v1/sentiment/predict", json={"text": [f"text {n}"]}).status_code
            for n in range(10)
        ]

    assert statuses == [200] * 10
    assert len(replica_a.predicted) - before[0] == 5
    assert len(replica_b.predicted) - before[1] == 5


def test_a_refusing_replica_is_retried_elsewhere_then_left_alone(
    replica_urls: list[str], refused_url: str
) -> None:
    settings = GatewaySettings(
        upstreams={"sentiment": [refused_url, replica_urls[0]]},
        circuit_failure_threshold=2,
        circuit_open_seconds=60,
    )

    with served_gateway(settings) as gateway:
        statuses = [
            gateway.post("/v1/sentiment/predict", json={"text": ["x"]}).status_code
            for _ in range(8)
        ]
        retries = _samples(gateway, "mtc_gateway_upstream_retries_total")
        circuits = _samples(gateway, "mtc_gateway_upstream_circuit_open")

    assert statuses == [200] * 8
    assert retries == {(("task", "sentiment"),): 2.0}, "two refusals opened the circuit"
    # Replicas are named by their position in the task's list, never by their URL.
    assert circuits == {
        (("replica", "0"), ("task", "sentiment")): 1.0,
        (("replica", "1"), ("task", "sentiment")): 0.0,
    }


def test_open_circuit_answers_503_at_once_with_retry_after(refused_url: str) -> None:
    settings = GatewaySettings(
        upstreams={"sentiment": refused_url},
        retry_attempts=0,
        circuit_failure_threshold=2,
        circuit_open_seconds=30,
    )

    with served_gateway(settings) as gateway:
        refused = [gateway.post("/v1/sentiment/predict", json={"text": ["x"]}) for _ in range(2)]
        short_circuited = gateway.post("/v1/sentiment/predict", json={"text": ["x"]})
        errors = _samples(gateway, "mtc_gateway_upstream_errors_total")

    assert [response.json()["detail"] for response in refused] == [
        "the service for task 'sentiment' is unavailable: could not connect to it"
    ] * 2
    assert short_circuited.status_code == 503
    assert short_circuited.json()["error_type"] == "upstream_unavailable"
    assert "circuit open" in short_circuited.json()["detail"]
    assert 1 <= int(short_circuited.headers["retry-after"]) <= 30
    assert errors == {
        (("kind", "connect"), ("task", "sentiment")): 2.0,
        (("kind", "circuit_open"), ("task", "sentiment")): 1.0,
    }


def test_a_service_that_comes_back_is_used_again_after_the_cool_down() -> None:
    returning = FakeTextService("sentiment")
    with bound_socket() as sock:
        settings = GatewaySettings(
            upstreams={"sentiment": url_of(sock)},
            retry_attempts=0,
            circuit_failure_threshold=1,
            circuit_open_seconds=0.2,
        )
        with served_gateway(settings) as gateway:
            down = gateway.post("/v1/sentiment/predict", json={"text": ["x"]})
            with serving(returning.create_app(), sock=sock):
                deadline = time.monotonic() + HANG_GUARD_SECONDS
                while True:
                    answer = gateway.post("/v1/sentiment/predict", json={"text": ["x"]})
                    if answer.status_code == 200 or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                circuits = _samples(gateway, "mtc_gateway_upstream_circuit_open")

    assert down.status_code == 503
    assert answer.status_code == 200
    assert set(circuits.values()) == {0.0}


def test_a_timeout_is_not_retried_on_another_replica() -> None:
    slow = FakeTextService("sentiment", predict_delay_seconds=3.0)
    healthy = FakeTextService("sentiment")
    with serving(slow.create_app()) as slow_url, serving(healthy.create_app()) as healthy_url:
        settings = GatewaySettings(
            upstreams={"sentiment": [slow_url, healthy_url]},
            task_timeouts={"sentiment": 0.2},
            upstream_timeout_margin_seconds=0.1,
        )
        with served_gateway(settings) as gateway:
            response = gateway.post("/v1/sentiment/predict", json={"text": ["x"]})

    assert response.status_code == 504
    assert response.json()["error_type"] == "upstream_timeout"
    assert (len(slow.predicted), len(healthy.predicted)) == (1, 0)


def test_a_broken_connection_is_not_retried_on_another_replica() -> None:
    healthy = FakeTextService("sentiment")
    with connection_breaker() as broken_url, serving(healthy.create_app()) as healthy_url:
        settings = GatewaySettings(upstreams={"sentiment": [broken_url, healthy_url]})
        with served_gateway(settings) as gateway:
            response = gateway.post("/v1/sentiment/predict", json={"text": ["x"]})

    assert response.status_code == 503
    assert "connection broke" in response.json()["detail"]
    assert healthy.predicted == []


def test_retries_stop_after_the_configured_attempts() -> None:
    with bound_socket() as first, bound_socket() as second:
        settings = GatewaySettings(
            upstreams={"sentiment": [url_of(first), url_of(second)]},
            retry_attempts=3,
            circuit_failure_threshold=10,
        )
        with served_gateway(settings) as gateway:
            response = gateway.post("/v1/sentiment/predict", json={"text": ["x"]})
            errors = _samples(gateway, "mtc_gateway_upstream_errors_total")
            retries = _samples(gateway, "mtc_gateway_upstream_retries_total")

    assert response.status_code == 503
    assert errors == {(("kind", "connect"), ("task", "sentiment")): 4.0}
    assert retries == {(("task", "sentiment"),): 3.0}


def test_slow_answers_do_not_open_the_circuit() -> None:
    slow = FakeTextService("sentiment", predict_delay_seconds=2.0)
    with serving(slow.create_app()) as slow_url:
        settings = GatewaySettings(
            upstreams={"sentiment": slow_url},
            task_timeouts={"sentiment": 0.1},
            upstream_timeout_margin_seconds=0.1,
            circuit_failure_threshold=2,
            circuit_open_seconds=60,
        )
        with served_gateway(settings) as gateway:
            answers = [
                gateway.post("/v1/sentiment/predict", json={"text": ["x"]}) for _ in range(4)
            ]
            circuits = _samples(gateway, "mtc_gateway_upstream_circuit_open")

    # Each request waited for the replica (504), none was refused by an open circuit (503).
    assert [answer.json()["error_type"] for answer in answers] == ["upstream_timeout"] * 4
    assert circuits == {(("replica", "0"), ("task", "sentiment")): 0.0}
    assert len(slow.predicted) == 4


def test_error_answers_do_not_open_the_circuit() -> None:
    overloaded = FakeTextService("sentiment")
    with serving(overloaded.create_app()) as url:
        settings = GatewaySettings(
            upstreams={"sentiment": url}, circuit_failure_threshold=2, circuit_open_seconds=60
        )
        with served_gateway(settings) as gateway:
            answers = [
                gateway.post("/v1/sentiment/predict", json={"text": ["overload me"]})
                for _ in range(4)
            ]

    assert [answer.status_code for answer in answers] == [429] * 4


def test_a_service_at_its_deadline_answers_before_the_gateway_gives_up() -> None:
    """Both deadlines are configured equal (as the deploy manifests do): the service's own
    504 still reaches the client, because the gateway waits a margin longer."""
    deadline = 0.5
    service = FakeTextService("sentiment", predict_delay_seconds=deadline, timeout_answer=True)
    with serving(service.create_app()) as url:
        settings = GatewaySettings(
            upstreams={"sentiment": url},
            task_timeouts={"sentiment": deadline},
            upstream_timeout_margin_seconds=2.0,
        )
        with served_gateway(settings) as gateway:
            answer = gateway.post("/v1/sentiment/predict", json={"text": ["x"]})

    assert answer.status_code == 504
    assert answer.json()["error_type"] == "timeout", "the service's answer, not the gateway's"
