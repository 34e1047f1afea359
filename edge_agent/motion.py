"""Motion gate: skip the detector on frames where nothing moved.

The frame is compared, shrunk to a small grey picture, with the frame the
camera's current detections came from (not with the previous frame: a slow
walker changes little from one frame to the next, but a lot since the last
detection). While nothing has changed, the last detections still describe the
picture, so they are handed on again with the new frame's time: the tracker
sees its people where they were, its tracks stay matched and keep their ids,
and a person standing still is neither lost nor counted twice. Feeding the
tracker nothing instead would end every track after ``tracker.lost_seconds``
and give everyone a new id when they move again.

A detection still runs at least every ``max_skip_seconds``, so a change too
small for the gate is caught up within that time.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import supervision as sv

from .performance import MotionGateConfig


@dataclass
class MotionStats:
    frames: int = 0
    skipped: int = 0

    @property
    def skipped_share(self) -> float:
        return self.skipped / self.frames if self.frames else 0.0


class MotionGate:
    """One camera's gate: :meth:`reuse` before detecting, :meth:`detected` after."""

    def __init__(self, config: MotionGateConfig) -> None:
        self.config = config
        self.stats = MotionStats()
        self._reference: np.ndarray | None = None
        self._reference_ts = float("-inf")
        self._detections: sv.Detections | None = None
        self._pending: tuple[np.ndarray, float] | None = None

    def small(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        size = (self.config.width, max(1, round(height * self.config.width / width)))
        grey = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(grey, (5, 5), 0)

    def changed_fraction(self, small: np.ndarray) -> float:
        if self._reference is None or self._reference.shape != small.shape:
            return 1.0
        diff = cv2.absdiff(small, self._reference)
        return cv2.countNonZero(cv2.threshold(diff, self.config.pixel_threshold, 255, cv2.THRESH_BINARY)[1]) / diff.size

    def reuse(self, image: np.ndarray, ts: float) -> sv.Detections | None:
        """The detections to use again for this frame, or None: run the detector
        (then call :meth:`detected` with what it found)."""
        self.stats.frames += 1
        small = self.small(image)
        if (
            self._detections is not None
            and ts - self._reference_ts < self.config.max_skip_seconds
            and self.changed_fraction(small) <= self.config.min_changed_fraction
        ):
            self.stats.skipped += 1
            self._pending = None
            return self._detections
        self._pending = (small, ts)
        return None

    def detected(self, detections: sv.Detections) -> None:
        if self._pending is not None:
            self._reference, self._reference_ts = self._pending
            self._pending = None
        self._detections = detections
