"""The running agent: capture threads → one shared detector → per-camera
analytics → SQLite, with the rollup job, the MQTT uplink and the dashboard
beside it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import supervision as sv
from apscheduler.schedulers.background import BackgroundScheduler

from .analytics.recorder import AnalyticsRecorder
from .assets import ensure_asset
from .capture import CameraReader, Frame
from .config import AgentConfig
from .detect import Detector, load_detector
from .motion import MotionGate
from .performance import FairScheduler, StageTimes, TimedTracker
from .pipeline import CameraAnalytics, FrameResult
from .feed import live_event_listener, queue_health
from .reload import apply_config, reload_config
from .retention import prune, storage_status
from .rollup import Identity, close_minutes, close_periods
from .storage import Store
from .tracking import make_tracker
from .uplink import Uplink

log = logging.getLogger(__name__)


@dataclass
class CameraRuntime:
    reader: CameraReader
    analytics: CameraAnalytics
    gate: MotionGate | None = None
    frames_processed: int = 0
    crossings: int = 0
    last_ts: float | None = None
    # Processing times of the last frames, for fps; bounded, so a long run keeps flat memory.
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    # Held while analytics state changes hands (a frame's results, a layout swap, shutdown).
    lock: threading.Lock = field(default_factory=threading.Lock)

    def processing_fps(self, now: float) -> float:
        return round(sum(1 for t in self.recent if now - t <= 5.0) / 5.0, 1)


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
        self.detect_ms: deque[float] = deque(maxlen=100)
        self.times = StageTimes()  # seconds per stage since start: health() and the benchmark
        self.frame_scheduler: FairScheduler[Frame] = FairScheduler([])
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
        self._frame_ready = threading.Event()  # set by any camera reader with a new frame

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
            reader = CameraReader(camera, realtime=self.realtime, max_frames=self.max_frames,
                                  frame_ready=self._frame_ready)
            fps = camera.fps_cap or 30.0
            tracker = TimedTracker(make_tracker(self.config.tracker, fps), self.times)
            gate_config = self.config.performance.motion_gate
            self.cameras[camera.id] = CameraRuntime(
                reader,
                CameraAnalytics(camera, self.config.tracker, fps, tracker=tracker, settings=analytics,
                                pose=self.pose),
                MotionGate(gate_config) if gate_config.enabled else None,
            )
            reader.start()
        self.frame_scheduler = FairScheduler(list(self.cameras))
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
        self._frame_ready.set()

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
        """Detect over cameras that have a new frame until stopped, ``duration``
        passes, or every (non-looping file) camera has ended.

        Each turn takes at most one (the newest) frame per camera, up to
        ``performance.max_batch``, in round-robin order (:class:`FairScheduler`),
        and detects them in as few inference calls as the model allows."""
        deadline = time.monotonic() + duration if duration else None
        while not self._stop.is_set():
            self.loop_heartbeat = time.monotonic()
            if deadline and time.monotonic() >= deadline:
                break
            if self.cameras and all(runtime.reader.finished for runtime in self.cameras.values()):
                break
            self._frame_ready.clear()  # before taking: a frame arriving from here on sets it again
            batch = self.frame_scheduler.pick(lambda camera_id: self.cameras[camera_id].reader.take(),
                                              self.config.performance.max_batch)
            if not batch:
                self._frame_ready.wait(0.05)
                continue
            for (camera_id, frame), detections in zip(batch, self._detect(batch)):
                self._process(camera_id, frame, detections)

    def _detect(self, batch: list[tuple[str, Frame]]) -> list[sv.Detections]:
        """Detections per frame: the motion gate's (nothing moved) or the detector's,
        one call per input size (cameras may set their own ``imgsz``)."""
        found: list[sv.Detections | None] = [None] * len(batch)
        by_size: dict[int | None, list[int]] = {}
        for index, (camera_id, frame) in enumerate(batch):
            runtime = self.cameras[camera_id]
            if runtime.gate is not None:
                with self.times.timed("motion"):
                    found[index] = runtime.gate.reuse(frame.image, frame.ts)
            if found[index] is None:
                by_size.setdefault(runtime.analytics.camera.imgsz, []).append(index)
        for imgsz, indices in by_size.items():
            started = time.perf_counter()
            results = self.detector.detect([batch[i][1].image for i in indices], imgsz=imgsz)
            elapsed = time.perf_counter() - started
            self.times.add("detect", elapsed, len(indices))
            self.detect_ms.append(elapsed * 1000 / len(indices))
            for index, detections in zip(indices, results):
                found[index] = detections
                gate = self.cameras[batch[index][0]].gate
                if gate is not None:
                    gate.detected(detections)
        return found  # type: ignore[return-value]

    def _process(self, camera_id: str, frame: Frame, detections: sv.Detections) -> None:
        runtime = self.cameras[camera_id]
        with runtime.lock:
            started, tracked_before = time.perf_counter(), self.times.seconds["track"]
            result = runtime.analytics.process(detections, frame.image.shape, frame.ts, image=frame.image)
            # The tracker books its own time as "track"; the rest of the analytics is "count".
            self.times.add("count", time.perf_counter() - started - (self.times.seconds["track"] - tracked_before))
            with self.times.timed("store"):
                self.recorder.record(camera_id, result)  # before store.record moves the watermark
                self.store.record(camera_id, frame.ts, result.crossings)
            runtime.last_ts = frame.ts
        runtime.frames_processed += 1
        runtime.crossings += len(result.crossings)
        runtime.recent.append(time.time())
        if self.frame_observers:
            with self.times.timed("observers"):
                for observer in self.frame_observers:
                    try:
                        observer(frame, result)
                    except Exception:
                        log.exception("frame observer %r failed", observer)

    # -- health ----------------------------------------------------------------------------
    def stage_ms(self) -> dict[str, float]:
        frames = sum(runtime.frames_processed for runtime in self.cameras.values())
        stages = self.times.ms_per_frame(frames)
        stages["decode"] = (sum(r.reader.stats.decode_seconds for r in self.cameras.values()) * 1000 / frames
                            if frames else 0.0)
        return stages

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
                "frames_skipped_by_motion_gate": runtime.gate.stats.skipped if runtime.gate else 0,
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
                # Mean time per processed frame in each stage since start (decode: capture threads).
                "stage_ms": {stage: round(ms, 2) for stage, ms in self.stage_ms().items()},
            },
            "uplink": self.uplink.health() if self.uplink else {"connected": False, "enabled": False,
                                                                 "pending": self.store.pending_count()},
            "jobs": self.jobs,
            "late_events": self.store.late_events,
            "storage": {**storage_status(self.store, self.config.storage),
                        "over_budget": bool(self.last_prune and self.last_prune.over_budget)},
            "sensors": self.sensors.health() if self.sensors is not None else None,
        }
