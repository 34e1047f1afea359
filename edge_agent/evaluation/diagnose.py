"""Why a count is wrong: every missed and every extra crossing gets a cause.

Predicted tracks are matched to ground-truth boxes frame by frame (Hungarian
on IoU ≥ 0.5, as CLEAR-MOT does), which gives each predicted crossing a
ground-truth identity. A predicted crossing pairs with a true crossing of the
same line, direction and identity within five seconds (a dead band delays the
count of a slow walker until they leave it). What is left over is
classified:

misses  — ``not detected`` (no detection overlaps the person on either side of
the line), ``not tracked`` (detected, but no confirmed track), ``id switch``
(a different track on each side), ``rule`` (one track on both sides, our rule
held the crossing back), ``anchor`` (one track on both sides, but its box
bottom-centre did not pass through the segment);
extras  — ``false track`` (the track is nobody in the ground truth),
``re-count`` (the person's crossing was already counted, e.g. after an ID
switch), ``jitter`` (the person never crossed there: box movement or a wrong
anchor made the track cross).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..geometry import box_iou
from .mot import TrueCrossing
from .run import DetectionPass, PipelineRun, PredCrossing

IOU_MATCH = 0.5


def _gt_boxes(gt: np.ndarray, frame: int) -> tuple[np.ndarray, np.ndarray]:
    rows = gt[gt[:, 0] == frame]
    xyxy = np.column_stack([rows[:, 2], rows[:, 3], rows[:, 2] + rows[:, 4], rows[:, 3] + rows[:, 5]])
    return rows[:, 1].astype(int), xyxy


@dataclass(frozen=True)
class CountError:
    error: str  # "miss" or "extra"
    cause: str
    line_id: str
    direction: str
    frame: int
    person: int | None
    track: int | None = None

    def __str__(self) -> str:
        who = f"person {self.person}" if self.person is not None else "nobody"
        track = f", track {self.track}" if self.track is not None else ""
        return f"{self.error} ({self.cause}): {self.line_id} {self.direction} at frame {self.frame}, {who}{track}"


@dataclass
class Diagnosis:
    matched: int = 0
    errors: list[CountError] = field(default_factory=list)

    @property
    def misses(self) -> Counter:
        return Counter(e.cause for e in self.errors if e.error == "miss")

    @property
    def extras(self) -> Counter:
        return Counter(e.cause for e in self.errors if e.error == "extra")

    @property
    def details(self) -> list[str]:
        return [str(e) for e in self.errors]

    def unseen(self, line_id: str, direction: str) -> int:
        """True crossings the detector never saw (no box on either side of the line)."""
        return sum(1 for e in self.errors if e.error == "miss" and e.cause == "not detected"
                   and e.line_id == line_id and e.direction == direction)

    def as_dict(self) -> dict:
        return {"matched": self.matched, "misses": dict(self.misses), "extras": dict(self.extras),
                "errors": [str(e) for e in self.errors]}


def identities(gt: np.ndarray, run: PipelineRun) -> dict[tuple[int, int], int]:
    """(frame, track id) → ground-truth id, by per-frame Hungarian matching."""
    found: dict[tuple[int, int], int] = {}
    for frame in range(1, run.frames + 1):
        gt_ids, gt_xyxy = _gt_boxes(gt, frame)
        tracks = run.tracks_at(frame)
        if not len(gt_ids) or not len(tracks):
            continue
        iou = box_iou(gt_xyxy, tracks[:, 2:6])
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols):
            if iou[r, c] >= IOU_MATCH:
                found[(frame, int(tracks[c, 1]))] = int(gt_ids[r])
    return found


def diagnose(gt: np.ndarray, truth: list[TrueCrossing], run: PipelineRun, detections: DetectionPass,
             anchors_cross, fps: float) -> Diagnosis:
    """``anchors_cross(line_id, boxes)`` says whether a track's box bottom-centre, moving
    through ``boxes`` (pixel xyxy, in order), passes through the line segment."""
    who = identities(gt, run)
    window = max(1, round(5 * fps))
    result = Diagnosis()
    by_track_frame = {(int(r[0]), int(r[1])): r for r in run.tracks}
    track_of_gt: dict[tuple[int, int], int] = {(f, g): t for (f, t), g in who.items()}

    def identities_near(crossing: PredCrossing) -> list[int]:
        """Who the track was just before and just after it crossed (two people
        can swap IDs right at the line), nearest frames first."""
        found: list[int] = []
        for df in (0, -1, 1, -2, 2, -3, 3):
            gid = who.get((crossing.frame + df, crossing.track_id))
            if gid is not None and gid not in found:
                found.append(gid)
        return found

    pending = defaultdict(list)  # (line, direction, gt id) → true crossings not yet paired
    for crossing in truth:
        pending[(crossing.line_id, crossing.direction, crossing.gt_id)].append(crossing)
    paired_true: set[int] = set()
    leftover: list[tuple[PredCrossing, int | None]] = []
    visitor = [c for c in run.crossings if c.kind == "visitor"]
    for crossing in sorted(visitor, key=lambda c: c.frame):
        gids = identities_near(crossing)
        gid = gids[0] if gids else None
        candidates = [t for g in gids for t in pending.get((crossing.line_id, crossing.direction, g), [])
                      if id(t) not in paired_true and abs(t.frame - crossing.frame) <= window]
        if candidates:
            best = min(candidates, key=lambda t: abs(t.frame - crossing.frame))
            paired_true.add(id(best))
            result.matched += 1
        else:
            leftover.append((crossing, gid))

    for crossing, gid in leftover:
        if gid is None:
            cause = "false track"
        else:
            already = [t for t in pending.get((crossing.line_id, crossing.direction, gid), [])
                       if abs(t.frame - crossing.frame) <= 2 * window]
            cause = "re-count" if already else "jitter"
        result.errors.append(CountError("extra", cause, crossing.line_id, crossing.direction, crossing.frame,
                                        gid, crossing.track_id))

    for crossing in truth:
        if id(crossing) in paired_true:
            continue
        before, after = crossing.frame - 1, crossing.frame
        # the true previous annotated frame may be earlier (occlusion gaps): use the nearest one
        previous = gt[(gt[:, 1] == crossing.gt_id) & (gt[:, 0] < crossing.frame)]
        if len(previous):
            before = int(previous[:, 0].max())
        t_before = track_of_gt.get((before, crossing.gt_id))
        t_after = track_of_gt.get((after, crossing.gt_id))
        if t_before is None and t_after is None:
            seen = False
            for frame in (before, after):
                gt_ids, gt_xyxy = _gt_boxes(gt, frame)
                box = gt_xyxy[gt_ids == crossing.gt_id]
                dets = detections.detections[frame - 1] if frame - 1 < len(detections.detections) else None
                if dets is not None and len(dets) and len(box) and box_iou(box, dets.xyxy).max() >= IOU_MATCH:
                    seen = True
            cause = "not tracked" if seen else "not detected"
        elif t_before is None or t_after is None:
            cause = "not tracked"
        elif t_before != t_after:
            cause = "id switch"
        else:
            rows = [by_track_frame[(f, t_before)] for f in range(before - window // 5, after + window // 5 + 1)
                    if (f, t_before) in by_track_frame]
            path = [row[2:6] for row in rows]
            cause = "rule" if anchors_cross(crossing.line_id, path) else "anchor"
        result.errors.append(CountError("miss", cause, crossing.line_id, crossing.direction, crossing.frame,
                                        crossing.gt_id))
    return result
