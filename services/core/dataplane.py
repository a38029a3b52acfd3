"""The request path of a model service, free of HTTP: cache, queue, timeout, metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeAlias

from services.core.batching import BatchQueue, PendingItem
from services.core.cache import ResponseCache, prediction_key
from services.core.cache_sealing import seal, unseal
from services.core.errors import BatchTooLarge, ModelNotReady, RequestTimedOut
from services.core.metrics import ServiceMetrics
from services.core.model import ClassifierModel, ItemT, OutputT
from services.core.settings import ServiceSettings

CostFunction: TypeAlias = Callable[[list[ItemT]], Awaitable[Sequence[int]]]
"""Batching costs of items, one per item (async: it may hand long work to a thread)."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemLimit:
    """The most items one request may carry, what they are called, and the setting."""

    count: int
    noun: str
    setting: str

    def check(self, items: int) -> None:
        """413 `batch_too_large` for a request of more than `count` items."""
        if items > self.count:
            raise BatchTooLarge(
                f"{items} {self.noun} in one request; the limit is {self.count} ({self.setting})"
            )


@dataclass(frozen=True)
class PredictionResult(Generic[OutputT]):
    """Predictions for every item of a request, in input order, with where time went."""

    predictions: list[OutputT]
    cache_hits: int
    queue_seconds: float
    inference_seconds: float


