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

from .analytics.recorder import AnalyticsRecorder
from .assets import ensure_asset
from .capture import CameraReader, Frame
from .config import AgentConfig
from .detect import Detector, load_detector
from .pipeline import CameraAnalytics, FrameResult
from .feed import live_event_listener, queue_health
from .reload import apply_config, reload_config
from .retention import prune, storage_status
from .rollup import Identity, close_minutes, close_periods
from .storage import Store
from .uplink import Uplink

log = logging.getLogger(__name__)


@dataclass
class CameraRuntime:
    reader: CameraReader
    analytics: CameraAnalytics
    frames_processed: int = 0
    crossings: int = 0
    last_ts: float | None = None
    recent: list[float] = field(default_factory=list)  # processing times, for fps
    # Held while analytics state changes hands (a frame's results, a layout swap, shutdown).
    lock: threading.Lock = field(default_factory=threading.Lock)

    def processing_fps(self, now: float) -> float:
        self.recent = [t for t in self.recent if now - t <= 5.0]
        return round(len(self.recent) / 5.0, 1)


def identity_from(config: AgentConfig) -> Identity:
    mqtt = config.mqtt
    return Identity(org=mqtt.org, store=mqtt.store_id, device=mqtt.device_id, topic_prefix=mqtt.topic_prefix)


