"""Running the agent's own pipeline on a ground-truth sequence, and the
baselines on the very same tracks.

Detection runs once per sequence; every tracker/rule variant then replays the
same detections, so differences between rows are tracker and rule
differences, never detector noise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import supervision as sv

from ..config import CameraConfig, LineConfig, TrackerConfig
from ..detect import Detector
from ..pipeline import CameraAnalytics
from .mot import MotSequence


@dataclass
class DetectionPass:
    detections: list[sv.Detections]  # index k = ground-truth frame k+1
    seconds: float

    @property
    def fps(self) -> float:
        return len(self.detections) / self.seconds if self.seconds else 0.0


def detect_sequence(sequence: MotSequence, detector: Detector, imgsz: int | None = None,
                    max_frames: int | None = None) -> DetectionPass:
    detections: list[sv.Detections] = []
    spent = 0.0
    for _, image in sequence.frames(max_frames):
        started = time.perf_counter()
        detections.append(detector.detect([image], imgsz=imgsz)[0])
        spent += time.perf_counter() - started
    return DetectionPass(detections, spent)


@dataclass
class PredCrossing:
    line_id: str
    track_id: int
    direction: str
    frame: int
    kind: str = "visitor"


@dataclass
class PipelineRun:
    """What our pipeline produced on one sequence with one tracker/rule set."""

    label: str
    tracks: np.ndarray  # (M, 7): frame, track id, x1, y1, x2, y2, confidence
    crossings: list[PredCrossing]
    seconds: float  # tracking + rules only (detection excluded)
    frames: int
    suppressed: dict[str, int] = field(default_factory=dict)  # rule → crossings it held back

    def counts(self, line_id: str) -> dict[str, int]:
        result = {"in": 0, "out": 0}
        for crossing in self.crossings:
            if crossing.line_id == line_id and crossing.kind == "visitor":
                result[crossing.direction] += 1
        return result

    def tracks_at(self, frame: int) -> np.ndarray:
        return self.tracks[self.tracks[:, 0] == frame]


def run_pipeline(sequence: MotSequence, detections: DetectionPass, lines: list[LineConfig],
                 tracker: TrackerConfig, label: str, analytics_settings=None) -> PipelineRun:
    camera = CameraConfig(id=sequence.name, source=str(sequence.video or sequence.path), lines=lines)
    kwargs = {} if analytics_settings is None else {"settings": analytics_settings}
    analytics = CameraAnalytics(camera, tracker, sequence.fps, **kwargs)
    shape = (sequence.height, sequence.width, 3)
    rows: list[np.ndarray] = []
    crossings: list[PredCrossing] = []
    started = time.perf_counter()
    for index, frame_detections in enumerate(detections.detections):
        frame = index + 1
        result = analytics.process(frame_detections, shape, index / sequence.fps)
        tracks = result.tracks
        if len(tracks):
            confidence = tracks.confidence if tracks.confidence is not None else np.ones(len(tracks))
            rows.append(np.column_stack([np.full(len(tracks), frame), tracks.tracker_id, tracks.xyxy, confidence]))
        for crossing in result.crossings:  # held crossings carry the time they happened
            crossings.append(PredCrossing(crossing.line_id, crossing.track_id, crossing.direction,
                                          round(crossing.ts * sequence.fps) + 1, crossing.kind))
    # Tracks still on screen at the end leave the scene now (count-on-exit mode decides here).
    finish = getattr(analytics, "finish", None)
    if finish is not None:
        for crossing in finish(len(detections.detections) / sequence.fps).crossings:
            crossings.append(PredCrossing(crossing.line_id, crossing.track_id, crossing.direction,
                                          round(crossing.ts * sequence.fps) + 1, crossing.kind))
    seconds = time.perf_counter() - started
    table = np.concatenate(rows) if rows else np.empty((0, 7))
    suppressed = getattr(analytics, "rule_stats", lambda: {})()
    return PipelineRun(label, table, crossings, seconds, len(detections.detections), suppressed)


# -- baselines on the same tracks ------------------------------------------------


def _line_pixels(line: LineConfig, sequence: MotSequence) -> tuple[tuple[float, float], tuple[float, float]]:
    (x1, y1), (x2, y2) = line.points
    return (x1 * sequence.width, y1 * sequence.height), (x2 * sequence.width, y2 * sequence.height)


def _probe_direction(trigger, line: LineConfig, sequence: MotSequence) -> dict[str, str]:
    """Which of a baseline's own labels ("in"/"out") means our "in": walk a box
    from our out side to our in side across the middle of the segment."""
    (x1, y1), (x2, y2) = _line_pixels(line, sequence)
    mx, my = (x1 + x2) / 2, (y1 + y2) / 2
    nx, ny = -(y2 - y1), (x2 - x1)  # normal; with y down, +n is the right-hand side on the picture
    norm = (nx * nx + ny * ny) ** 0.5
    nx, ny = nx / norm, ny / norm
    sign = 1 if line.in_side == "right" else -1
    step = 0.05 * min(sequence.width, sequence.height)
    path = [(mx - sign * nx * step * k, my - sign * ny * step * k) for k in (2, 1)]
    path += [(mx + sign * nx * step * k, my + sign * ny * step * k) for k in (1, 2)]
    label = trigger(path)
    return {label: "in", ("out" if label == "in" else "in"): "out"}


class LineZoneBaseline:
    """supervision's ``LineZone`` as shipped (default anchors: the four box corners)."""

    name = "supervision LineZone"

    def __init__(self, line: LineConfig, sequence: MotSequence, anchors=None) -> None:
        start, end = _line_pixels(line, sequence)
        self._make = lambda: sv.LineZone(sv.Point(*start), sv.Point(*end),
                                        **({"triggering_anchors": anchors} if anchors else {}))
        self.zone = self._make()
        self.mapping = _probe_direction(self._probe, line, sequence)

    def _probe(self, path) -> str:
        zone = self._make()
        for x, y in path:
            box = np.array([[x - 10, y - 60, x + 10, y]], dtype=float)
            zone.trigger(sv.Detections(xyxy=box, tracker_id=np.array([1])))
        return "in" if zone.in_count else "out"

    def update(self, tracks: np.ndarray) -> None:
        if len(tracks):
            self.zone.trigger(sv.Detections(xyxy=tracks[:, 2:6].astype(float), tracker_id=tracks[:, 1].astype(int)))
        else:
            self.zone.trigger(sv.Detections.empty())

    def counts(self) -> dict[str, int]:
        own = {"in": self.zone.in_count, "out": self.zone.out_count}
        return {ours: own[theirs] for theirs, ours in self.mapping.items()}


