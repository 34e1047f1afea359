"""MOTChallenge ground truth: reading a sequence and deriving true line counts.

A sequence folder holds ``gt/gt.txt`` (``frame, id, x, y, w, h, conf, …``,
frames 1-based), optionally ``seqinfo.ini``, and its pictures either as
``img1/*.jpg`` or as one video file (ground-truth frame N = video frame N−1).
Rows with confidence 0 are "ignore" boxes and are dropped everywhere.

The true count of a line is every crossing of a ground-truth track's box
bottom-centre over the line *segment* between two consecutive annotated
frames of that track: no band, no cooldown, nothing learned from our rules.
"""

from __future__ import annotations

import configparser
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..geometry import Point, segments_intersect, side_of_line

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class SequenceError(ValueError):
    """A ground-truth folder that cannot be evaluated, worded for the user."""


@dataclass
class MotSequence:
    name: str
    path: Path
    gt: np.ndarray  # (N, 6+) float: frame, id, x, y, w, h, conf, … ; conf-0 rows removed
    width: int
    height: int
    fps: float
    length: int  # frames in the sequence
    video: Path | None = None
    images: list[Path] | None = None

    def frames(self, max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(ground-truth frame number, BGR image), in order, from 1."""
        limit = self.length if max_frames is None else min(self.length, max_frames)
        if self.images is not None:
            for number, image_path in enumerate(self.images[:limit], start=1):
                image = cv2.imread(str(image_path))
                if image is None:
                    raise SequenceError(f"{image_path}: cannot read the image")
                yield number, image
            return
        capture = cv2.VideoCapture(str(self.video))
        if not capture.isOpened():
            raise SequenceError(f"{self.video}: cannot open the video")
        try:
            for number in range(1, limit + 1):
                ok, image = capture.read()
                if not ok:
                    break
                yield number, image
        finally:
            capture.release()


def _seqinfo(path: Path) -> dict[str, str]:
    info = path / "seqinfo.ini"
    if not info.exists():
        return {}
    parser = configparser.ConfigParser()
    parser.read(info)
    return dict(parser["Sequence"]) if parser.has_section("Sequence") else {}


def load_gt(path: Path) -> np.ndarray:
    try:
        rows = np.loadtxt(path, delimiter=",", ndmin=2)
    except (OSError, ValueError) as exc:
        raise SequenceError(f"{path}: not a MOTChallenge gt.txt ({exc})") from None
    if rows.size == 0 or rows.shape[1] < 6:
        raise SequenceError(f"{path}: expected rows 'frame, id, x, y, w, h, conf, ...'")
    if rows.shape[1] >= 7:
        rows = rows[rows[:, 6] != 0]
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


def load_sequence(path: str | Path) -> MotSequence:
    path = Path(path)
    gt_file = path / "gt" / "gt.txt"
    if not gt_file.exists():
        raise SequenceError(f"{path}: no gt/gt.txt (a MOTChallenge sequence folder has gt/gt.txt)")
    info = _seqinfo(path)
    gt = load_gt(gt_file)
    images_dir = path / info.get("imdir", "img1")
    images = sorted(p for p in images_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if images_dir.is_dir() else []
    videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    video = None
    if images:
        first = cv2.imread(str(images[0]))
        height, width = first.shape[:2]
        video_fps = 0.0
        count = len(images)
    elif videos:
        video = videos[0]
        capture = cv2.VideoCapture(str(video))
        if not capture.isOpened():
            raise SequenceError(f"{video}: cannot open the video")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        video_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
    else:
        raise SequenceError(f"{path}: no pictures (neither {images_dir.name}/ with images nor a video file)")
    # The annotation's declared rate (seqinfo) wins over a container's header.
    fps = float(info.get("framerate") or 0) or video_fps or 25.0
    length = int(info.get("seqlength") or 0) or count
    length = min(length, count) if count > 0 else length
    return MotSequence(
        name=info.get("name") or path.name,
        path=path,
        gt=gt,
        width=int(info.get("imwidth") or width),
        height=int(info.get("imheight") or height),
        fps=fps,
        length=length,
        video=video,
        images=images or None,
    )


def find_sequences(root: str | Path) -> list[Path]:
    """Every folder under ``root`` (or ``root`` itself) that holds gt/gt.txt."""
    root = Path(root)
    if (root / "gt" / "gt.txt").exists():
        return [root]
    found = sorted(p.parent.parent for p in root.glob("*/gt/gt.txt"))
    if not found:
        raise SequenceError(f"{root}: no MOTChallenge sequences (folders with gt/gt.txt) found")
    return found


@dataclass(frozen=True, slots=True)
class TrueCrossing:
    line_id: str
    gt_id: int
    direction: str  # "in" / "out", same convention as our LineCounter
    frame: int  # the ground-truth frame where the anchor is first on the new side
    point: Point  # anchor there, normalised


def gt_tracks(gt: np.ndarray, width: int, height: int, max_frame: int | None = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """id → (frames, normalised bottom-centre anchors), sorted by frame."""
    tracks = {}
    rows = gt if max_frame is None else gt[gt[:, 0] <= max_frame]
    for gt_id in np.unique(rows[:, 1]).astype(int):
        own = rows[rows[:, 1] == gt_id]
        own = own[np.argsort(own[:, 0], kind="stable")]
        anchors = np.stack([(own[:, 2] + own[:, 4] / 2) / width, (own[:, 3] + own[:, 5]) / height], axis=1)
        tracks[gt_id] = (own[:, 0].astype(int), anchors)
    return tracks


def true_crossings(
    gt: np.ndarray,
    width: int,
    height: int,
    lines: Sequence[tuple[str, Point, Point, str]],
    max_frame: int | None = None,
) -> list[TrueCrossing]:
    """Every segment crossing of every ground-truth track, per line.

    ``lines`` are (id, p1, p2, in_side) in normalised coordinates.
    """
    found: list[TrueCrossing] = []
    tracks = gt_tracks(gt, width, height, max_frame)
    for line_id, p1, p2, in_side in lines:
        in_sign = 1 if in_side == "right" else -1
        for gt_id, (frames, anchors) in tracks.items():
            for k in range(1, len(frames)):
                a, b = tuple(anchors[k - 1]), tuple(anchors[k])
                before, after = side_of_line(p1, p2, a), side_of_line(p1, p2, b)
                if before == 0 or after == 0 or before == after:
                    continue
                if segments_intersect(a, b, p1, p2):
                    direction = "in" if after == in_sign else "out"
                    found.append(TrueCrossing(line_id, gt_id, direction, int(frames[k]), b))
    found.sort(key=lambda c: (c.frame, c.line_id, c.gt_id))
    return found
