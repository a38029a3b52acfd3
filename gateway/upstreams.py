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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from gateway.metrics import GatewayMetrics, UpstreamErrorKind
from gateway.replicas import CircuitBreaker, Replica, ReplicaSet
from gateway.request_context import REQUEST_ID_HEADER, current_request
from gateway.schemas import ModelsResponse, ModelStatus
from gateway.settings import GatewaySettings
from services.core.errors import UnknownTask, UpstreamTimeout, UpstreamUnavailable

logger = logging.getLogger(__name__)

# Below uvicorn's 5 s keep-alive, so the gateway drops an idle connection before the service
# does; reusing one the service is closing fails the request with a protocol error.
KEEPALIVE_EXPIRY_SECONDS = 4.0

# Headers of a service's answer that clients read (timings for load tests, back-off, and
# the methods a 405 allows).
RELAYED_HEADERS = ("content-type", "x-inference-time", "x-queue-time", "retry-after", "allow")


def create_http_client(settings: GatewaySettings) -> httpx.AsyncClient:
    """The one connection pool shared by every forwarded request."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            settings.request_timeout_seconds, connect=settings.connect_timeout_seconds
        ),
        limits=httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
        ),
        # Service URLs are internal; a proxy taken from the environment would only misroute.
        trust_env=False,
    )


@dataclass(frozen=True)
class UpstreamAnswer:
    """A service's answer (any status) and the replica that gave it."""

    status_code: int
    content: bytes
    headers: dict[str, str]
    """The relayed headers only (see `RELAYED_HEADERS`)."""
    upstream: str
    elapsed_seconds: float
    """Time from the first attempt to the answer, retries included."""


def build_replica_sets(
    settings: GatewaySettings, clock: Callable[[], float] = time.monotonic
) -> dict[str, ReplicaSet]:
    """Task -> its replicas, each URL with a circuit breaker configured by `settings`."""
    return {
        task: ReplicaSet(
            urls,
            lambda: CircuitBreaker(
                settings.circuit_failure_threshold, settings.circuit_open_seconds, clock
            ),
        )
        for task, urls in settings.upstreams.items()
    }