class ObjectCounterBaseline:
    """Ultralytics ``solutions.ObjectCounter``'s counting rule, fed our tracks
    (box centre, each track id counted at most once)."""

    name = "Ultralytics ObjectCounter"

    def __init__(self, line: LineConfig, sequence: MotSequence, model_path: Path) -> None:
        import torch
        from ultralytics.solutions import ObjectCounter

        self._torch = torch
        start, end = _line_pixels(line, sequence)

        def make():
            counter = ObjectCounter(region=[start, end], model=str(model_path), show=False, verbose=False)
            counter.initialize_region()
            return counter

        self._make = make
        self.counter = make()
        self.mapping = _probe_direction(self._probe, line, sequence)

    def _feed(self, counter, track_id: int, box) -> None:
        counter.store_tracking_history(track_id, self._torch.tensor(box, dtype=self._torch.float32))
        history = counter.track_history[track_id]
        previous = history[-2] if len(history) > 1 else None
        counter.count_objects(history[-1], track_id, previous, 0)

    def _probe(self, path) -> str:
        counter = self._make()
        for x, y in path:
            self._feed(counter, 1, [x - 10, y - 60, x + 10, y])
        return "in" if counter.in_count else "out"

    def update(self, tracks: np.ndarray) -> None:
        for row in tracks:
            self._feed(self.counter, int(row[1]), [float(v) for v in row[2:6]])

    def counts(self) -> dict[str, int]:
        own = {"in": self.counter.in_count, "out": self.counter.out_count}
        return {ours: own[theirs] for theirs, ours in self.mapping.items()}


def run_baselines(sequence: MotSequence, run: PipelineRun, lines: list[LineConfig],
                  model_path: Path | None) -> dict[str, dict[str, dict[str, int]]]:
    """baseline name → line id → {"in", "out"}, counted on ``run``'s tracks."""
    makers = {
        "supervision LineZone": lambda line: LineZoneBaseline(line, sequence),
        "supervision LineZone (bottom centre)": lambda line: LineZoneBaseline(
            line, sequence, anchors=[sv.Position.BOTTOM_CENTER]),
    }
    if model_path is not None:
        makers["Ultralytics ObjectCounter"] = lambda line: ObjectCounterBaseline(line, sequence, model_path)
    results: dict[str, dict[str, dict[str, int]]] = {}
    for name, make in makers.items():
        counters = {line.id: make(line) for line in lines}
        for frame in range(1, run.frames + 1):
            tracks = run.tracks_at(frame)
            for counter in counters.values():
                counter.update(tracks)
        results[name] = {line_id: counter.counts() for line_id, counter in counters.items()}
    return results
