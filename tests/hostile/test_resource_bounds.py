"""What a hostile body costs: sent through a real gateway to a real text service, each
attack must be refused in the documented shape, quickly, and without the process that
reads it growing by more than a stated bound.

The stack runs as processes on 127.0.0.1 and free ports: redis-server, the text service
(`python -m services.text`, tiny random BERT), the gateway (`python -m gateway`, with
`/v1/jobs` on) and a jobs worker. Every JSON route the gateway serves for the sentiment
task is attacked: the forwarded `/v1/sentiment/predict` (the service parses it) and the
routes whose bodies the gateway parses itself (`/project/bulk-predict`,
`/api/v1/sentiment_analysis`, `/v1/jobs`).

Cost of one attack, per process: the peak of its resident memory above its level before
the attack (the kernel's high-water mark `VmHWM`, reset through `/proc/<pid>/clear_refs`
before each attack; `tests.support.process_memory`), and the wall time of the request.
These are resource bounds, the one place where the suite asserts figures: each bound is
several times what was measured on a 2-core machine (see tests/README.md), so a loaded CI
machine stays well inside it while a regression (an unbounded parse, a body buffered many
times) does not. After every attack, each process must settle back within 10 % of its
resident memory after warm-up (see `ALLOCATOR_ENV` for why that is a fair test).
`pytest -s` prints what each attack cost.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_processes import free_ports
from tests.support.jobs import jobs_env, start_jobs_worker, wait_for_job
from tests.support.process_memory import peak_growth, rss_mib
from tests.support.processes import start, start_redis, stop, wait_for_http

MIB = 1024 * 1024

ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
"""glibc keeps memory a process freed for reuse, and after a large block is freed it keeps
the next ones too (its threshold for handing blocks back to the system grows to their
size): one attack's leftovers would then hide the next one's cost, and a process would not
settle back after the attacks even without a leak. Fixed thresholds make glibc give back
blocks over 128 KiB, so each measured growth is the attack's own and the settle check can
tell a leak from the allocator's reserve."""

HOSTILE_BYTES = 1_000_000
"""Size of the hostile bodies: 1 MB."""

TEXT_BODY_LIMIT = 20 * MIB
"""The text service's documented `MTC_MAX_BODY_BYTES` (and the gateway's limit for a
text task and for the JSON it parses itself)."""

CONCURRENT = 20
"""Copies of an attack sent at once."""

# Bounds, each several times the figure measured on a 2-core machine (tests/README.md).
MAX_GROWTH_MIB = 20.0
"""Peak memory growth of any process from one 1 MB hostile body."""
MAX_SECONDS = 1.0
"""Wall time of one 1 MB hostile request, refusal included."""
MAX_CONCURRENT_GROWTH_MIB = 80.0
"""Peak memory growth of any process from 20 copies of a 1 MB hostile body at once."""
MAX_CONCURRENT_SECONDS = 5.0
"""Wall time until all 20 concurrent copies are answered."""
MAX_AT_LIMIT_GROWTH_MIB = 120.0
"""Peak memory growth from one body of exactly the documented limit (20 MiB): reading it
costs about twice its size, parsing it (refused) nothing more."""
MAX_AT_LIMIT_SECONDS = 3.0
"""Wall time of one body of exactly the documented limit."""
MAX_CONCURRENT_AT_LIMIT_GROWTH_MIB = 600.0
"""Peak memory growth from 20 bodies of the limit at once: what the gateway may hold
(`MTC_GATEWAY_MAX_BUFFERED_BYTES`, 128 MiB) and the copy sending makes of each, with room;
without the budget the gateway would hold all 20, some 800 MiB."""
MAX_CONCURRENT_AT_LIMIT_SECONDS = 20.0
"""Wall time until all 20 are answered (most of it the client sending 400 MiB)."""
MAX_SETTLED_RSS_RATIO = 1.10
"""After every attack, each process's resident memory is within 10 % of what it was
after warm-up (the allocator may keep some freed memory; more would be a leak)."""


@dataclass(frozen=True)
class JsonRoute:
    """A JSON route of the gateway and how its body holds a list of texts."""

    path: str
    prefix: bytes
    suffix: bytes

    def body(self, list_content: bytes) -> bytes:
        """The route's body with `list_content` between the brackets of its list."""
        return self.prefix + list_content + self.suffix


ROUTES = {
    "predict": JsonRoute("/v1/sentiment/predict", b'{"text": [', b"]}"),
    "bulk-predict": JsonRoute("/project/bulk-predict", b'{"text": [', b"]}"),
    "sentiment-analysis": JsonRoute("/api/v1/sentiment_analysis", b'{"text": [', b"]}"),
    "jobs": JsonRoute("/v1/jobs", b'{"task": "sentiment", "inputs": [', b"]}"),
}