class Upstreams:
    """Forwards requests to the service replicas of each task and collects their status.

    Failures to reach a service become `UpstreamUnavailable` (503) or `UpstreamTimeout`
    (504) naming the task; the service address and low-level cause go to the log only.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        client: httpx.AsyncClient,
        metrics: GatewayMetrics,
        replica_sets: dict[str, ReplicaSet] | None = None,
    ) -> None:
        self._settings = settings
        self._client = client
        self._metrics = metrics
        self.replica_sets = (
            replica_sets if replica_sets is not None else build_replica_sets(settings)
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
        body: bytes = b"",
        content_type: str | None = None,
        query: str = "",
    ) -> UpstreamAnswer:
        """Send a request, as received, to a replica of the task's service.

        `path` is the path on the service (e.g. `/v1/sentiment/predict`). The client's
        Content-Type is kept (multipart uploads need their boundary); a body without one is
        declared JSON. Any answer of the service, including its 4xx/5xx errors, is returned.
        """
        self.check_task(task)
        replica_set = self.replica_sets[task]
        timeout_seconds = self._settings.timeout_for(task)
        started = time.monotonic()
        deadline = started + timeout_seconds
        # Clients may omit it; older clients send JSON without declaring it.
        headers = self._forwarded_headers(
            content_type or ("application/json" if method == "POST" else None)
        )
        tried: list[str] = []
        while True:
            replica = replica_set.choose(tried)
            if replica is None:
                raise self._circuit_open(task, replica_set)
            tried.append(replica.url)
            remaining = max(deadline - time.monotonic(), 0.001)
            # The query string goes on as the client sent it (no re-encoding).
            url = f"{replica.url}{path}" + (f"?{query}" if query else "")
            try:
                response = await self._send(task, replica, method, url, body, headers, remaining)
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
            except httpx.PoolTimeout as error:
                self._record_failure(task, url, "timeout", error)
                raise UpstreamTimeout(
                    f"no connection to the service for task '{task}' became free within "
                    f"{timeout_seconds:g} seconds (gateway at its connection limit)"
                ) from error
            except httpx.TimeoutException as error:
                self._record_failure(task, url, "timeout", error)
                raise UpstreamTimeout(
                    f"the service for task '{task}' did not answer within "
                    f"{timeout_seconds:g} seconds"
                ) from error
            except httpx.RequestError as error:
                self._record_failure(task, url, "protocol", error)
                raise UpstreamUnavailable(
                    f"the service for task '{task}' is unavailable: the connection broke "
                    "before it answered"
                ) from error
            context = current_request()
            if context is not None:
                context.upstream = replica.url
            relayed = {
                name: value for name in RELAYED_HEADERS if (value := response.headers.get(name))
            }
            return UpstreamAnswer(
                status_code=response.status_code,
                content=response.content,
                headers=relayed,
                upstream=replica.url,
                elapsed_seconds=time.monotonic() - started,
            )

    async def _send(
        self,
        task: str,
        replica: Replica,
        method: str,
        url: str,
        body: bytes,
        headers: dict[str, str],
        timeout_seconds: float,
    ) -> httpx.Response:
        """One attempt on one replica, keeping its breaker and in-flight count up to date."""
        timeout = httpx.Timeout(
            timeout_seconds, connect=min(self._settings.connect_timeout_seconds, timeout_seconds)
        )
        replica.in_flight += 1
        verdict_given = False
        try:
            response = await self._client.request(
                method,
                url,
                content=body or None,
                headers=headers,
                timeout=timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            # Nothing reached the service: safe to try again.
            replica.breaker.record_failure()
            verdict_given = True
            self._record_failure(task, url, "connect", error)
            raise _ConnectionNotOpened from error
        except httpx.PoolTimeout:
            # The gateway's own pool is full: says nothing about the replica.
            raise
        except httpx.RequestError:
            replica.breaker.record_failure()
            verdict_given = True
            raise
        else:
            replica.breaker.record_success()
            verdict_given = True
            return response
        finally:
            replica.in_flight -= 1
            if not verdict_given:
                replica.breaker.release()

    def _forwarded_headers(self, content_type: str | None) -> dict[str, str]:
        # The client's API key is not among them: keys never leave the gateway.
        headers: dict[str, str] = {}
        if content_type is not None:
            headers["content-type"] = content_type
        context = current_request()
        if context is not None:
            headers[REQUEST_ID_HEADER] = context.request_id
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
        its replicas is."""
        wanted = list(tasks) if tasks is not None else self.tasks
        for task in wanted:
            self.check_task(task)
        tasks_by_url: dict[str, list[str]] = {}
        for task in wanted:
            for url in self._settings.upstreams[task]:
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
                [by_url_and_task[(url, task)] for url in self._settings.upstreams[task]],
            )
            for task in wanted
        ]

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
            answer = await self._client.get(f"{base_url}/v1/models", timeout=timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            return [_unreachable(task, "could not connect to the service") for task in tasks]
        except httpx.TimeoutException:
            reason = f"no status answer within {timeout:g} seconds"
            return [_unreachable(task, reason) for task in tasks]
        except httpx.RequestError:
            reason = "the connection to the service broke before it answered"
            return [_unreachable(task, reason) for task in tasks]
        if answer.status_code != 200:
            reason = f"the service answered /v1/models with HTTP {answer.status_code}"
            return [_unreachable(task, reason) for task in tasks]
        try:
            listed = ModelsResponse.model_validate_json(answer.content)
        except ValidationError:
            logger.warning("invalid /v1/models answer from %s: %.200r", base_url, answer.content)
            reason = "the service's /v1/models answer is not valid"
            return [_unreachable(task, reason) for task in tasks]
        by_task = {status.task: status for status in listed.models}
        return [
            by_task.get(task) or _unreachable(task, f"the service does not list task '{task}'")
            for task in tasks
        ]

    def _record_failure(
        self, task: str, url: str, kind: UpstreamErrorKind, error: httpx.RequestError
    ) -> None:
        self._metrics.observe_upstream_error(task, kind)
        logger.warning("forwarding to %s failed (%s): %r", url, kind, error)


class _ConnectionNotOpened(Exception):
    """An attempt failed before anything was sent (the cause is the httpx error)."""


def _unreachable(task: str, reason: str) -> ModelStatus:
    return ModelStatus(task=task, ready=False, status="unreachable", reason=reason)
