"""How the detection loop shares one detector between cameras, and what each
stage costs.

* :class:`FairScheduler` picks the frames for the next inference call: at most
  one per camera, at most ``max_batch`` in all, and the next call starts after
  the last camera served, so a camera that always has a frame ready cannot
  starve the others.
* :class:`StageTimes` adds up seconds per stage (decode, motion, detect, track,
  count, store, observers) for ``health()`` and the benchmark.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class MotionGateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # Width of the grey picture compared (height keeps the aspect ratio).
    width: Annotated[int, Field(ge=32, le=640)] = 160
    # A pixel changed when its grey level moved by more than this (0-255), after a 5x5 blur.
    pixel_threshold: Annotated[int, Field(ge=1, le=255)] = 8
    # Motion when more than this share of the small picture changed (0.0005 of 160x90 = 7 pixels).
    min_changed_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0005
    max_skip_seconds: Annotated[float, Field(ge=0.0, le=60.0)] = 1.0


class PerformanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Frames (one per camera) sent to the detector in one call when the model
    # takes batches (an exported OpenVINO model does). On a CPU a batch was not
    # faster per frame (bench/bench.py) and each batch size compiles its own copy
    # of the model (~50 MB): 1. Raise it for a GPU/NPU (TensorRT, OpenVINO GPU).
    max_batch: Annotated[int, Field(ge=1, le=64)] = 1
    motion_gate: MotionGateConfig = Field(default_factory=MotionGateConfig)


class FairScheduler(Generic[T]):
    """Round-robin over cameras; never waits for a camera that has no frame."""

    def __init__(self, camera_ids: list[str]) -> None:
        self.order = list(camera_ids)
        self._next = 0

    def pick(self, take: Callable[[str], T | None], limit: int) -> list[tuple[str, T]]:
        """Up to ``limit`` ``(camera_id, item)`` pairs, one per camera, in turn order."""
        picked: list[tuple[str, T]] = []
        count = len(self.order)
        for step in range(count):
            if len(picked) >= limit:
                break
            position = (self._next + step) % count
            camera_id = self.order[position]
            item = take(camera_id)
            if item is not None:
                picked.append((camera_id, item))
                last = position
        if picked:
            self._next = (last + 1) % count
        return picked


class StageTimes:
    """Seconds and calls per stage, added up since start (thread-safe, O(stages) memory)."""

    STAGES = ("decode", "motion", "detect", "track", "count", "store", "observers")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds = dict.fromkeys(self.STAGES, 0.0)
        self.frames = dict.fromkeys(self.STAGES, 0)

    def add(self, stage: str, seconds: float, frames: int = 1) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
            self.frames[stage] = self.frames.get(stage, 0) + frames

    @contextmanager
    def timed(self, stage: str, frames: int = 1) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started, frames)

    def ms_per_frame(self, frames: int) -> dict[str, float]:
        """Each stage's total time spread over ``frames`` processed frames."""
        with self._lock:
            return {stage: (seconds * 1000 / frames if frames else 0.0) for stage, seconds in self.seconds.items()}


class TimedTracker:
    """Wraps a tracker to book its time under ``track`` (so ``count`` is the rest of analytics)."""

    def __init__(self, tracker, times: StageTimes) -> None:
        self.inner = tracker
        self.times = times

    def update(self, detections, ts: float):
        with self.times.timed("track"):
            return self.inner.update(detections, ts)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)
