"""Tracking: ``sv.Detections`` in, the same with ``tracker_id`` out.

``botsort`` (default) and ``bytetrack`` use Roboflow's ``trackers`` (numpy/scipy,
no torch), fed with frame timestamps so dropped frames age tracks correctly.
``ultralytics-bytetrack`` / ``ultralytics-botsort`` use Ultralytics' own
trackers on the same detections (they import torch).
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Protocol

import numpy as np
import supervision as sv

from .config import TrackerConfig


class Tracker(Protocol):
    def update(self, detections: sv.Detections, ts: float) -> sv.Detections:
        """Confirmed tracks only: every returned row has a tracker_id >= 0."""
        ...


def _confirmed(tracked: sv.Detections) -> sv.Detections:
    if tracked.tracker_id is None or len(tracked) == 0:
        empty = sv.Detections.empty()
        empty.tracker_id = np.empty(0, dtype=int)
        return empty
    return tracked[tracked.tracker_id >= 0]


class ByteTracker:
    """Roboflow ``trackers`` ByteTrack with Ultralytics-like thresholds."""

    def __init__(self, config: TrackerConfig, frame_rate: float = 30.0) -> None:
        from trackers import ByteTrackTracker

        # ``lost_track_buffer`` counts 30 fps frames (trackers scales it by frame_rate/30
        # itself); passing frames at the real rate would shrink the buffer at low fps
        # (at 7 fps, 1 s became 0.23 s: 81 instead of ~20 ID switches on PETS09-S2L1).
        self._tracker = ByteTrackTracker(
            lost_track_buffer=max(1, round(config.lost_seconds * 30)),
            frame_rate=frame_rate,
            track_activation_threshold=config.new_track_threshold,
            minimum_consecutive_frames=config.min_frames,
            minimum_iou_threshold=config.match_iou,
            high_conf_det_threshold=config.high_threshold,
        )

    def update(self, detections: sv.Detections, ts: float) -> sv.Detections:
        return _confirmed(self._tracker.update(detections, timestamp=ts))


class BoTSortTracker:
    """Roboflow ``trackers`` BoT-SORT, IoU only (no ReID; no camera-motion
    compensation, store cameras are fixed): Ultralytics' ByteTrack matching
    stages and thresholds, numpy/scipy only."""

    def __init__(self, config: TrackerConfig, frame_rate: float = 30.0) -> None:
        from trackers import BoTSORTTracker

        self._tracker = BoTSORTTracker(
            lost_track_buffer=max(1, round(config.lost_seconds * 30)),  # in 30 fps frames, see ByteTracker
            frame_rate=frame_rate,
            track_activation_threshold=config.new_track_threshold,
            minimum_consecutive_frames=config.min_frames,
            minimum_iou_threshold_first_assoc=config.match_iou,
            high_conf_det_threshold=config.high_threshold,
            enable_cmc=False,
        )

    def update(self, detections: sv.Detections, ts: float) -> sv.Detections:
        return _confirmed(self._tracker.update(detections, timestamp=ts))


class UltralyticsTracker:
    """Ultralytics' BYTETracker / BOTSORT fed with our detections."""

    def __init__(self, config: TrackerConfig, frame_rate: float = 30.0) -> None:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics.engine.results import Boxes
        from ultralytics.trackers.bot_sort import BOTSORT
        from ultralytics.trackers.byte_tracker import BYTETracker

        self._boxes = Boxes
        args = SimpleNamespace(
            tracker_type="botsort" if config.kind == "ultralytics-botsort" else "bytetrack",
            track_high_thresh=config.high_threshold,
            track_low_thresh=0.1,
            new_track_thresh=config.new_track_threshold,
            track_buffer=max(1, round(config.lost_seconds * frame_rate)),
            match_thresh=1.0 - config.match_iou,
            fuse_score=True,
            gmc_method=None,
            proximity_thresh=0.5,
            appearance_thresh=0.8,
            with_reid=False,
            model="auto",
        )
        cls = BOTSORT if config.kind == "ultralytics-botsort" else BYTETracker
        self._tracker = cls(args)

    def update(self, detections: sv.Detections, ts: float) -> sv.Detections:
        count = len(detections)
        rows = np.zeros((count, 6), dtype=np.float32)
        if count:
            rows[:, :4] = detections.xyxy
            rows[:, 4] = detections.confidence if detections.confidence is not None else 1.0
            rows[:, 5] = detections.class_id if detections.class_id is not None else 0
        boxes = self._boxes(rows, orig_shape=(1, 1))
        out = self._tracker.update(boxes, None)
        if len(out) == 0:
            return _confirmed(sv.Detections.empty())
        out = np.asarray(out)
        return sv.Detections(
            xyxy=out[:, :4].astype(np.float32),
            confidence=out[:, 5].astype(np.float32),
            class_id=out[:, 6].astype(int),
            tracker_id=out[:, 4].astype(int),
        )


def make_tracker(config: TrackerConfig, frame_rate: float = 30.0) -> Tracker:
    if config.kind == "botsort":
        return BoTSortTracker(config, frame_rate)
    if config.kind == "bytetrack":
        return ByteTracker(config, frame_rate)
    return UltralyticsTracker(config, frame_rate)
