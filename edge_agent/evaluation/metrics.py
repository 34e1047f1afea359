"""Tracking metrics (MOTA, IDF1, HOTA) from a maintained package.

Roboflow ``trackers.eval`` (already our tracker's package, numpy 2, written to
match TrackEval's matching and metric code) computes CLEAR, Identity and HOTA.
Both sides are written as MOT17-style files (class 1 = pedestrian) because the
MOT15 files' 8th column is a world coordinate, not a class.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TrackingMetrics:
    mota: float
    idf1: float
    hota: float
    id_switches: int
    false_negatives: int
    false_positives: int
    gt_detections: int
    det_recall: float
    det_precision: float


def write_mot(path: Path, rows: np.ndarray) -> None:
    """rows: frame, id, x, y, w, h (pixels); written with conf 1, class 1, visibility 1."""
    with path.open("w") as handle:
        for frame, track_id, x, y, w, h in rows[:, :6]:
            handle.write(f"{int(frame)},{int(track_id)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,1,1\n")


def tracking_metrics(gt: np.ndarray, tracks_xyxy: np.ndarray, max_frame: int | None = None,
                     keep_dir: Path | None = None) -> TrackingMetrics:
    """``gt``: MOT rows (conf-0 already dropped); ``tracks_xyxy``: frame, id, x1, y1, x2, y2, …"""
    from trackers.eval import evaluate_mot_sequence

    if max_frame is not None:
        gt = gt[gt[:, 0] <= max_frame]
    tracks = tracks_xyxy[:, :6].copy()
    tracks[:, 4:6] -= tracks[:, 2:4]  # xyxy → xywh
    with tempfile.TemporaryDirectory() as tmp:
        folder = keep_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        write_mot(folder / "gt.txt", gt)
        write_mot(folder / "tracks.txt", tracks if len(tracks) else np.empty((0, 6)))
        if not len(tracks):
            (folder / "tracks.txt").write_text("1,-1,0,0,1,1,1,1,1\n")  # the reader refuses an empty file
        result = evaluate_mot_sequence(folder / "gt.txt", folder / "tracks.txt",
                                       metrics=["CLEAR", "HOTA", "Identity"])
    clear, hota, identity = result.CLEAR, result.HOTA, result.Identity
    return TrackingMetrics(
        mota=float(clear.MOTA),
        idf1=float(identity.IDF1),
        hota=float(hota.HOTA),
        id_switches=int(clear.IDSW),
        false_negatives=int(clear.CLR_FN),
        false_positives=int(clear.CLR_FP),
        gt_detections=int(clear.CLR_TP + clear.CLR_FN),
        det_recall=float(clear.CLR_Re),
        det_precision=float(clear.CLR_Pr),
    )
