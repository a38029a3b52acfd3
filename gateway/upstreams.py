"""The model services behind the gateway, reached over one pooled HTTP client.

Each task has one or more replica URLs (`gateway.replicas`). A forwarded request goes to
the replica with the fewest requests in flight whose circuit is closed; a connection that
cannot be opened (nothing was sent, so trying again is safe) is retried on another replica
after a jittered back-off, within the task's timeout. Anything a service may have received
is never sent twice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from pydantic import ValidationError
from yarl import URL

from gateway.metrics import GatewayMetrics, UpstreamErrorKind
from gateway.replicas import CircuitBreaker, Replica, ReplicaSet
from gateway.request_context import REQUEST_ID_HEADER, current_request
from gateway.schemas import ModelsResponse, ModelStatus
from gateway.settings import GatewaySettings
from services.core.errors import BodyTooLarge, UnknownTask, UpstreamTimeout, UpstreamUnavailable
from services.wire.s3_locations import S3_SCOPE_HEADER

logger = logging.getLogger(__name__)

# Below uvicorn's 5 s keep-alive, so the gateway drops an idle connection before the service
# does; reusing one the service is closing fails the request with a protocol error.
KEEPALIVE_EXPIRY_SECONDS = 4.0

# Headers of a service's answer that clients read (back-off, the methods a 405 allows, where
# an Open Inference answer's binary tensors start, the model version that answered), and its
# timings for load tests, relayed when `relays_timing_headers` says so.
MODEL_VERSION_HEADER = "x-model-version"
RELAYED_HEADERS = (
    "content-type",
    "retry-after",
    "allow",
    "inference-header-content-length",
    MODEL_VERSION_HEADER,
)
TIMING_HEADERS = ("x-inference-time", "x-queue-time")

EXPECT_CONTINUE_BYTES = 1024 * 1024
"""Bodies larger than this are sent with `Expect: 100-continue`: the service answers a body
it refuses from its headers alone (413 too large, 503 not ready...) before a byte of it is
sent, instead of closing a connection the gateway is still writing to (which could lose
that answer). Smaller bodies are sent at once, as the wait costs a round trip."""


@asynccontextmanager
async def create_http_client(settings: GatewaySettings) -> AsyncIterator[aiohttp.ClientSession]:
    """The one connection pool shared by every forwarded request, closed on exit.

    aiohttp rather than httpx: forwarding is the gateway's hot path, and httpx's pool cost
    about two thirds of the gateway's CPU per forwarded request."""
    connector = aiohttp.TCPConnector(
        limit=settings.max_connections,
        limit_per_host=0,
        keepalive_timeout=KEEPALIVE_EXPIRY_SECONDS,
        # Service names are resolved by the cluster DNS, which may move them: no DNS cache.
        use_dns_cache=False,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        # Service URLs are internal; a proxy taken from the environment would only misroute.
        trust_env=False,
        # Nothing is asked for but the answer itself (no compression, no client banner).
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        auto_decompress=False,
        raise_for_status=False,
        timeout=aiohttp.ClientTimeout(
            total=max(settings.upstream_deadline_for(task) for task in settings.tasks),
            sock_connect=settings.connect_timeout_seconds,
        ),
    )
    try:
        yield session
    finally:
        await session.close()


@dataclass(frozen=True)
class UpstreamAnswer:
    """A service's answer (any status)."""

    status_code: int
    content: bytes
    headers: dict[str, str]
    """The relayed headers only (see `RELAYED_HEADERS`)."""
    elapsed_seconds: float
    """Time from the first attempt to the answer, retries included."""


def build_replica_sets(
    settings: GatewaySettings, clock: Callable[[], float] = time.monotonic
) -> dict[str, ReplicaSet]:
    """Task -> its replicas, each URL with a circuit breaker configured by `settings`, and
    its share of the traffic when `upstream_weights` weighs the task."""
    return {
        task: ReplicaSet(
            urls,
            lambda: CircuitBreaker(
                settings.circuit_failure_threshold, settings.circuit_open_seconds, clock
            ),
            weights=settings.upstream_weights.get(task),
        )
        for task, urls in settings.upstreams.items()
    }


