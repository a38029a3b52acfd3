"""Calls from a worker to the model services: `POST /v1/{task}/predict`, one chunk at a
time, with retries and back-off for the failures that pass (no connection, timeouts,
429, 503, 504) and none for refusals that would only repeat (400, 413, 422, ...)."""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from services.jobs.errors import JobFailure

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 503, 504})
MAX_RETRY_AFTER_SECONDS = 30.0

Predictions = list[list[dict[str, Any]]]


class PredictionClient:
    """Classifies texts with a task's service; replicas are used in turn, and a retry goes
    to the next one."""

    def __init__(
        self,
        upstreams: dict[str, list[str]],
        *,
        timeout_seconds: float,
        retry_attempts: int,
        retry_backoff_seconds: float,
        on_retry: Callable[[str], None] = lambda task: None,
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
    ) -> None:
        self.retry_attempts = retry_attempts
        self.retry_backoff_seconds = retry_backoff_seconds
        self.on_retry = on_retry
        self.sleep = sleep
        self._replicas: dict[str, Iterator[str]] = {
            task: itertools.cycle(urls) for task, urls in upstreams.items()
        }
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 5.0))
        )

    def classify(self, task: str, texts: list[str]) -> Predictions:
        """Per text, every label with its score as the service returned them; JobFailure
        when the service refuses the chunk or stays unavailable through every retry."""
        if task not in self._replicas:
            raise JobFailure(f"no service is configured for task '{task}' (MTC_JOBS_UPSTREAMS)")
        problem = "no attempt made"
        for attempt in range(self.retry_attempts + 1):
            if attempt:
                self.on_retry(task)
            url = f"{next(self._replicas[task])}/v1/{task}/predict"
            delay: float | None = None
            try:
                response = self._client.post(url, json={"text": texts})
            except httpx.TransportError as error:
                problem = f"{type(error).__name__} calling the {task} service"
            else:
                if response.status_code == 200:
                    return _predictions(task, response, len(texts))
                detail = _error_detail(response)
                if response.status_code not in RETRYABLE_STATUSES:
                    raise JobFailure(
                        f"the {task} service refused a chunk ({response.status_code}"
                        f"{': ' + detail if detail else ''})"
                    )
                problem = f"the {task} service answered {response.status_code}" + (
                    f" ({detail})" if detail else ""
                )
                delay = _retry_after(response)
            if attempt < self.retry_attempts:
                wait = delay if delay is not None else self._backoff(attempt + 1)
                logger.warning("%s; retrying in %.2f s", problem, wait)
                self.sleep(wait)
        raise JobFailure(f"{problem}, after {self.retry_attempts + 1} attempts")

    def _backoff(self, retry: int) -> float:
        # Full jitter: workers retrying together do not hit a recovering service in step.
        return random.uniform(0, self.retry_backoff_seconds * 2 ** (retry - 1))


def _predictions(task: str, response: httpx.Response, expected: int) -> Predictions:
    try:
        body = response.json()
        predictions: Predictions = body["predictions"]
    except (ValueError, KeyError, TypeError):
        raise JobFailure(f"the {task} service answered with an unreadable body") from None
    if not isinstance(predictions, list) or len(predictions) != expected:
        raise JobFailure(f"the {task} service answered for a different number of texts")
    return predictions


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        error_type = body.get("error_type")
        return f"{error_type}: {body['detail']}" if error_type else body["detail"]
    return ""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
