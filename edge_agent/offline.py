"""Counting a recorded video from start to end, every frame, no threads.

Used by ``edge-agent count`` (a technician auditing a camera on footage), the
accuracy evaluation and the benchmark; the same analytics as the live agent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2

from .analytics.settings import AnalyticsSettings
from .config import CameraConfig, TrackerConfig
from .detect import Detector
from .motion import MotionGate
from .performance import MotionGateConfig
from .pipeline import CameraAnalytics, FrameResult


@dataclass
class CountResult:
    frames: int = 0
    seconds: float = 0.0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # line → {"in", "out"}
    skipped: int = 0  # frames the motion gate let through without the detector

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def count_video(
    camera: CameraConfig,
    detector: Detector,
    tracker: TrackerConfig,
    max_frames: int | None = None,
    on_frame: Callable[[int, FrameResult], None] | None = None,
    settings: AnalyticsSettings | None = None,
    motion_gate: MotionGateConfig | None = None,
) -> CountResult:
    capture = cv2.VideoCapture(str(camera.source))
    if not capture.isOpened():
        raise FileNotFoundError(f"cannot open video {camera.source}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if 0 < fps < 240 else 25.0
    analytics = CameraAnalytics(camera, tracker, fps, settings=settings)
    gate = MotionGate(motion_gate) if motion_gate is not None and motion_gate.enabled else None
    result = CountResult(counts={line.id: {"in": 0, "out": 0} for line in camera.lines})
    started = time.perf_counter()
    try:
        while max_frames is None or result.frames < max_frames:
            ok, image = capture.read()
            if not ok:
                break
            ts = result.frames / fps
            detections = gate.reuse(image, ts) if gate is not None else None
            if detections is None:
                detections = detector.detect([image], imgsz=camera.imgsz)[0]
                if gate is not None:
                    gate.detected(detections)
            frame_result = analytics.process(detections, image.shape, ts)
            for crossing in frame_result.crossings:
                result.counts[crossing.line_id][crossing.direction] += 1
            if on_frame is not None:
                on_frame(result.frames, frame_result)
            result.frames += 1
        # the video ends: crossings still held by the rules (cooldown, young tracks) are decided now
        for crossing in analytics.finish(result.frames / fps).crossings:
            result.counts[crossing.line_id][crossing.direction] += 1
    finally:
        capture.release()
    result.seconds = time.perf_counter() - started
    result.skipped = gate.stats.skipped if gate is not None else 0
    return result