class DataPlane(Generic[ItemT, OutputT]):
    """Answers prediction requests: per-item cache, then the batching queue for the rest.

    Items found in the cache never reach the model; identical items within one request
    run once; a request that would overfill the queue gets 429; one that is still waiting
    after `request_timeout_seconds` gets 504 and its queued items are withdrawn.
    """

    def __init__(
        self,
        model: ClassifierModel[ItemT, OutputT],
        cache: ResponseCache,
        metrics: ServiceMetrics,
        settings: ServiceSettings,
    ) -> None:
        self.model = model
        self.cache = cache
        self.metrics = metrics
        self.settings = settings
        # Built once: the check runs on every request.
        self.item_limit = ItemLimit(
            settings.max_items_per_request, "items", "MTC_MAX_ITEMS_PER_REQUEST"
        )
        self.queue: BatchQueue[ItemT, OutputT] = BatchQueue(
            model,
            metrics,
            max_batch_size=settings.max_batch_size,
            max_batch_tokens=settings.max_batch_tokens,
            max_queued_items=settings.max_queued_items,
            workers=settings.inference_workers,
        )

    async def start(self) -> None:
        """Start the inference workers."""
        await self.queue.start()

    async def stop(self) -> None:
        """Answer the work already accepted, then stop the workers and close the cache."""
        # No request waits longer than its timeout, so neither does the drain.
        await self.queue.stop(drain_seconds=self.settings.request_timeout_seconds)
        await self.cache.close()

    def require_ready(self) -> None:
        """503 `model_not_ready` until the model is loaded. `predict` checks it; routes
        that decode their input call it first, so a service that cannot answer yet spends
        nothing on reading photos or recordings."""
        if not self.model.ready:
            self.metrics.rejected.labels(self.settings.task, "not_ready").inc()
            raise ModelNotReady(f"the {self.settings.task} model is not loaded yet")

    async def predict(
        self, items: Sequence[ItemT], costs_of: CostFunction[ItemT] | None = None
    ) -> PredictionResult[OutputT]:
        """Predict every item. `costs_of` gives the batching cost (e.g. token counts) of the
        items the cache did not answer, and only of those (default: `model.cost(item)`)."""
        self.require_ready()
        self.item_limit.check(len(items))
        started = time.perf_counter()
        deadline = started + self.settings.request_timeout_seconds
        version = f"{self.model.metadata.version}/{self.model.runtime}"
        keys = [
            prediction_key(self.settings.task, version, self.model.cache_key(item))
            for item in items
        ]
        sealing_keys = [self.model.sealing_key(item) for item in items]
        predictions = await self._lookup(keys, sealing_keys)
        after_cache = time.perf_counter()
        self.metrics.observe_phase("cache", after_cache - started)

        first_index_of_key: dict[str, int] = {}
        for index, (key, prediction) in enumerate(zip(keys, predictions, strict=True)):
            if prediction is None:
                first_index_of_key.setdefault(key, index)
        missing = sorted(first_index_of_key.values())
        hits = len(items) - sum(1 for p in predictions if p is None)
        self.metrics.cache_lookups.labels(self.settings.task, "hit").inc(hits)
        self.metrics.cache_lookups.labels(self.settings.task, "miss").inc(len(items) - hits)

        queue_seconds = inference_seconds = 0.0
        if missing:
            missing_items = [items[index] for index in missing]
            item_costs = (
                list(await costs_of(missing_items))
                if costs_of is not None
                else [self.model.cost(item) for item in missing_items]
            )
            queued = await self.queue.submit(missing_items, item_costs)
            computed = await self._wait(queued, deadline)
            finished = time.perf_counter()
            queue_seconds = max((p.started_at or finished) - p.enqueued_at for p in queued)
            inference_seconds = max(0.0, finished - after_cache - queue_seconds)
            self.metrics.observe_phase("queue", queue_seconds)
            self.metrics.observe_phase("inference", inference_seconds)
            fresh = dict(zip((keys[index] for index in missing), computed, strict=True))
            await self._store(fresh, {keys[index]: sealing_keys[index] for index in missing})
            predictions = [
                prediction if prediction is not None else fresh[key]
                for key, prediction in zip(keys, predictions, strict=True)
            ]
        complete = [prediction for prediction in predictions if prediction is not None]
        assert len(complete) == len(items)
        return PredictionResult(complete, hits, queue_seconds, inference_seconds)

    async def _wait(
        self, queued: list[PendingItem[ItemT, OutputT]], deadline: float
    ) -> list[OutputT]:
        remaining = max(0.0, deadline - time.perf_counter())
        try:
            return list(
                await asyncio.wait_for(
                    asyncio.gather(*(p.future for p in queued)), timeout=remaining
                )
            )
        except TimeoutError:
            self.queue.discard(queued)
            self.metrics.rejected.labels(self.settings.task, "timeout").inc()
            raise RequestTimedOut(
                f"the {self.settings.task} model did not finish within "
                f"{self.settings.request_timeout_seconds:g} s (MTC_REQUEST_TIMEOUT_SECONDS)"
            ) from None
        except asyncio.CancelledError:
            # The client went away: withdraw its work so the model does not run it.
            self.queue.discard(queued)
            raise

    async def _lookup(
        self, keys: list[str], sealing_keys: list[bytes | None]
    ) -> list[OutputT | None]:
        if self.settings.cache_ttl_seconds == 0:
            return [None] * len(keys)
        raw = await self.cache.get_many(keys)
        decoded: list[OutputT | None] = []
        for value, sealing_key in zip(raw, sealing_keys, strict=True):
            try:
                if value is not None and sealing_key is not None:
                    value = unseal(sealing_key, value)
                decoded.append(self.model.decode_prediction(value) if value is not None else None)
            except (ValueError, TypeError, KeyError):
                # A malformed entry (another version's format, or one that does not open
                # with this input's key) is a miss, not an error.
                decoded.append(None)
        return decoded

    async def _store(
        self, fresh: dict[str, OutputT], sealing_keys: dict[str, bytes | None]
    ) -> None:
        if self.settings.cache_ttl_seconds == 0 or not fresh:
            return
        values = {}
        for key, prediction in fresh.items():
            value = self.model.encode_prediction(prediction)
            sealing_key = sealing_keys[key]
            values[key] = value if sealing_key is None else seal(sealing_key, value)
        await self.cache.set_many(values)
