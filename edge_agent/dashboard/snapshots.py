"""Privacy-safe camera pictures for the Setup page and the heatmap.

A frame observer: every ``every`` seconds per camera it takes the frame the
pipeline just processed, pixelates every person box (the tracks *and* a fresh
detection of that very frame, padded), and only then encodes it. Nothing else
leaves the detection thread; no unblurred pixel is written or served. If the
fresh detection fails, no picture is kept (fail closed).

The *reference image* of a camera is the per-pixel median of its recent
pixelated snapshots: people who walk through vanish from it, the store stays.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

PAD = 0.12  # box padding on each side, as a fraction of its size
MAX_WIDTH = 960  # stored pictures are downscaled to at most this width
HISTORY = 15  # snapshots kept (in memory, pixelated) for the reference image


@dataclass(frozen=True, slots=True)
class Snapshot:
    jpeg: bytes
    taken_at: float
    width: int
    height: int


def pixelate(image: np.ndarray, boxes: np.ndarray, pad: float = PAD) -> np.ndarray:
    """A copy of ``image`` with each box (pixel xyxy) padded and turned into big
    blocks: about 8 blocks along the box's longer side, so a face is one or two
    blocks and no one can be recognised."""
    out = image.copy()
    height, width = out.shape[:2]
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        bw, bh = x2 - x1, y2 - y1
        if not (bw > 0 and bh > 0):
            continue
        left = int(max(0, np.floor(x1 - pad * bw)))
        top = int(max(0, np.floor(y1 - pad * bh)))
        right = int(min(width, np.ceil(x2 + pad * bw)))
        bottom = int(min(height, np.ceil(y2 + pad * bh)))
        w, h = right - left, bottom - top
        if w <= 0 or h <= 0:
            continue
        block = max(6, int(round(max(w, h) / 8)))
        small = cv2.resize(out[top:bottom, left:right], (max(1, w // block), max(1, h // block)),
                           interpolation=cv2.INTER_AREA)
        out[top:bottom, left:right] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    return out


def _downscale(image: np.ndarray, max_width: int = MAX_WIDTH) -> np.ndarray:
    height, width = image.shape[:2]
    if width <= max_width:
        return image
    scale = max_width / width
    return cv2.resize(image, (max_width, max(1, round(height * scale))), interpolation=cv2.INTER_AREA)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".snap-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Snapshots:
    """Keeps the newest pixelated picture of each camera (memory and disk)."""

    def __init__(self, directory: Path, every: float,
                 detect: Callable[[str, np.ndarray], np.ndarray] | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.every = every
        self.detect = detect  # (camera_id, image) → person boxes xyxy, on the same frame
        self._due: dict[str, float] = {}
        self._latest: dict[str, Snapshot] = {}
        self._history: dict[str, deque[np.ndarray]] = {}
        self._reference: dict[str, tuple[int, bytes]] = {}
        self._taken: dict[str, int] = {}
        self._lock = threading.Lock()

    def path(self, camera_id: str, kind: str = "snapshot") -> Path:
        return self.directory / f"{camera_id}.{kind}.jpg"

    # -- the observer (detection thread) ------------------------------------------------
    def observe(self, frame, result) -> None:
        now = time.monotonic()
        if now < self._due.get(frame.camera_id, 0.0):
            return
        self._due[frame.camera_id] = now + self.every
        self.take(frame.camera_id, frame.image, result.tracks.xyxy, frame.ts)

    def take(self, camera_id: str, image: np.ndarray, track_boxes: np.ndarray, taken_at: float) -> Snapshot | None:
        boxes = [np.asarray(track_boxes, dtype=np.float64).reshape(-1, 4)]
        if self.detect is not None:
            try:
                boxes.append(np.asarray(self.detect(camera_id, image), dtype=np.float64).reshape(-1, 4))
            except Exception:
                log.exception("snapshot of %s skipped: people could not be detected to blur them", camera_id)
                return None
        safe = _downscale(pixelate(image, np.concatenate(boxes)))
        ok, encoded = cv2.imencode(".jpg", safe, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return None
        snapshot = Snapshot(encoded.tobytes(), taken_at, safe.shape[1], safe.shape[0])
        small = _downscale(safe, 480)
        with self._lock:
            self._latest[camera_id] = snapshot
            history = self._history.setdefault(camera_id, deque(maxlen=HISTORY))
            if history and history[-1].shape != small.shape:
                history.clear()  # the camera's resolution changed
            history.append(small)
            self._taken[camera_id] = self._taken.get(camera_id, 0) + 1
        try:
            _write_atomic(self.path(camera_id), snapshot.jpeg)
        except OSError as exc:
            log.warning("cannot store the snapshot of %s: %s", camera_id, exc)
        return snapshot

    # -- readers (dashboard threads) ------------------------------------------------------
    def latest(self, camera_id: str) -> Snapshot | None:
        with self._lock:
            snapshot = self._latest.get(camera_id)
        if snapshot is not None:
            return snapshot
        path = self.path(camera_id)
        try:
            data = path.read_bytes()
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        except OSError:
            return None
        if image is None:
            return None
        return Snapshot(data, path.stat().st_mtime, image.shape[1], image.shape[0])

    def reference(self, camera_id: str) -> bytes | None:
        """Median of the recent pixelated snapshots (cached until a new one arrives)."""
        with self._lock:
            taken = self._taken.get(camera_id, 0)
            cached = self._reference.get(camera_id)
            if cached and cached[0] == taken:
                return cached[1]
            frames = list(self._history.get(camera_id, ()))
        if not frames:
            try:
                return self.path(camera_id, "reference").read_bytes()
            except OSError:
                snapshot = self.latest(camera_id)
                return snapshot.jpeg if snapshot else None
        median = np.median(np.stack(frames), axis=0).astype(np.uint8)
        ok, encoded = cv2.imencode(".jpg", median, [cv2.IMWRITE_JPEG_QUALITY, 80])
        data = encoded.tobytes()
        with self._lock:
            self._reference[camera_id] = (taken, data)
        try:
            _write_atomic(self.path(camera_id, "reference"), data)
        except OSError:
            pass
        return data
