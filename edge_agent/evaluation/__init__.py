"""Accuracy against ground truth: ``edge-agent eval``.

For each MOTChallenge sequence: derive the true in/out counts of each line
from the ground-truth tracks (``mot``), detect once, run our pipeline with
each requested tracker (``run``), count the same tracks with supervision's
``LineZone`` and Ultralytics' ``ObjectCounter`` rules, compute MOTA/IDF1/HOTA
(``metrics``) and explain every count error (``diagnose``).
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..config import LineConfig, TrackerConfig
from ..detect import Detector
from ..geometry import segments_intersect, side_of_line
from .diagnose import Diagnosis, diagnose
from .metrics import TrackingMetrics, tracking_metrics
from .mot import MotSequence, true_crossings
from .run import DetectionPass, PipelineRun, detect_sequence, run_baselines, run_pipeline

DEFAULT_LINES = [
    LineConfig(id="horizontal", points=[(0.0, 0.5), (1.0, 0.5)]),
    LineConfig(id="vertical", points=[(0.5, 0.0), (0.5, 1.0)]),
    LineConfig(id="diagonal", points=[(0.0, 0.0), (1.0, 1.0)]),
    LineConfig(id="anti-diagonal", points=[(0.0, 1.0), (1.0, 0.0)]),
]
DIRECTIONS = ("in", "out")


def accuracy(predicted: int, true: int) -> float | None:
    """1 − |pred − true| / true (None when nothing truly crossed)."""
    if true == 0:
        return None
    return 1.0 - abs(predicted - true) / true


@dataclass
class TrackerReport:
    tracker: str
    counts: dict[str, dict[str, int]]
    metrics: TrackingMetrics
    diagnosis: Diagnosis
    seconds: float
    rule_stats: dict[str, int]
    baselines: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)


@dataclass
class SequenceReport:
    sequence: str
    frames: int
    fps: float
    lines: list[LineConfig]
    truth: dict[str, dict[str, int]]
    detection: DetectionPass
    backend: str
    trackers: list[TrackerReport]

    def abs_error(self, counts: dict[str, dict[str, int]]) -> int:
        return sum(abs(counts[line.id][d] - self.truth[line.id][d]) for line in self.lines for d in DIRECTIONS)

    def to_dict(self) -> dict:
        out = {
            "sequence": self.sequence, "frames": self.frames, "sequence_fps": self.fps,
            "backend": self.backend, "detect_fps": round(self.detection.fps, 1),
            "lines": {line.id: [list(p) for p in line.points] for line in self.lines},
            "truth": self.truth, "trackers": [],
        }
        for report in self.trackers:
            lines = {}
            for line in self.lines:
                lines[line.id] = {}
                for d in DIRECTIONS:
                    true, pred = self.truth[line.id][d], report.counts[line.id][d]
                    unseen = report.diagnosis.unseen(line.id, d)
                    lines[line.id][d] = {
                        "true": true, "ours": pred, "accuracy": accuracy(pred, true),
                        "detector_unseen": unseen, "accuracy_seen": accuracy(pred, true - unseen),
                        **{name: counts[line.id][d] for name, counts in report.baselines.items()},
                    }
            frames = self.detection.detections and len(self.detection.detections)
            pipeline_seconds = self.detection.seconds + report.seconds
            out["trackers"].append({
                "tracker": report.tracker,
                "lines": lines,
                "abs_error": self.abs_error(report.counts),
                # misses + extras: net counts let an extra hide a miss, this does not
                "misses_plus_extras": len(report.diagnosis.errors),
                "baseline_abs_error": {name: self.abs_error(c) for name, c in report.baselines.items()},
                "mota": report.metrics.mota, "idf1": report.metrics.idf1, "hota": report.metrics.hota,
                "id_switches": report.metrics.id_switches,
                "det_recall": report.metrics.det_recall, "det_precision": report.metrics.det_precision,
                "frames_per_second": round(frames / pipeline_seconds, 1) if pipeline_seconds else None,
                "track_and_rules_ms_per_frame": round(1000 * report.seconds / max(1, frames), 2),
                "rules_held_back": report.rule_stats,
                "errors": report.diagnosis.as_dict(),
            })
        return out


def _anchors_cross_factory(sequence: MotSequence, lines: list[LineConfig]):
    by_id = {line.id: line for line in lines}

    def anchors_cross(line_id: str, boxes) -> bool:
        line = by_id[line_id]
        p1, p2 = tuple(line.points[0]), tuple(line.points[1])
        points = [((b[0] + b[2]) / 2 / sequence.width, b[3] / sequence.height) for b in boxes]
        for a, b in zip(points, points[1:]):
            sa, sb = side_of_line(p1, p2, a), side_of_line(p1, p2, b)
            if sa and sb and sa != sb and segments_intersect(a, b, p1, p2):
                return True
        return False

    return anchors_cross


def evaluate_sequence(sequence: MotSequence, detector: Detector, trackers: list[TrackerConfig],
                      lines: list[LineConfig] | None = None, analytics_settings=None,
                      imgsz: int | None = None, max_frames: int | None = None,
                      baseline_model: Path | None = None, baselines: bool = True) -> SequenceReport:
    lines = lines or DEFAULT_LINES
    detection = detect_sequence(sequence, detector, imgsz=imgsz, max_frames=max_frames)
    frames = len(detection.detections)
    spec = [(line.id, tuple(line.points[0]), tuple(line.points[1]), line.in_side) for line in lines]
    truth_list = true_crossings(sequence.gt, sequence.width, sequence.height, spec, max_frame=frames)
    truth = {line.id: {d: 0 for d in DIRECTIONS} for line in lines}
    for crossing in truth_list:
        truth[crossing.line_id][crossing.direction] += 1
    anchors_cross = _anchors_cross_factory(sequence, lines)
    reports = []
    for tracker in trackers:
        run: PipelineRun = run_pipeline(sequence, detection, lines, tracker, tracker.kind, analytics_settings)
        counts = {line.id: run.counts(line.id) for line in lines}
        metrics = tracking_metrics(sequence.gt, run.tracks, max_frame=frames)
        diagnosis = diagnose(sequence.gt, truth_list, run, detection, anchors_cross, sequence.fps)
        report = TrackerReport(tracker.kind, counts, metrics, diagnosis, run.seconds, run.suppressed)
        if baselines:
            report.baselines = run_baselines(sequence, run, lines, baseline_model)
        reports.append(report)
    return SequenceReport(sequence.name, frames, sequence.fps, lines, truth, detection,
                          getattr(detector, "backend", "?"), reports)


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{100 * value:5.1f}"


def format_report(report: SequenceReport, details: bool = False) -> str:
    data = report.to_dict()
    out = [f"{report.sequence}: {report.frames} frames at {report.fps:g} fps, detector {report.backend} "
           f"{report.detection.fps:.1f} frames/s"]
    for tracker in data["trackers"]:
        names = list(tracker["baseline_abs_error"])
        short = {"supervision LineZone": "LineZone", "supervision LineZone (bottom centre)": "LZ-bc",
                 "Ultralytics ObjectCounter": "ObjCnt"}
        out.append(f"\n  tracker {tracker['tracker']}: MOTA {100 * tracker['mota']:.1f}  IDF1 {100 * tracker['idf1']:.1f}"
                   f"  HOTA {100 * tracker['hota']:.1f}  ID switches {tracker['id_switches']}  "
                   f"pipeline {tracker['frames_per_second']} frames/s "
                   f"(tracking+rules {tracker['track_and_rules_ms_per_frame']} ms/frame)")
        header = f"  {'line':14} {'dir':3} {'true':>4} {'ours':>4} {'acc%':>5} {'seen%':>5}"
        header += "".join(f" {short.get(n, n)[:8]:>8}" for n in names)
        out.append(header)
        for line_id, directions in tracker["lines"].items():
            for d, cell in directions.items():
                row = (f"  {line_id:14} {d:3} {cell['true']:4d} {cell['ours']:4d} {_pct(cell['accuracy'])} "
                       f"{_pct(cell['accuracy_seen'])}")
                row += "".join(f" {cell[n]:8d}" for n in names)
                out.append(row)
        total = f"  total |pred-true|: ours {tracker['abs_error']}"
        for name in names:
            theirs = tracker["baseline_abs_error"][name]
            ratio = f"{theirs / tracker['abs_error']:.1f}x ours" if tracker["abs_error"] else "ours is 0"
            total += f"; {short.get(name, name)} {theirs} ({ratio})"
        out.append(total)
        errors = tracker["errors"]
        out.append(f"  crossings: {errors['matched']} counted right, {tracker['misses_plus_extras']} wrong "
                   "(misses + extras, which net counts partly cancel)")
        out.append(f"  count errors: misses {errors['misses'] or '{}'}; extras {errors['extras'] or '{}'}; "
                   f"held back by rules {tracker['rules_held_back'] or '{}'}")
        if details:
            out.extend(f"    {line}" for line in errors["errors"])
    if any(t["baseline_abs_error"] for t in data["trackers"]):
        out.append("  (LineZone: supervision defaults, four box corners; LZ-bc: LineZone on the bottom centre; "
                   "ObjCnt: Ultralytics ObjectCounter's rule; all on the same tracks as ours)")
    out.append("  seen%: accuracy against the crossings the detector saw (true minus 'not detected')")
    return "\n".join(out)
