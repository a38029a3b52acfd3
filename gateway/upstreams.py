"""The model services behind the gateway, reached over one pooled HTTP client."""

from __future__ import annotations

import asyncio
import logging

import httpx
from pydantic import ValidationError

from gateway.metrics import GatewayMetrics, UpstreamErrorKind
from gateway.schemas import ModelsResponse, ModelStatus
from gateway.settings import GatewaySettings
from services.core.errors import UnknownTask, UpstreamTimeout, UpstreamUnavailable

logger = logging.getLogger(__name__)

# Below uvicorn's 5 s keep-alive, so the gateway drops an idle connection before the service
# does; reusing one the service is closing fails the request with a protocol error.
KEEPALIVE_EXPIRY_SECONDS = 4.0


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


class Upstreams:
    """Forwards requests to the service of each task and collects their model status.

    Failures to reach a service become `UpstreamUnavailable` (503) or `UpstreamTimeout`
    (504) naming the task; the service address and low-level cause go to the log only.
    """

    def __init__(
        self, settings: GatewaySettings, client: httpx.AsyncClient, metrics: GatewayMetrics
    ) -> None:
        self._settings = settings
        self._client = client
        self._metrics = metrics

    @property
    def tasks(self) -> list[str]:
        """Configured task names, in configuration order."""
        return list(self._settings.upstreams)

    def base_url(self, task: str) -> str:
        """Base URL of the service for `task`; `UnknownTask` if none is configured."""
        try:
            return self._settings.upstreams[task]
        except KeyError:
            known = ", ".join(sorted(self._settings.upstreams))
            raise UnknownTask(f"unknown task '{task}'; known tasks: {known}") from None

    async def predict(
        self, task: str, body: bytes, content_type: str | None = None
    ) -> httpx.Response:
        """Send a predict body, as received, to the task's service and return its answer.

        The client's Content-Type is kept (multipart uploads need their boundary); a body
        without one is declared JSON. Any answer of the service, including its 4xx/5xx
        errors, is returned, not raised.
        """
        url = f"{self.base_url(task)}/v1/{task}/predict"
        timeout_seconds = self._settings.timeout_for(task)
        timeout = httpx.Timeout(timeout_seconds, connect=self._settings.connect_timeout_seconds)
        try:
            return await self._client.post(
                url,
                content=body,
                # Clients may omit it; older clients send JSON without declaring it.
                headers={"content-type": content_type or "application/json"},
                timeout=timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            self._record_failure(task, url, "connect", error)
            raise UpstreamUnavailable(
                f"the service for task '{task}' is unavailable: could not connect to it"
            ) from error
        except httpx.PoolTimeout as error:
            self._record_failure(task, url, "timeout", error)
            raise UpstreamTimeout(
                f"no connection to the service for task '{task}' became free within "
                f"{timeout_seconds:g} seconds (gateway at its connection limit)"
            ) from error
        except httpx.TimeoutException as error:
            self._record_failure(task, url, "timeout", error)
            raise UpstreamTimeout(
                f"the service for task '{task}' did not answer within {timeout_seconds:g} seconds"
            ) from error
        except httpx.RequestError as error:
            self._record_failure(task, url, "protocol", error)
            raise UpstreamUnavailable(
                f"the service for task '{task}' is unavailable: the connection broke "
                "before it answered"
            ) from error

    async def model_statuses(self) -> list[ModelStatus]:
        """The status of every configured task, asking each distinct service once, together."""
        tasks_by_url: dict[str, list[str]] = {}
        for task, url in self._settings.upstreams.items():
            tasks_by_url.setdefault(url, []).append(task)
        answers = await asyncio.gather(
            *(self._statuses_from(url, tasks) for url, tasks in tasks_by_url.items())
        )
        by_task = {status.task: status for answer in answers for status in answer}
        return [by_task[task] for task in self.tasks]

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


def _unreachable(task: str, reason: str) -> ModelStatus:
    return ModelStatus(task=task, ready=False, status="unreachable", reason=reason)
