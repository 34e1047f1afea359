"""Per-camera analytics: detections → tracks → crossings, zone visits, heatmap.

Detection is shared between cameras (one model in memory); everything that
holds per-camera state (the tracker, line counters, zone visits, the heatmap)
lives here. Pure apart from the tracker and the optional pose model: the
caller writes what ``process`` returns (see ``edge_agent.analytics.recorder``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import supervision as sv

from .analytics.heatmap import HeatmapAccumulator, HeatmapChunk
from .analytics.settings import AnalyticsSettings, line_rules
from .analytics.zones import ZoneEvent, ZoneObservation, ZoneSpec, ZoneTracker, starts_in_staff_zone
from .config import CameraConfig, TrackerConfig
from .counting import Crossing, LineCounter, Observation
from .tracking import Tracker, make_tracker


@dataclass(slots=True)
class FrameResult:
    camera_id: str
    ts: float
    tracks: sv.Detections
    crossings: list[Crossing] = field(default_factory=list)
    zone_events: list[ZoneEvent] = field(default_factory=list)
    heatmap: HeatmapChunk | None = None  # a finished minute of the heatmap, when one just ended


def anchors_normalised(tracks: sv.Detections, frame_shape: Sequence[int]) -> np.ndarray:
    """Bottom centre of each box (where the feet are), in 0–1 coordinates."""
    height, width = frame_shape[:2]
    if len(tracks) == 0:
        return np.empty((0, 2), dtype=np.float64)
    xyxy = tracks.xyxy.astype(np.float64)
    return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2 / width, xyxy[:, 3] / height], axis=1)


@dataclass(slots=True)
class _TrackInfo:
    first_ts: float
    last_ts: float
    staff: bool


def _empty_tracks() -> sv.Detections:
    empty = sv.Detections.empty()
    empty.tracker_id = np.empty(0, dtype=int)
    return empty


class CameraAnalytics:
    """Owns one camera's tracker, line counters, zone visits and heatmap."""

    def __init__(self, camera: CameraConfig, tracker_config: TrackerConfig, frame_rate: float = 30.0,
                 tracker: Tracker | None = None, settings: AnalyticsSettings | None = None,
                 pose=None) -> None:
        self.camera = camera
        self.settings = settings or AnalyticsSettings()
        self.tracker = tracker or make_tracker(tracker_config, frame_rate)
        self.counters = [
            LineCounter(line.id, tuple(line.points[0]), tuple(line.points[1]), line.in_side,
                        rules=line_rules(self.settings, line.rules, line.hysteresis, line.count_on_exit))
            for line in camera.lines
        ]
        self.zone_specs = [
            ZoneSpec(zone.id, tuple(tuple(p) for p in zone.polygon), zone.kind, zone.anchor, zone.product)
            for zone in camera.zones
        ]
        self.zones = ZoneTracker(self.zone_specs, self.settings.zone_exit_grace_seconds,
                                 self.settings.interaction_min_seconds)
        self._has_shelves = any(zone.kind == "shelf" for zone in self.zone_specs)
        cols, rows = self.settings.heatmap_grid
        self.heatmap = HeatmapAccumulator(cols, rows) if self.settings.heatmap else None
        self._heat_minute: int | None = None
        self.pose = pose if self._has_shelves else None
        self._frames = 0
        self._tracks: dict[int, _TrackInfo] = {}
        self._aspect: float | None = None
        # A track the tracker has not returned for this long is gone for good
        # (the tracker itself gives up after ``lost_seconds``).
        self.gone_after = max(1.0, 1.5 * tracker_config.lost_seconds)

    def _set_aspect(self, frame_shape: Sequence[int]) -> None:
        height, width = frame_shape[:2]
        aspect = width / height
        if aspect != self._aspect:
            self._aspect = aspect
            for counter in self.counters:
                counter.set_aspect(aspect)

    def process(self, detections: sv.Detections, frame_shape: Sequence[int], ts: float,
                image: np.ndarray | None = None) -> FrameResult:
        self._set_aspect(frame_shape)
        self._frames += 1
        tracks = self.tracker.update(detections, ts)
        height, width = frame_shape[:2]
        feet = anchors_normalised(tracks, frame_shape)
        xyxy = tracks.xyxy.astype(np.float64) if len(tracks) else np.empty((0, 4))
        heights = (xyxy[:, 3] - xyxy[:, 1]) / height
        centres_y = (xyxy[:, 1] + xyxy[:, 3]) / 2 / height
        confidence = tracks.confidence if tracks.confidence is not None else np.ones(len(tracks))
        ids = [int(t) for t in tracks.tracker_id] if len(tracks) else []

        wrists: dict[int, tuple] = {}
        if self.pose is not None and image is not None and (self._frames - 1) % self.settings.pose_every_frames == 0:
            from .analytics.pose import wrists_by_track

            wrists = wrists_by_track(self.pose.estimate(image), xyxy, np.asarray(ids),
                                     self.settings.wrist_min_confidence)

        observations: list[Observation] = []
        zone_observations: list[ZoneObservation] = []
        staff_after = self.settings.staff_after_seconds
        for k, track_id in enumerate(ids):
            point = (float(feet[k, 0]), float(feet[k, 1]))
            info = self._tracks.get(track_id)
            if info is None:
                info = self._tracks[track_id] = _TrackInfo(ts, ts, starts_in_staff_zone(point, self.zone_specs))
            info.last_ts = ts
            if staff_after is not None and ts - info.first_ts >= staff_after:
                info.staff = True
            observations.append(Observation(track_id, point, float(heights[k]), float(confidence[k]), info.staff))
            zone_observations.append(ZoneObservation(track_id, point, (point[0], float(centres_y[k])), info.staff,
                                                     wrists.get(track_id)))

        crossings: list[Crossing] = []
        for counter in self.counters:
            crossings.extend(counter.update(observations, ts))
        zone_events = self.zones.update(zone_observations, ts)

        chunk = None
        if self.heatmap is not None:
            minute = math.floor(ts / 60)
            if self._heat_minute is not None and minute != self._heat_minute:
                chunk = self.heatmap.take(self._heat_minute * 60.0)
            self._heat_minute = minute
            self.heatmap.add(obs.anchor for obs in observations if not obs.staff)

        gone = [tid for tid, info in self._tracks.items() if ts - info.last_ts > self.gone_after]
        if gone:
            crossings.extend(self._end(gone, ts))
            zone_events.extend(self.zones.end_tracks(gone))
        return FrameResult(self.camera.id, ts, tracks, crossings, zone_events, chunk)

    def _end(self, track_ids: list[int], ts: float) -> list[Crossing]:
        crossings: list[Crossing] = []
        for counter in self.counters:
            crossings.extend(counter.end_tracks(track_ids, ts))
        for track_id in track_ids:
            self._tracks.pop(track_id, None)
        return crossings

    def finish(self, ts: float, how: str = "shutdown") -> FrameResult:
        """The camera stops: decide every held crossing, close open visits, hand
        over the heatmap. (``how`` is recorded on the visits it closes.)"""
        crossings = self._end(list(self._tracks), ts)
        zone_events = self.zones.close_all(how)
        chunk = None
        if self.heatmap is not None and self._heat_minute is not None:
            chunk = self.heatmap.take(self._heat_minute * 60.0)
        return FrameResult(self.camera.id, ts, _empty_tracks(), crossings, zone_events, chunk)

    def rule_stats(self) -> dict[str, int]:
        """Crossings each rule held back, over all lines (for evaluation and health)."""
        total: Counter = Counter()
        for counter in self.counters:
            total.update(counter.stats)
        return dict(total)

    def zone_occupancy(self) -> dict[str, int]:
        return self.zones.occupancy()
