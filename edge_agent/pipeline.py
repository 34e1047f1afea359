"""Per-camera analytics: detections → tracks → crossings.

Detection is shared between cameras (one model in memory); everything that
holds per-camera state (the tracker, the line counters) lives here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import supervision as sv

from .config import CameraConfig, TrackerConfig
from .counting import Crossing, LineCounter
from .tracking import Tracker, make_tracker


@dataclass(slots=True)
class FrameResult:
    camera_id: str
    ts: float
    tracks: sv.Detections
    crossings: list[Crossing] = field(default_factory=list)


def anchors_normalised(tracks: sv.Detections, frame_shape: Sequence[int]) -> np.ndarray:
    """Bottom centre of each box (where the feet are), in 0–1 coordinates."""
    height, width = frame_shape[:2]
    if len(tracks) == 0:
        return np.empty((0, 2), dtype=np.float64)
    xyxy = tracks.xyxy.astype(np.float64)
    return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2 / width, xyxy[:, 3] / height], axis=1)


class CameraAnalytics:
    """Owns one camera's tracker and line counters."""

    # Line state for a track is dropped once the track has been gone this long.
    FORGET_AFTER_SECONDS = 10.0

    def __init__(self, camera: CameraConfig, tracker_config: TrackerConfig, frame_rate: float = 30.0,
                 tracker: Tracker | None = None) -> None:
        self.camera = camera
        self.tracker = tracker or make_tracker(tracker_config, frame_rate)
        self.counters = [
            LineCounter(line.id, tuple(line.points[0]), tuple(line.points[1]), line.in_side, line.hysteresis)
            for line in camera.lines
        ]
        self._last_forget = 0.0

    def process(self, detections: sv.Detections, frame_shape: Sequence[int], ts: float) -> FrameResult:
        tracks = self.tracker.update(detections, ts)
        anchors = anchors_normalised(tracks, frame_shape)
        pairs = [(int(tid), (float(x), float(y))) for tid, (x, y) in zip(tracks.tracker_id, anchors)]
        crossings: list[Crossing] = []
        for counter in self.counters:
            crossings.extend(counter.update(pairs, ts))
        if ts - self._last_forget > self.FORGET_AFTER_SECONDS:
            for counter in self.counters:
                counter.forget_older_than(ts - self.FORGET_AFTER_SECONDS)
            self._last_forget = ts
        return FrameResult(self.camera.id, ts, tracks, crossings)