class Agent:
    def __init__(self, config: AgentConfig, *, realtime: bool = True, max_frames: int | None = None,
                 detector: Detector | None = None, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path  # written by the Setup page, re-read by HQ's reload-config
        self._apply_lock = threading.Lock()
        self.pos = None
        self.realtime = realtime
        self.max_frames = max_frames
        self.identity = identity_from(config)
        self.store = Store(config.storage.path, config.storage.synchronous)
        self.recorder = AnalyticsRecorder(self.store)  # zone visits and heatmaps
        self.pose = None
        self._detector = detector
        self.cameras: dict[str, CameraRuntime] = {}
        self.uplink: Uplink | None = None
        self.sensors = None  # SensorIngestion when `sensors:` is configured
        self.dashboard = None
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self.jobs: dict[str, dict] = {}
        self.started_at = time.time()
        self.detect_ms: list[float] = []
        # Called after each processed frame's results are committed, in the
        # detection thread: keep them quick (snapshots, live feeds, fusion).
        self.frame_observers: list[Callable[[Frame, FrameResult], None]] = []
        self._stop = threading.Event()
        self._live_events = live_event_listener(self.store, self.identity)
        self.last_prune = None
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
        lines = {camera.id: [line.id for line in camera.lines] for camera in self.config.cameras}
        if self.sensors is not None:
            lines.update(self.sensors.lines_by_source())  # doors counted by beams alone
        return lines

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        if any(camera.enabled for camera in self.config.cameras):
            _ = self.detector  # fail early on a bad model, before threads start (sensor-only stores have none)
        analytics = self.config.analytics
        if analytics.pose_model and any(z.kind == "shelf" for c in self.config.cameras for z in c.zones):
            from .analytics.pose import PoseEstimator

            self.pose = PoseEstimator(ensure_asset(analytics.pose_model, self.config.assets_dir))
        self.recorder.sync_layout(self.config)
        for camera in self.config.cameras:
            if not camera.enabled:
                continue
            reader = CameraReader(camera, realtime=self.realtime, max_frames=self.max_frames)
            fps = camera.fps_cap or 30.0
            self.cameras[camera.id] = CameraRuntime(
                reader, CameraAnalytics(camera, self.config.tracker, fps, settings=analytics, pose=self.pose))
            reader.start()
        if self.config.mqtt.enabled:
            self.uplink = Uplink(self.config.mqtt, self.store, self.identity)
            self.uplink.handlers["reload-config"] = lambda command: reload_config(self)
            self.uplink.start()
            if self.config.mqtt.health_interval_seconds:
                self.schedule("health", lambda: queue_health(self), self.config.mqtt.health_interval_seconds)
        self.apply_live_events()
        if self.config.sensors is not None and self.config.sensors.enabled:
            from .sensors.ingest import SensorIngestion

            self.sensors = SensorIngestion(self.config.sensors, self.store, self.config.cameras)
            self.sensors.start()
            self.schedule("sensor-checks", self.sensors.check, 30.0)
        self.schedule("rollup", self.rollup_now, self.config.rollup.interval_seconds)
        self.schedule("storage", self.prune_now, self.config.storage.prune_interval_seconds)
        if self.config.pos.enabled:
            from .pos import PosIngest

            self.pos = PosIngest(self.config, self.store).start(self.schedule)
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
        lines = self.lines_by_camera()
        stale = self.config.rollup.stale_after_seconds
        closed = close_minutes(self.store, self.identity, lines, now=now, stale_after=stale)
        close_periods(self.store, self.identity, lines, self.config.timezone, now=now, stale_after=stale)
        return closed

    def prune_now(self, now: float | None = None):
        """Retention and the disk budget (see retention.py)."""
        self.last_prune = prune(self.store, self.config.storage, now=now)
        return self.last_prune

    def apply_live_events(self) -> None:
        """The live ``event`` feed follows ``mqtt.live_events`` (also after reload-config)."""
        wanted = self.config.mqtt.enabled and self.config.mqtt.live_events
        listening = self._live_events in self.store.event_listeners
        if wanted and not listening:
            self.store.event_listeners.append(self._live_events)
        elif listening and not wanted:
            self.store.event_listeners.remove(self._live_events)

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        if self.ops is not None:
            self.ops.stop()
        for runtime in self.cameras.values():
            runtime.reader.stop()
        if self.sensors is not None:
            self.sensors.stop()  # commits what was received before the last rollup
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        for camera_id, runtime in self.cameras.items():
            with runtime.lock:
                self.finish_camera(camera_id, runtime)
        self.store.flush()
        self.rollup_now()
        if self.uplink is not None:
            deadline = time.time() + 3.0
            while self.uplink.stats.connected and self.store.pending_count() and time.time() < deadline:
                time.sleep(0.05)
            self.uplink.stop()
        if self.dashboard is not None:
            self.dashboard.stop()
        if self.pos is not None:
            self.pos.stop()
        self.store.close()

    def apply_config(self, new_config: AgentConfig) -> dict:
        """Take a new configuration without a restart where possible (see reload.apply_config)."""
        return apply_config(self, new_config)

    def finish_camera(self, camera_id: str, runtime: CameraRuntime, how: str = "shutdown") -> None:
        """Decide held crossings, close open visits, commit the last heatmap minute
        (at shutdown, or before a layout swap). Call with ``runtime.lock`` held."""
        if runtime.last_ts is None:
            return
        result = runtime.analytics.finish(runtime.last_ts, how)
        self.recorder.record(camera_id, result)
        self.store.record(camera_id, runtime.last_ts, result.crossings, frames=0)
        runtime.last_ts = None

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
                self._stop.wait(0.002 if order else 0.2)  # no cameras (sensor-only box): nothing to poll

    def _process(self, camera_id: str, frame) -> None:
        runtime = self.cameras[camera_id]
        camera = runtime.analytics.camera
        started = time.perf_counter()
        detections = self.detector.detect([frame.image], imgsz=camera.imgsz)[0]
        self.detect_ms.append((time.perf_counter() - started) * 1000)
        del self.detect_ms[:-100]
        with runtime.lock:
            result = runtime.analytics.process(detections, frame.image.shape, frame.ts, image=frame.image)
            self.recorder.record(camera_id, result)  # before store.record moves the watermark
            self.store.record(camera_id, frame.ts, result.crossings)
            runtime.last_ts = frame.ts
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
            "storage": {**storage_status(self.store, self.config.storage),
                        "over_budget": bool(self.last_prune and self.last_prune.over_budget)},
            "sensors": self.sensors.health() if self.sensors is not None else None,
        }
