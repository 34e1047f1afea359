"""The running agent: capture threads → one shared detector → per-camera
analytics → SQLite, with the rollup job, the MQTT uplink and the dashboard
beside it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from .assets import ensure_asset
from .capture import CameraReader, Frame
from .config import AgentConfig
from .detect import Detector, load_detector
from .pipeline import CameraAnalytics, FrameResult
from .rollup import Identity, close_minutes
from .storage import Store
from .uplink import Uplink

log = logging.getLogger(__name__)


@dataclass
class CameraRuntime:
    reader: CameraReader
    analytics: CameraAnalytics
    frames_processed: int = 0
    crossings: int = 0
    recent: list[float] = field(default_factory=list)  # processing times, for fps

    def processing_fps(self, now: float) -> float:
        self.recent = [t for t in self.recent if now - t <= 5.0]
        return round(len(self.recent) / 5.0, 1)


def identity_from(config: AgentConfig) -> Identity:
    mqtt = config.mqtt
    return Identity(org=mqtt.org, store=mqtt.store_id, device=mqtt.device_id, topic_prefix=mqtt.topic_prefix)


class Agent:
    def __init__(self, config: AgentConfig, *, realtime: bool = True, max_frames: int | None = None,
                 detector: Detector | None = None) -> None:
        self.config = config
        self.realtime = realtime
        self.max_frames = max_frames
        self.identity = identity_from(config)
        self.store = Store(config.storage.path, config.storage.synchronous)
        self._detector = detector
        self.cameras: dict[str, CameraRuntime] = {}
        self.uplink: Uplink | None = None
        self.dashboard = None
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.jobs: dict[str, dict] = {}
        self.started_at = time.time()
        self.detect_ms: list[float] = []
        # Called after each processed frame's results are committed, in the
        # detection thread: keep them quick (snapshots, live feeds, fusion).
        self.frame_observers: list[Callable[[Frame, FrameResult], None]] = []
        self._stop = threading.Event()
        # Monotonic time the detection loop last went round; the systemd watchdog
        # (ops/watchdog.py) pings only while it moves. Any loop rewrite must keep setting it.
        self.loop_heartbeat: float | None = None
        self.ops = None  # ops.Ops: readiness, watchdog, metrics port (attached at the end of start)

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            model = ensure_asset(self.config.detector.model, self.config.assets_dir)
            self._detector = load_detector(Path(model), self.config.detector)
        return self._detector

    def lines_by_camera(self) -> dict[str, list[str]]:
        return {camera.id: [line.id for line in camera.lines] for camera in self.config.cameras}

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        _ = self.detector  # fail early on a bad model, before threads start
        for camera in self.config.cameras:
            if not camera.enabled:
                continue
            reader = CameraReader(camera, realtime=self.realtime, max_frames=self.max_frames)
            fps = camera.fps_cap or 30.0
            self.cameras[camera.id] = CameraRuntime(reader, CameraAnalytics(camera, self.config.tracker, fps))
            reader.start()
        if self.config.mqtt.enabled:
            self.uplink = Uplink(self.config.mqtt, self.store, self.identity)
            self.uplink.start()
        self.schedule("rollup", self.rollup_now, self.config.rollup.interval_seconds)
        self.scheduler.start()
        if self.config.dashboard.enabled:
            from .dashboard import DashboardServer

            self.dashboard = DashboardServer(self)
            self.dashboard.start()
        from .ops import attach

        self.ops = attach(self)

    def schedule(self, name: str, func, seconds: float) -> None:
        state = self.jobs.setdefault(name, {"last_run": None, "last_error": None, "runs": 0})

        def job() -> None:
            try:
                func()
                state["last_error"] = None
            except Exception as exc:  # a failing job is reported on the Health page, not fatal
                log.exception("job %s failed", name)
                state["last_error"] = f"{type(exc).__name__}: {exc}"
            state["last_run"] = time.time()
            state["runs"] += 1

        self.scheduler.add_job(job, "interval", seconds=seconds, id=name, max_instances=1, coalesce=True)

    def rollup_now(self, now: float | None = None) -> int:
        return close_minutes(self.store, self.identity, self.lines_by_camera(), now=now,
                             stale_after=self.config.rollup.stale_after_seconds)

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        if self.ops is not None:
            self.ops.stop()
        for runtime in self.cameras.values():
            runtime.reader.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.store.flush()
        self.rollup_now()
        if self.uplink is not None:
            deadline = time.time() + 3.0
            while self.uplink.stats.connected and self.store.pending_count() and time.time() < deadline:
                time.sleep(0.05)
            self.uplink.stop()
        if self.dashboard is not None:
            self.dashboard.stop()
        self.store.close()

    # -- main loop ------------------------------------------------------------------------
    def run(self, duration: float | None = None) -> None:
        """Detect round-robin over cameras that have a new frame until stopped,
        ``duration`` passes, or every (non-looping file) camera has ended."""
        deadline = time.monotonic() + duration if duration else None
        order = list(self.cameras)
        position = 0
        while not self._stop.is_set():
            self.loop_heartbeat = time.monotonic()
            if deadline and time.monotonic() >= deadline:
                break
            if order and all(self.cameras[c].reader.finished for c in order):
                break
            worked = False
            for step in range(len(order)):
                camera_id = order[(position + step) % len(order)]
                frame = self.cameras[camera_id].reader.take()
                if frame is None:
                    continue
                position = (position + step + 1) % len(order)  # fair: next turn starts after this camera
                self._process(camera_id, frame)
                worked = True
                break
            if not worked:
                self._stop.wait(0.002)

    def _process(self, camera_id: str, frame) -> None:
        runtime = self.cameras[camera_id]
        camera = runtime.analytics.camera
        started = time.perf_counter()
        detections = self.detector.detect([frame.image], imgsz=camera.imgsz)[0]
        self.detect_ms.append((time.perf_counter() - started) * 1000)
        del self.detect_ms[:-100]
        result = runtime.analytics.process(detections, frame.image.shape, frame.ts)
        self.store.record(camera_id, frame.ts, result.crossings)
        runtime.frames_processed += 1
        runtime.crossings += len(result.crossings)
        runtime.recent.append(time.time())
        for observer in self.frame_observers:
            try:
                observer(frame, result)
            except Exception:
                log.exception("frame observer %r failed", observer)

    # -- health ----------------------------------------------------------------------------
    def health(self) -> dict:
        now = time.time()
        cameras = []
        for camera_id, runtime in self.cameras.items():
            stats = runtime.reader.stats
            cameras.append({
                "id": camera_id,
                "state": stats.state,
                "fps": runtime.processing_fps(now),
                "frames_processed": runtime.frames_processed,
                "frames_dropped": stats.frames_dropped,
                "reconnects": stats.reconnects,
                "last_frame_age_s": round(now - stats.last_frame_ts, 1) if stats.last_frame_ts else None,
                "last_error": stats.last_error,
            })
        detect_ms = sorted(self.detect_ms)
        return {
            "uptime_s": round(now - self.started_at, 1),
            "cameras": cameras,
            "detector": {
                "backend": getattr(self._detector, "backend", None),
                "median_ms": round(detect_ms[len(detect_ms) // 2], 1) if detect_ms else None,
            },
            "uplink": self.uplink.health() if self.uplink else {"connected": False, "enabled": False,
                                                                 "pending": self.store.pending_count()},
            "jobs": self.jobs,
            "late_events": self.store.late_events,
        }
