"""Camera capture with OpenCV: files, RTSP/HTTP streams and USB cameras.

One :class:`CameraReader` thread per camera keeps only the newest frame: when
the detector is slower than the camera, stale frames are dropped (and counted)
instead of queueing up, so what is counted is never seconds behind. A camera
that fails is reopened with exponential backoff and jitter; other cameras are
not affected.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from .config import CameraConfig

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Frame:
    camera_id: str
    index: int  # frames read from the source since the reader started
    ts: float  # capture time, seconds since the epoch (UTC)
    image: np.ndarray


@dataclass
class CameraStats:
    state: str = "starting"  # starting | streaming | reconnecting | ended | stopped
    frames_read: int = 0
    frames_dropped: int = 0
    frames_delivered: int = 0
    reconnects: int = 0
    last_frame_ts: float | None = None
    last_error: str | None = None
    source_fps: float | None = None
    decode_seconds: float = 0.0  # time spent reading and decoding delivered frames
    width: int | None = None
    height: int | None = None
    started_at: float = field(default_factory=time.time)


# A network camera that accepts the connection but sends nothing (or stops
# sending) fails after this long and is reconnected with backoff, instead of
# holding its reader for OpenCV's default 30 s.
NETWORK_TIMEOUT_MS = 10_000


def open_capture(source: str | int) -> cv2.VideoCapture:
    if isinstance(source, int):
        capture = cv2.VideoCapture(source)
    elif "://" in source:
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS]
        capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, timeouts)
    else:
        capture = cv2.VideoCapture(source)
    return capture


class CameraReader(threading.Thread):
    """Reads one camera into a one-frame slot.

    ``realtime`` paces file sources at their own frame rate (a file then behaves
    like a camera, for demos and tests); with ``realtime=False`` a file is read
    as fast as the consumer takes frames and no frame is dropped.
    """

    def __init__(
        self,
        camera: CameraConfig,
        realtime: bool = True,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_frames: int | None = None,
        frame_ready: threading.Event | None = None,
    ) -> None:
        super().__init__(name=f"camera-{camera.id}", daemon=True)
        # Set on every new frame (and at the end), so a consumer waits for a frame instead of polling.
        self.frame_ready = frame_ready or threading.Event()
        self.camera = camera
        self.realtime = realtime
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_frames = max_frames
        self.stats = CameraStats()
        self._slot: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()

    # -- consumer side -------------------------------------------------------
    def take(self) -> Frame | None:
        """The newest unread frame, or None."""
        with self._cond:
            frame, self._slot = self._slot, None
            if frame is not None:
                self.stats.frames_delivered += 1
                self._cond.notify_all()
            return frame

    @property
    def has_frame(self) -> bool:
        return self._slot is not None

    @property
    def finished(self) -> bool:
        return self.stats.state in ("ended", "stopped") and self._slot is None

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    # -- producer side -------------------------------------------------------
    def _put(self, frame: Frame) -> None:
        with self._cond:
            if not self.realtime:
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.5)
            elif self._slot is not None:
                self.stats.frames_dropped += 1
            self._slot = frame
        self.frame_ready.set()

    def run(self) -> None:
        try:
            self._read()
        finally:
            self.frame_ready.set()  # a consumer waiting for this camera learns it has ended

    def _read(self) -> None:
        delay = self.backoff_initial
        index = 0
        grabbed = 0  # frames taken from the source, kept or skipped (the media clock of a file)
        origin = time.time()
        while not self._stop.is_set():
            capture = open_capture(self.camera.source)
            if not capture.isOpened():
                capture.release()
                self._fail(f"cannot open {self._source_label()}")
                if self.camera.is_file and not self.camera.loop and index > 0:
                    break
                self._sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            source_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
            self.stats.source_fps = source_fps if 0 < source_fps < 240 else None
            pace = self._frame_interval()
            got_any = False
            next_due = time.monotonic()
            while not self._stop.is_set():
                started = time.perf_counter()
                if not capture.grab():
                    break
                got_any = True
                grabbed += 1
                now_mono = time.monotonic()
                if pace and not (self.camera.is_file and self.realtime):
                    if self.camera.fps_cap and now_mono < next_due:
                        continue  # live source above the cap: skip it before its colour conversion
                    next_due = now_mono + pace
                ok, image = capture.retrieve()
                if not ok or image is None:
                    break
                self.stats.decode_seconds += time.perf_counter() - started
                if pace and self.camera.is_file and self.realtime:
                    # A file has no clock of its own: sleep until this frame is due.
                    now_mono = time.monotonic()
                    if next_due > now_mono:
                        self._stop.wait(next_due - now_mono)
                    next_due = max(next_due + pace, time.monotonic() - pace)
                self.stats.state = "streaming"
                self.stats.frames_read += 1
                self.stats.last_frame_ts = ts = time.time()
                if self.camera.is_file and not self.realtime and self.stats.source_fps:
                    # Read as fast as it is processed: keep the video's own clock, so tracking
                    # (which ages tracks by time) gives the same result on a fast or a slow machine.
                    ts = origin + (grabbed - 1) / self.stats.source_fps
                self.stats.height, self.stats.width = image.shape[:2]
                self._put(Frame(self.camera.id, index, ts, image))
                index += 1
                delay = self.backoff_initial
                if self.max_frames is not None and index >= self.max_frames:
                    self._stop.set()
            capture.release()
            if self._stop.is_set():
                break
            if self.camera.is_file:
                if self.camera.loop and got_any:
                    continue
                if got_any:
                    self.stats.state = "ended"
                    log.info("camera %s: end of file", self.camera.id)
                    return
            self._fail(f"lost {self._source_label()}")
            self._sleep(delay)
            delay = min(delay * 2, self.backoff_max)
        self.stats.state = "stopped" if self.stats.state != "ended" else "ended"

    def _frame_interval(self) -> float | None:
        rates = [r for r in (self.camera.fps_cap, self.stats.source_fps if self.camera.is_file and self.realtime else None) if r]
        return 1.0 / min(rates) if rates else None

    def _fail(self, message: str) -> None:
        self.stats.state = "reconnecting"
        self.stats.reconnects += 1
        self.stats.last_error = message
        log.warning("camera %s: %s; retrying", self.camera.id, message)

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds * random.uniform(0.8, 1.2) if seconds > 0.05 else seconds)

    def _source_label(self) -> str:
        source = str(self.camera.source)
        if "@" in source and "://" in source:  # never log stream credentials
            scheme, rest = source.split("://", 1)
            source = f"{scheme}://***@{rest.split('@', 1)[1]}"
        return source