def body_too_large(task: str, limit: int) -> BodyTooLarge:
    """413 for a body over the task's limit: the service would refuse it too, so the gateway
    does, without forwarding a byte."""
    return BodyTooLarge.over(
        limit, f", the limit for task '{task}' (MTC_GATEWAY_TASK_MAX_BODY_BYTES)"
    )


class Upstreams:
    """Forwards requests to the service replicas of each task and collects their status.

    Failures to reach a service become `UpstreamUnavailable` (503) or `UpstreamTimeout`
    (504) naming the task; the service address and low-level cause go to the log only.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        client: aiohttp.ClientSession,
        metrics: GatewayMetrics,
        replica_sets: dict[str, ReplicaSet],
    ) -> None:
        self._settings = settings
        self._client = client
        self._in_flight = 0
        """Requests sent or waiting for a connection, all replicas together."""
        self._metrics = metrics
        self.replica_sets = replica_sets
        self._relayed_headers = RELAYED_HEADERS + (
            TIMING_HEADERS if settings.relays_timing_headers else ()
        )

    @property
    def tasks(self) -> list[str]:
        """Configured task names, in configuration order."""
        return self._settings.tasks

    def check_task(self, task: str) -> None:
        """Raise `UnknownTask` (404, listing the known tasks) if no service serves `task`."""
        if task not in self.replica_sets:
            known = ", ".join(sorted(self.replica_sets))
            raise UnknownTask(f"unknown task '{task}'; known tasks: {known}")

    async def forward(
        self,
        task: str,
        path: str,
        *,
        method: str = "POST",
        body: bytes | bytearray = b"",
        content_type: str | None = None,
        query: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamAnswer:
        """Send a request, as received, to a replica of the task's service.

        `path` is the path on the service (e.g. `/v1/sentiment/predict`). The client's
        Content-Type is kept (multipart uploads need their boundary); a body without one is
        declared JSON. `headers` are other client headers the service reads (the caller
        chooses them; nothing else of the client's goes on). Any answer of the service,
        including its 4xx/5xx errors, is returned.
        """
        self.check_task(task)
        limit = self._settings.body_limit_for(task)
        if len(body) > limit:
            raise body_too_large(task, limit)
        replica_set = self.replica_sets[task]
        # Longer than the service's own deadline, so a slow model is the service's 504.
        timeout_seconds = self._settings.upstream_deadline_for(task)
        started = time.monotonic()
        deadline = started + timeout_seconds
        # Clients may omit it; older clients send JSON without declaring it.
        # The gateway's own headers (request id, S3 scope) win over any the caller passes.
        forwarded_headers = {
            **(headers or {}),
            **self._forwarded_headers(
                content_type or ("application/json" if method == "POST" else None)
            ),
        }
        tried: list[str] = []
        while True:
            replica = replica_set.choose(tried)
            if replica is None:
                raise self._circuit_open(task, replica_set)
            tried.append(replica.url)
            remaining = max(deadline - time.monotonic(), 0.001)
            # The query string goes on as the client sent it (no re-encoding).
            url = URL(f"{replica.url}{path}" + (f"?{query}" if query else ""), encoded=True)
            pool_was_full = self._in_flight >= self._settings.max_connections
            try:
                status, content, relayed = await self._send(
                    task, replica, method, url, body, forwarded_headers, remaining
                )
            except _ConnectionNotOpened as failure:
                retries_done = len(tried) - 1
                delay = self._backoff(retries_done + 1)
                if retries_done >= self._settings.retry_attempts or (
                    time.monotonic() + delay >= deadline
                ):
                    raise UpstreamUnavailable(
                        f"the service for task '{task}' is unavailable: could not connect to it"
                    ) from failure.__cause__
                self._metrics.observe_retry(task)
                await asyncio.sleep(delay)
                continue
            except TimeoutError as error:
                self._record_failure(task, url, "timeout", error)
                if pool_was_full:
                    raise UpstreamTimeout(
                        f"no connection to the service for task '{task}' became free within "
                        f"{timeout_seconds:g} seconds (gateway at its connection limit)"
                    ) from error
                raise UpstreamTimeout(
                    f"the service for task '{task}' did not answer within "
                    f"{timeout_seconds:g} seconds"
                ) from error
            except aiohttp.ClientError as error:
                self._record_failure(task, url, "protocol", error)
                raise UpstreamUnavailable(
                    f"the service for task '{task}' is unavailable: the connection broke "
                    "before it answered"
                ) from error
            context = current_request()
            if context is not None:
                context.upstream = replica.url
            self._metrics.observe_model_answer(task, relayed.get(MODEL_VERSION_HEADER), status)
            return UpstreamAnswer(
                status_code=status,
                content=content,
                headers=relayed,
                elapsed_seconds=time.monotonic() - started,
            )

    async def _send(
        self,
        task: str,
        replica: Replica,
        method: str,
        url: URL,
        body: bytes | bytearray,
        headers: dict[str, str],
        timeout_seconds: float,
    ) -> tuple[int, bytes, dict[str, str]]:
        """One attempt on one replica, keeping its breaker and in-flight counts up to date;
        returns the status, the body and the relayed headers.

        Only a failure to reach the replica (no connection, a broken one) counts against
        its breaker. A timeout does not: it says the request was slow (a long batch, a
        loaded model), which one tenant can cause for all; the replica stays in use and
        the request gets 504. Any answer, error statuses included, is a success."""
        timeout = aiohttp.ClientTimeout(
            total=timeout_seconds,
            sock_connect=min(self._settings.connect_timeout_seconds, timeout_seconds),
        )
        replica.in_flight += 1
        self._in_flight += 1
        verdict_given = False
        try:
            async with self._client.request(
                method,
                url,
                data=body or None,
                headers=headers,
                timeout=timeout,
                expect100=len(body) > EXPECT_CONTINUE_BYTES,
            ) as response:
                content = await response.read()
                relayed = {
                    name: value
                    for name in self._relayed_headers
                    if (value := response.headers.get(name))
                }
                status = response.status
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            # Nothing reached the service: safe to try again.
            replica.breaker.record_failure()
            verdict_given = True
            self._record_failure(task, str(url), "connect", error)
            raise _ConnectionNotOpened from error
        except TimeoutError:
            # Slow, not unreachable: no verdict (the `finally` frees a probe slot).
            raise
        except aiohttp.ClientError:
            replica.breaker.record_failure()
            verdict_given = True
            raise
        else:
            replica.breaker.record_success()
            verdict_given = True
            return status, content, relayed
        finally:
            replica.in_flight -= 1
            self._in_flight -= 1
            if not verdict_given:
                replica.breaker.release()

    def _forwarded_headers(self, content_type: str | None) -> dict[str, str]:
        # Built here from nothing: the client's API key never leaves the gateway, and a
        # client's own S3 scope header never reaches a service.
        headers: dict[str, str] = {}
        if content_type is not None:
            headers["content-type"] = content_type
        context = current_request()
        if context is not None:
            headers[REQUEST_ID_HEADER] = context.request_id
            if context.s3_scope is not None:
                # The service checks S3 URIs against it, on every route: the gateway need
                # not parse the bodies of the routes that name objects, nor know which
                # those are. Services accept traffic from the gateway and workers only.
                headers[S3_SCOPE_HEADER] = context.s3_scope.to_json()
        return headers

    def _backoff(self, retry_number: int) -> float:
        """Full jitter: uniform in [0, base x 2^(n-1)]."""
        ceiling = self._settings.retry_backoff_seconds * 2 ** (retry_number - 1)
        return random.uniform(0, ceiling)  # spreads retries; not a secret

    def _circuit_open(self, task: str, replica_set: ReplicaSet) -> UpstreamUnavailable:
        wait = max(1, math.ceil(replica_set.seconds_until_probe()))
        self._metrics.observe_upstream_error(task, "circuit_open")
        return UpstreamUnavailable(
            f"the service for task '{task}' is unavailable: it failed repeatedly, so the "
            f"gateway stopped sending it requests for a while (circuit open); retry in {wait} s",
            headers={"retry-after": str(wait)},
        )

    async def model_statuses(self, tasks: Sequence[str] | None = None) -> list[ModelStatus]:
        """The status of the given tasks (default: all, in configuration order), asking
        each distinct service URL once, all together. A task is ready when at least one of
        its replicas in service is (a URL of weight 0 is neither asked nor counted)."""
        wanted = list(tasks) if tasks is not None else self.tasks
        tasks_by_url: dict[str, list[str]] = {}
        for task in wanted:
            self.check_task(task)
            for url in self._urls_in_service(task):
                tasks_by_url.setdefault(url, []).append(task)
        urls = list(tasks_by_url)
        answers = await asyncio.gather(
            *(self._statuses_from(url, tasks_by_url[url]) for url in urls)
        )
        by_url_and_task = {
            (url, status.task): status
            for url, answer in zip(urls, answers, strict=True)
            for status in answer
        }
        return [
            self._merge_replicas(
                task,
                [by_url_and_task[(url, task)] for url in self._urls_in_service(task)],
            )
            for task in wanted
        ]

    def _urls_in_service(self, task: str) -> list[str]:
        """The task's URLs that may get traffic: all but those of weight 0."""
        weights = self._settings.upstream_weights.get(task, {})
        return [url for url in self._settings.upstreams[task] if weights.get(url, 1) > 0]

    def _merge_replicas(self, task: str, statuses: list[ModelStatus]) -> ModelStatus:
        ready = [status for status in statuses if status.ready]
        chosen = (ready or statuses)[0]
        return chosen.model_copy(
            update={
                "kind": self._settings.kind_of(task),
                "replicas": len(statuses),
                "replicas_ready": len(ready),
            }
        )

    async def _statuses_from(self, base_url: str, tasks: list[str]) -> list[ModelStatus]:
        timeout = self._settings.status_timeout_seconds
        # Failures are not logged: the answer carries the reason, and probes repeat every few s.
        try:
            async with self._client.get(
                f"{base_url}/v1/models", timeout=aiohttp.ClientTimeout(total=timeout)
            ) as answer:
                status_code = answer.status
                content = await answer.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
            return [_unreachable(task, "could not connect to the service") for task in tasks]
        except TimeoutError:
            reason = f"no status answer within {timeout:g} seconds"
            return [_unreachable(task, reason) for task in tasks]
        except aiohttp.ClientError:
            reason = "the connection to the service broke before it answered"
            return [_unreachable(task, reason) for task in tasks]
        if status_code != 200:
            reason = f"the service answered /v1/models with HTTP {status_code}"
            return [_unreachable(task, reason) for task in tasks]
        try:
            listed = ModelsResponse.model_validate_json(content)
        except ValidationError:
            logger.warning("invalid /v1/models answer from %s: %.200r", base_url, content)
            reason = "the service's /v1/models answer is not valid"
            return [_unreachable(task, reason) for task in tasks]
        by_task = {status.task: status for status in listed.models}
        return [
            by_task.get(task) or _unreachable(task, f"the service does not list task '{task}'")
            for task in tasks
        ]

    def _record_failure(
        self, task: str, url: str | URL, kind: UpstreamErrorKind, error: BaseException
    ) -> None:
        self._metrics.observe_upstream_error(task, kind)
        logger.warning("forwarding to %s failed (%s): %r", url, kind, error)


class _ConnectionNotOpened(Exception):
    """An attempt failed before anything was sent (the cause is the aiohttp error)."""


def _unreachable(task: str, reason: str) -> ModelStatus:
    return ModelStatus(task=task, ready=False, status="unreachable", reason=reason)
