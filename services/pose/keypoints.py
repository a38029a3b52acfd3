"""`KeypointResolver`: the keypoints of each image of a request, cached like predictions.

The serving kit caches label scores only. Keypoints are stored beside them in the same
`ResponseCache` under their own key namespace, filled from what the model recorded while
predicting. An image whose labels came from the cache but whose keypoints did not (an
entry evicted on its own) has them computed again, outside the batching queue.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from services.core.cache import ResponseCache, prediction_key
from services.pose.images import DecodedImage
from services.pose.models.base import Keypoint, Keypoints, PoseModel


def encode_keypoints(keypoints: Keypoints | None) -> bytes:
    """Compact JSON form of one image's keypoints (`null` for no person)."""
    if keypoints is None:
        return b"null"
    rows = [[k.name, k.x, k.y, k.visibility] for k in keypoints]
    return json.dumps(rows, separators=(",", ":")).encode()


def decode_keypoints(raw: bytes) -> Keypoints | None:
    """Inverse of `encode_keypoints`."""
    rows = json.loads(raw)
    if rows is None:
        return None
    return [Keypoint(str(name), float(x), float(y), float(v)) for name, x, y, v in rows]


class KeypointResolver:
    """Finds keypoints in the shared cache, then in the model's recent record, then runs
    the model's landmark detector for what is still missing."""

    def __init__(self, cache: ResponseCache, task: str, *, enabled: bool) -> None:
        self.cache = cache
        self.task = task
        self.enabled = enabled

    async def resolve(
        self, model: PoseModel, images: Sequence[DecodedImage]
    ) -> list[Keypoints | None]:
        """Keypoints per image, in input order; all None for models without keypoints."""
        if not model.gives_keypoints:
            return [None] * len(images)
        version = f"{model.metadata.version}/{model.runtime}"
        keys = [
            prediction_key(f"{self.task}/keypoints", version, bytes.fromhex(image.sha256))
            for image in images
        ]
        raw = await self.cache.get_many(keys) if self.enabled else [None] * len(keys)
        results: list[Keypoints | None] = []
        fresh: dict[str, bytes] = {}
        for key, value, image in zip(keys, raw, images, strict=True):
            if value is not None:
                try:
                    results.append(decode_keypoints(value))
                    continue
                except (ValueError, TypeError):
                    pass  # another version's format: treat as a miss
            found, keypoints = model.recorded_keypoints(image.sha256)
            if not found:
                keypoints = await asyncio.to_thread(model.keypoints, image)
            results.append(keypoints)
            fresh[key] = encode_keypoints(keypoints)
        if fresh and self.enabled:
            await self.cache.set_many(fresh)
        return results
