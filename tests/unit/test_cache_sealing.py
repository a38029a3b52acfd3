"""Cache entries sealed with a key only the input's holder can derive: the shared cache
then reveals nothing (the audio service's entries hold transcripts), yet a request with the
same input still hits."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from services.audio.models.emergency_call import CallClip, EmergencyCallModel
from services.core.cache import MemoryCache
from services.core.cache_sealing import UnsealError, seal, unseal
from services.core.dataplane import DataPlane
from services.core.metrics import ServiceMetrics
from services.core.model import LabelScore, Prediction
from services.core.settings import ServiceSettings
from tests.support.models import CountingModel

KEY = hashlib.sha256(b"a secret input").digest()


def test_a_sealed_value_opens_with_its_key_only() -> None:
    sealed = seal(KEY, b'{"transcript": "someone is breaking in"}')

    assert b"breaking" not in sealed
    assert unseal(KEY, sealed) == b'{"transcript": "someone is breaking in"}'
    with pytest.raises(UnsealError):
        unseal(hashlib.sha256(b"another input").digest(), sealed)


@pytest.mark.parametrize("position", [0, 5, 30, -1])
def test_a_changed_byte_or_a_plain_value_does_not_open(position: int) -> None:
    sealed = bytearray(seal(KEY, b"scores and a transcript"))
    sealed[position] ^= 0x01
    with pytest.raises(UnsealError):
        unseal(KEY, bytes(sealed))
    with pytest.raises(UnsealError):
        unseal(KEY, b'[["odd", 0.9]]')


def test_two_seals_of_one_value_differ() -> None:
    assert seal(KEY, b"same value") != seal(KEY, b"same value")


class SealingModel(CountingModel):
    """Seals its entries with a digest of the text (as the audio model does with sound)."""

    def sealing_key(self, item: str) -> bytes:
        return hashlib.sha256(b"seal\0" + item.encode()).digest()


async def test_the_dataplane_stores_sealed_entries_and_hits_with_the_same_input() -> None:
    model = SealingModel()
    await model.start(Path("."))
    cache = MemoryCache(100, 60)
    plane = DataPlane(model, cache, ServiceMetrics("test"), ServiceSettings(task="test"))
    await plane.start()
    try:
        first = await plane.predict(["a confidential call"])
        [stored] = [value for _, value in cache._entries.values()]
        assert b"odd" not in stored
        assert b"even" not in stored
        again = await plane.predict(["a confidential call"])
        assert again.cache_hits == 1
        assert again.predictions == first.predictions
        assert model.seen == ["a confidential call"]

        # An entry planted unsealed under the same cache key is a miss, not an answer.
        [key] = list(cache._entries)
        await cache.set_many({key: model.encode_prediction(Prediction([LabelScore("even", 1.0)]))})
        planted = await plane.predict(["a confidential call"])
        assert planted.cache_hits == 0
        assert planted.predictions == first.predictions
    finally:
        await plane.stop()


def _clip(samples: Sequence[float], transcript: str | None) -> CallClip:
    return CallClip(np.asarray(samples, dtype=np.float32), 16_000, transcript)


def test_the_audio_seal_depends_on_the_sound_and_is_not_the_cache_key_digest() -> None:
    """The cache key is the digest of the sound (plus the transcript); the seal is another."""
    model = EmergencyCallModel.__new__(EmergencyCallModel)
    clip = _clip([0.1, -0.2, 0.3], "help")
    other = _clip([0.1, -0.2, 0.31], "help")

    assert model.sealing_key(clip) != clip.audio_digest()
    assert model.sealing_key(clip) != model.sealing_key(other)
    assert model.sealing_key(clip) == model.sealing_key(_clip([0.1, -0.2, 0.3], None))
