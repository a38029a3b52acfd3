"""What every pose model shares: decoded images in, label scores (and maybe keypoints) out."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from services.core.model import ClassifierModel
from services.pose.images import DecodedImage


@dataclass(frozen=True, slots=True)
class Keypoint:
    """One body landmark: position as a fraction of the upright image's width and height
    (0..1 inside the image, slightly outside for landmarks the model guesses beyond it)."""

    name: str
    x: float
    y: float
    visibility: float
    """The model's estimate (0..1) that the landmark is visible rather than occluded."""


Keypoints = list[Keypoint]
"""Every landmark of one detected person, in the model's fixed order."""


class PoseModel(ClassifierModel[DecodedImage]):
    """Base of the pose models: cached by the image's sha256, one unit of cost per image.

    Models that locate body landmarks set `gives_keypoints` and implement `keypoints`.
    Label scores travel through the serving kit's cache; keypoints do not fit its format,
    so `predict` records the keypoints it computed in a small bounded memory
    (`recorded_keypoints`) from which the API layer picks them up after the request.
    """

    gives_keypoints: bool = False
    """Whether `keypoints` can return anything but None."""

    def __init__(self, *, recorded_keypoints: int = 1024) -> None:
        super().__init__()
        self._recorded: OrderedDict[str, Keypoints | None] = OrderedDict()
        self._recorded_capacity = recorded_keypoints
        self._recorded_lock = threading.Lock()

    def cache_key(self, item: DecodedImage) -> bytes:
        """The sha256 of the original file bytes: same file, same prediction."""
        return bytes.fromhex(item.sha256)

    def cost(self, item: DecodedImage) -> int:
        """Every image costs the same: models resize them to one input size."""
        return 1

    def keypoints(self, item: DecodedImage) -> Keypoints | None:
        """Landmarks of the person in the image, computed now (None: no person, or the
        model does not locate landmarks). Blocking; thread-safe."""
        return None

    def recorded_keypoints(self, sha256: str) -> tuple[bool, Keypoints | None]:
        """`(found, keypoints)` recorded by a recent `predict` of the image with this hash."""
        with self._recorded_lock:
            if sha256 not in self._recorded:
                return False, None
            self._recorded.move_to_end(sha256)
            return True, self._recorded[sha256]

    def record_keypoints(self, items: Sequence[tuple[str, Keypoints | None]]) -> None:
        """Remember keypoints computed during `predict`, dropping the oldest beyond capacity."""
        with self._recorded_lock:
            for sha256, keypoints in items:
                self._recorded[sha256] = keypoints
                self._recorded.move_to_end(sha256)
            while len(self._recorded) > self._recorded_capacity:
                self._recorded.popitem(last=False)