CONTENT_TYPES = {
    "none": None,
    "text-plain": "text/plain",
    "json": "application/json",
    "form-urlencoded": "application/x-www-form-urlencoded",
    "multipart-bogus-boundary": "multipart/form-data; boundary=bogus",
}


def int_list(route: JsonRoute, size: int = HOSTILE_BYTES) -> bytes:
    """The route's body with its list filled by `1,1,1,...` up to `size` bytes."""
    count = (size - len(route.prefix) - len(route.suffix) + 1) // 2
    body = route.body(b",".join([b"1"] * count))
    # Pad with spaces (insignificant in JSON) to exactly `size` bytes.
    return body[:-1] + b" " * (size - len(body)) + body[-1:]


def invalid_utf8(route: JsonRoute) -> bytes:
    """1 MB that starts like the route's JSON but holds bytes that are not UTF-8."""
    filler = b"\xc0\xaf\xff\xfe" * (HOSTILE_BYTES // 4)
    return route.body(b'"' + filler + b'"')


def deep_nesting(route: JsonRoute, depth: int = 100_000) -> bytes:
    """The route's list holding lists nested `depth` deep."""
    return route.body(b"[" * depth + b"]" * depth)


def unterminated_escapes(route: JsonRoute) -> bytes:
    """5,000 commas, then a string of escaped quotes that never closes: 1 MB."""
    return route.prefix + b"," * 5000 + b'"' + b'\\"' * ((HOSTILE_BYTES - 5000) // 2)


@dataclass
class Stack:
    """The running processes and where they listen."""

    gateway_url: str
    pids: dict[str, int]
    settled_rss: dict[str, float] = field(default_factory=dict)
    costs: list[str] = field(default_factory=list)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.gateway_url, timeout=httpx.Timeout(60.0))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("resource-bounds")
    redis_port, service_port, gateway_port, metrics_port = free_ports(4)
    service_url = f"http://127.0.0.1:{service_port}"
    jobs = jobs_env(
        broker_url=f"redis://127.0.0.1:{redis_port}/0",
        upstreams={"sentiment": service_url},
        metrics_port=metrics_port,
        metrics_host="127.0.0.1",
    )
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        processes["redis"] = start_redis(redis_port)
        processes["service"] = start(
            [sys.executable, "-m", "services.text"],
            env={
                "MTC_TASK": "sentiment",
                "MTC_MODEL_URI": str(tiny_model_dir),
                "MTC_HOST": "127.0.0.1",
                "MTC_PORT": str(service_port),
                "MTC_TORCH_THREADS": "1",
                "MTC_INFERENCE_WORKERS": "1",
                **ALLOCATOR_ENV,
            },
            log=logs / "service.log",
        )
        wait_for_http(f"{service_url}/health/ready", processes["service"], timeout=180)
        processes["gateway"] = start(
            [sys.executable, "-m", "gateway"],
            env={
                "MTC_GATEWAY_HOST": "127.0.0.1",
                "MTC_GATEWAY_PORT": str(gateway_port),
                "MTC_GATEWAY_UPSTREAMS": json.dumps({"sentiment": service_url}),
                **jobs,
                **ALLOCATOR_ENV,
            },
            log=logs / "gateway.log",
        )
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        wait_for_http(f"{gateway_url}/health/ready", processes["gateway"], timeout=60)
        processes["worker"] = start_jobs_worker(jobs, logs / "worker.log")
        stack = Stack(
            gateway_url,
            {"gateway": processes["gateway"].pid, "service": processes["service"].pid},
        )
        warm_up(stack)
        yield stack
        print("\n".join(["", "cost of each attack:", *stack.costs]))
    finally:
        for process in reversed(list(processes.values())):
            stop(process)


def warm_up(stack: Stack) -> None:
    """Every route answers a valid body and each kind of attack once, so imports, caches
    and first-use allocations are behind us; then the level every process settles at."""
    with stack.client() as client:
        for route in ROUTES.values():
            response = client.post(route.path, content=route.body(b'"a fine film"'))
            assert response.status_code in (200, 202), (route.path, response.text[:300])
            attacks = (int_list, invalid_utf8, deep_nesting, unterminated_escapes)
            for make_body in attacks:
                client.post(route.path, content=make_body(route))
        job = client.post("/v1/jobs", json={"task": "sentiment", "inputs": ["a", "b"]})
        assert wait_for_job(client, job.json()["id"])["state"] == "succeeded"
    time.sleep(1.0)
    stack.settled_rss = {name: rss_mib(pid) for name, pid in stack.pids.items()}


@dataclass(frozen=True)
class Cost:
    """What one attack cost: seconds of wall time, MiB of peak growth per process."""

    seconds: float
    growth: dict[str, float]


def attack(
    stack: Stack, name: str, send: Callable[[httpx.Client], list[httpx.Response]]
) -> tuple[list[httpx.Response], Cost]:
    """Run `send` and measure it."""
    names = list(stack.pids)
    with stack.client() as client, peak_growth([stack.pids[n] for n in names]) as peak:
        started = time.monotonic()
        responses = send(client)
        seconds = time.monotonic() - started
    growth = {n: peak.growth[stack.pids[n]] for n in names}
    cost = Cost(seconds, growth)
    statuses = sorted({response.status_code for response in responses})
    line = (
        f"  {name:60} {seconds:6.3f} s  "
        + "  ".join(f"{n} +{g:6.1f} MiB" for n, g in growth.items())
        + f"  {statuses}"
    )
    stack.costs.append(line)
    return responses, cost


def once(path: str, body: bytes, content_type: str | None) -> Callable[..., list[httpx.Response]]:
    headers = {"content-type": content_type} if content_type else {}
    return lambda client: [client.post(path, content=body, headers=headers)]


def concurrently(
    path: str, body: bytes, content_type: str | None
) -> Callable[..., list[httpx.Response]]:
    headers = {"content-type": content_type} if content_type else {}

    def send(client: httpx.Client) -> list[httpx.Response]:
        with ThreadPoolExecutor(CONCURRENT) as pool:
            futures = [
                pool.submit(client.post, path, content=body, headers=headers)
                for _ in range(CONCURRENT)
            ]
            return [future.result() for future in futures]

    return send


def assert_refused(response: httpx.Response, statuses: set[int], error_types: set[str]) -> None:
    """A refusal with one of `statuses`, in the documented shape."""
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    body = response.json()
    if response.status_code == 422 and isinstance(body.get("detail"), list):
        assert all({"loc", "msg", "type"} <= set(issue) for issue in body["detail"])
        assert "validation" in error_types
    else:
        assert set(body) == {"detail", "error_type"}, body
        assert body["error_type"] in error_types, body


def assert_within(cost: Cost, seconds: float, growth_mib: float) -> None:
    assert cost.seconds < seconds, cost
    for process, growth in cost.growth.items():
        assert growth < growth_mib, (process, cost)


# --------------------------------------------------------------------------- the attacks
# In file order: the one-off attacks, then 20 at once, then bodies at the size limit, then
# the settle check (which needs every attack behind it).

TOO_MANY = ({413}, {"batch_too_large", "body_too_large"})
UNREADABLE = ({400, 422}, {"invalid_input", "validation"})
WRONG_TYPE = ({415}, {"unsupported_media_type"})


@pytest.mark.parametrize("route_name", sorted(ROUTES))
def test_a_megabyte_list_of_integers_is_refused_cheaply(stack: Stack, route_name: str) -> None:
    route = ROUTES[route_name]
    (response,), cost = attack(
        stack, f"{route_name}: 1 MB list of ints", once(route.path, int_list(route), None)
    )
    assert_refused(response, *TOO_MANY)
    assert_within(cost, MAX_SECONDS, MAX_GROWTH_MIB)


@pytest.mark.parametrize("content_type", sorted(CONTENT_TYPES))
@pytest.mark.parametrize("route_name", sorted(ROUTES))
def test_a_megabyte_of_invalid_utf8_is_refused_cheaply(
    stack: Stack, route_name: str, content_type: str
) -> None:
    route = ROUTES[route_name]
    header = CONTENT_TYPES[content_type]
    (response,), cost = attack(
        stack,
        f"{route_name}: 1 MB invalid UTF-8 as {content_type}",
        once(route.path, invalid_utf8(route), header),
    )
    if header in (None, "application/json"):
        assert_refused(response, *UNREADABLE)
    else:
        assert_refused(response, *WRONG_TYPE)
    assert_within(cost, MAX_SECONDS, MAX_GROWTH_MIB)


@pytest.mark.parametrize("route_name", sorted(ROUTES))
def test_nesting_100000_deep_is_refused_cheaply(stack: Stack, route_name: str) -> None:
    route = ROUTES[route_name]
    (response,), cost = attack(
        stack, f"{route_name}: nested 100,000 deep", once(route.path, deep_nesting(route), None)
    )
    assert_refused(response, *TOO_MANY)
    assert_within(cost, MAX_SECONDS, MAX_GROWTH_MIB)


@pytest.mark.parametrize("route_name", sorted(ROUTES))
def test_an_unterminated_string_of_escapes_is_refused_cheaply(
    stack: Stack, route_name: str
) -> None:
    """Commas enough to need a closer look, then 1 MB of `\\"` that never closes: a
    string search that retried from every quote would take minutes."""
    route = ROUTES[route_name]
    (response,), cost = attack(
        stack,
        f"{route_name}: 1 MB unterminated escapes",
        once(route.path, unterminated_escapes(route), None),
    )
    assert_refused(response, *TOO_MANY)
    assert_within(cost, MAX_SECONDS, MAX_GROWTH_MIB)


HUGE_NUMBERS = {"1e999999": b"1e999999", "5000-digit-integer": b"9" * 5000}


@pytest.mark.parametrize("number", sorted(HUGE_NUMBERS))
@pytest.mark.parametrize("route_name", sorted(ROUTES))
def test_huge_numbers_are_refused(stack: Stack, route_name: str, number: str) -> None:
    route = ROUTES[route_name]
    (response,), cost = attack(
        stack,
        f"{route_name}: {number}",
        once(route.path, route.body(HUGE_NUMBERS[number]), "application/json"),
    )
    assert_refused(response, *UNREADABLE)
    assert_within(cost, MAX_SECONDS, MAX_GROWTH_MIB)


CONCURRENT_ATTACKS: dict[str, tuple[Callable[[JsonRoute], bytes], str | None]] = {
    "ints": (int_list, None),
    "invalid-utf8-json": (invalid_utf8, "application/json"),
    "invalid-utf8-multipart": (invalid_utf8, "multipart/form-data; boundary=bogus"),
    "deep-nesting": (deep_nesting, None),
    "unterminated-escapes": (unterminated_escapes, None),
}


@pytest.mark.parametrize("kind", sorted(CONCURRENT_ATTACKS))
@pytest.mark.parametrize("route_name", sorted(ROUTES))
def test_twenty_at_once_stay_within_bounds(stack: Stack, route_name: str, kind: str) -> None:
    route = ROUTES[route_name]
    make_body, header = CONCURRENT_ATTACKS[kind]
    responses, cost = attack(
        stack,
        f"{route_name}: {CONCURRENT} x {kind}",
        concurrently(route.path, make_body(route), header),
    )
    for response in responses:
        assert_refused(
            response,
            {400, 413, 415, 422},
            {
                "batch_too_large",
                "body_too_large",
                "invalid_input",
                "unsupported_media_type",
                "validation",
            },
        )
    assert_within(cost, MAX_CONCURRENT_SECONDS, MAX_CONCURRENT_GROWTH_MIB)


@pytest.mark.parametrize("route_name", sorted(ROUTES))
def test_a_body_of_exactly_the_limit_costs_a_bounded_amount(stack: Stack, route_name: str) -> None:
    route = ROUTES[route_name]
    (at_limit,), cost = attack(
        stack,
        f"{route_name}: ints, exactly {TEXT_BODY_LIMIT} bytes",
        once(route.path, int_list(route, TEXT_BODY_LIMIT), None),
    )
    (over_limit,), over_cost = attack(
        stack,
        f"{route_name}: ints, {TEXT_BODY_LIMIT + 1} bytes",
        once(route.path, int_list(route, TEXT_BODY_LIMIT + 1), None),
    )
    assert_refused(at_limit, *TOO_MANY)
    assert_refused(over_limit, {413}, {"body_too_large"})
    assert_within(cost, MAX_AT_LIMIT_SECONDS, MAX_AT_LIMIT_GROWTH_MIB)
    assert_within(over_cost, MAX_AT_LIMIT_SECONDS, MAX_AT_LIMIT_GROWTH_MIB)


def test_twenty_bodies_at_the_limit_at_once_stay_within_the_buffer_budget(stack: Stack) -> None:
    """20 x 20 MiB is more than the gateway may hold (128 MiB): the ones past the budget
    get 429 at once, unread, and no process grows by more than the budget allows."""
    route = ROUTES["predict"]
    responses, cost = attack(
        stack,
        f"predict: {CONCURRENT} x ints, exactly {TEXT_BODY_LIMIT} bytes",
        concurrently(route.path, int_list(route, TEXT_BODY_LIMIT), None),
    )
    statuses = [response.status_code for response in responses]
    for response in responses:
        assert_refused(response, {413, 429}, {"batch_too_large", "overloaded"})
    assert statuses.count(429) > 0, statuses
    assert_within(cost, MAX_CONCURRENT_AT_LIMIT_SECONDS, MAX_CONCURRENT_AT_LIMIT_GROWTH_MIB)


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
