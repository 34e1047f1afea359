"""What the speed-ups change, checked for correctness (speed itself is measured
by bench/bench.py, never asserted here): model export for the box, batched and
rect inference, the motion gate, the fair scheduler, stale frames dropped, a
stalled camera, per-track state released."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from edge_agent.config import CameraConfig, DetectorConfig, TrackerConfig, load_config
from edge_agent.detect import decode_yolo_output, letterbox, load_detector
from edge_agent.motion import MotionGate
from edge_agent.offline import count_video
from edge_agent.performance import FairScheduler, MotionGateConfig
from edge_agent.pipeline import CameraAnalytics
from edge_agent.runtime import Agent

REPO = Path(__file__).resolve().parent.parent


def read_frames(path, count, step=1):
    capture = cv2.VideoCapture(str(path))
    frames, index = [], 0
    while len(frames) < count:
        ok, image = capture.read()
        if not ok:
            break
        if index % step == 0:
            frames.append(image)
        index += 1
    capture.release()
    return frames


@pytest.fixture(scope="module")
def bus():
    import ultralytics

    return cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "bus.jpg"))


@pytest.fixture(scope="module")
def openvino_model(assets_dir) -> Path:
    """The float ONNX converted for this box by `edge-agent models export` (Ultralytics'
    OpenVINO exporter, dynamic shapes), as a technician would."""
    target = assets_dir / "yolov8n_fp32_openvino_model"
    if not target.exists():
        result = subprocess.run(
            [sys.executable, "-m", "edge_agent", "models", "export", "yolov8n_fp32.onnx", "--format", "openvino",
             "--assets-dir", str(assets_dir)], capture_output=True, text=True, cwd=REPO, timeout=600)
        assert result.returncode == 0, result.stderr
        assert Path(result.stdout.strip().splitlines()[-1]) == target
    return target


@pytest.fixture(scope="module")
def fast_detector(openvino_model):
    return load_detector(openvino_model, DetectorConfig())


# -- backends and export ------------------------------------------------------------------------
def test_exported_openvino_model_runs_rect_and_finds_what_the_onnx_file_finds(openvino_model, model_path, bus):
    assert (openvino_model / "metadata.yaml").exists() and list(openvino_model.glob("*.xml"))
    exported = load_detector(openvino_model, DetectorConfig(confidence=0.25))
    original = load_detector(model_path, DetectorConfig(confidence=0.25, backend="onnxruntime"))
    assert exported.backend == "openvino" and exported.reshapable
    assert exported.input_size_for((360, 640, 3), None) == (384, 640)  # Ultralytics' rect letterbox
    assert exported.input_size_for((360, 640, 3), 320) == (192, 320)  # a camera's own imgsz
    # The same 640x640 input through both files finds the same people.
    boxed, box = letterbox(bus, 640, 640)
    found = [decode_yolo_output(detector._infer(detector._prepare([boxed]))[0], box, bus.shape, [0], 0.25, 0.7)
             for detector in (exported, original)]
    assert len(found[0]) == len(found[1]) == 4
    assert sv.box_iou_batch(found[0].xyxy, found[1].xyxy).max(axis=1).min() > 0.95
    # At its rect input (640x480 for this picture) too.
    assert len(exported.detect([bus])[0]) == 4


def test_pytorch_weights_rebuilt_from_the_onnx_file_run_through_ultralytics(model_path, fast_detector, bus):
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent", "models", "export", str(model_path), "--format", "pt"],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    weights = Path(result.stdout.strip().splitlines()[-1])
    assert weights.suffix == ".pt" and weights.parent == model_path.parent
    torch_detector = load_detector(weights, DetectorConfig(confidence=0.25))  # the file decides: PyTorch
    assert torch_detector.backend == "ultralytics"
    # Both at Ultralytics' rect input (640x480 for this picture).
    ours = torch_detector.detect([bus])[0]
    reference = fast_detector.detect([bus])[0]
    reference = reference[reference.confidence > 0.25]
    assert len(ours) == len(reference) == 4
    assert sv.box_iou_batch(ours.xyxy, reference.xyxy).max(axis=1).min() > 0.95


def test_a_fixed_shape_model_falls_back_to_its_own_size_one_frame_per_call(model_path, clip):
    detector = load_detector(model_path, DetectorConfig(backend="openvino"))
    frames = read_frames(clip, 2)
    assert [len(d) for d in detector.detect(frames, imgsz=320)] == [len(detector.detect([f])[0]) for f in frames]
    assert detector.reshapable is False and not detector.batches
    assert detector.input_size_for(frames[0].shape, 320) == (640, 640)


# -- batching and rect inference ---------------------------------------------------------------------
def test_batched_detections_equal_single_frame_detections(fast_detector, clip, bus):
    frames = read_frames(clip, 5, step=60) + [bus]  # two input sizes in one call
    calls = []
    infer = fast_detector._infer
    fast_detector._infer = lambda blob: calls.append(blob.shape[0]) or infer(blob)
    try:
        batched = fast_detector.detect(frames)
    finally:
        fast_detector._infer = infer
    assert sorted(calls) == [1, 5], "one call per input size"
    for frame, together in zip(frames, batched):
        alone = fast_detector.detect([frame])[0]
        assert len(alone) == len(together) > 0
        np.testing.assert_allclose(together.xyxy, alone.xyxy, atol=0.5)
        np.testing.assert_allclose(together.confidence, alone.confidence, atol=0.01)


def test_rect_input_finds_the_same_people_as_the_square_one(fast_detector, model_path, clip):
    square = load_detector(model_path, DetectorConfig(backend="openvino"))  # fixed 640x640
    matched = total = 0
    for frame in read_frames(clip, 12, step=55):
        rect, full = fast_detector.detect([frame])[0], square.detect([frame])[0]
        rect, full = rect[rect.confidence > 0.3], full[full.confidence > 0.3]
        assert abs(len(rect) - len(full)) <= 1
        if len(rect) and len(full):
            best = sv.box_iou_batch(rect.xyxy, full.xyxy).max(axis=1)
            matched += int((best > 0.8).sum())
        total += len(rect)
    assert total > 50 and matched / total > 0.95


# -- motion gate ---------------------------------------------------------------------------------
def gate_skips(frames) -> list[int]:
    """Indices of the frames a gate lets through without the detector."""
    gate, skipped = MotionGate(MotionGateConfig()), []
    for index, frame in enumerate(frames):
        if gate.reuse(frame, index / 24) is None:
            gate.detected(sv.Detections.empty())
        else:
            skipped.append(index)
    return skipped


def test_motion_gate_never_skips_a_frame_where_people_walk(clip):
    assert gate_skips(read_frames(clip, 686)) == []


def freeze_clip(source, target, freeze_at=(60, 150), length=48, frames=200, noise=0.0):
    """The clip with the picture frozen for 2 s at a few places (people standing
    still, a quiet store), optionally with sensor noise on the frozen copies."""
    capture = cv2.VideoCapture(str(source))
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), 24.0, (640, 360))
    rng = np.random.default_rng(7)
    for index in range(frames):
        ok, image = capture.read()
        writer.write(image)
        if index in freeze_at:
            for _ in range(length):
                still = image if not noise else np.clip(image + rng.normal(0, noise, image.shape), 0, 255)
                writer.write(still.astype(np.uint8))
    writer.release()
    return target


def frozen_stretches(freeze_at=(60, 150), length=48):
    """Frame indices of the frozen copies in freeze_clip's output."""
    indices, inserted = set(), 0
    for at in freeze_at:
        start = at + 1 + inserted
        indices.update(range(start, start + length))
        inserted += length
    return indices


def test_motion_gate_takes_sensor_noise_on_a_still_picture_for_no_motion(clip, tmp_path):
    noisy = freeze_clip(clip, tmp_path / "noisy.avi", noise=6.0)
    skipped = set(gate_skips(read_frames(noisy, 1000)))
    frozen = frozen_stretches()
    assert skipped <= frozen, "only still frames are skipped"
    assert len(skipped) >= 0.9 * len(frozen), "a detection still runs once a second (max_skip_seconds)"


# Several lines where people on the crosswalk clip cross (the counting rules' band and
# cooldown keep each line's count honest, so one line alone sees only a few crossings).
LINES = ([{"id": f"v{x}", "points": [[x, 0.0], [x, 1.0]]} for x in (0.2, 0.45)]
         + [{"id": f"h{y}", "points": [[0.0, y], [1.0, y]]} for y in (0.4, 0.5, 0.6, 0.7)])


def test_motion_gate_keeps_every_crossing_and_every_track_through_a_freeze(fast_detector, clip, tmp_path):
    frozen = freeze_clip(clip, tmp_path / "frozen.avi")
    runs = {}
    for name, gate in [("off", None), ("on", MotionGateConfig())]:
        ids: list[set[int]] = []
        crossings: list[tuple] = []

        def on_frame(index, result):
            ids.append(set(result.tracks.tracker_id.tolist()))
            crossings.extend((index, c.track_id, c.line_id, c.direction) for c in result.crossings)

        result = count_video(CameraConfig(id="c", source=str(frozen), lines=LINES), fast_detector, TrackerConfig(),
                             motion_gate=gate, on_frame=on_frame)
        runs[name] = (result, ids, crossings)
    (off, off_ids, off_crossings), (on, on_ids, on_crossings) = runs["off"], runs["on"]
    assert len(off_crossings) >= 10, "the clip has crossings to keep"
    assert on_crossings == off_crossings and on.counts == off.counts
    assert on.skipped >= 0.9 * len(frozen_stretches())
    for ids in (off_ids, on_ids):
        assert ids[60] and ids[60] == ids[60 + 48], "people keep their track ids through the freeze"


# -- scheduling, stale frames, stalled cameras --------------------------------------------------------------------
def test_fair_scheduler_serves_every_camera_in_turn():
    scheduler = FairScheduler(["a", "b", "c"])
    always = lambda camera: f"{camera}-frame"
    assert [[c for c, _ in scheduler.pick(always, 1)] for _ in range(4)] == [["a"], ["b"], ["c"], ["a"]]
    assert [[c for c, _ in scheduler.pick(always, 2)] for _ in range(3)] == [["b", "c"], ["a", "b"], ["c", "a"]]
    # "b" has a frame only now and then (it stays in its slot until taken), "a" and "c" always do:
    # every frame of "b" is taken within one round of the cameras, whatever the batch size.
    rng = np.random.default_rng(3)
    for limit in (1, 2):
        scheduler = FairScheduler(["a", "b", "c"])
        b_since: int | None = None
        for turn in range(200):
            if b_since is None and rng.random() < 0.3:
                b_since = turn
            take = lambda camera: (turn if camera == "b" and b_since is not None else None) if camera == "b" else turn
            batch = scheduler.pick(take, limit)
            assert len(batch) == limit and len({camera for camera, _ in batch}) == limit
            if any(camera == "b" for camera, _ in batch):
                assert turn - b_since <= 2, (limit, turn, b_since)
                b_since = None


def agent_config(tmp_path, assets_dir, model, cameras, **performance):
    return load_config(
        assets_dir=str(assets_dir), cameras=cameras, detector={"model": str(model)},
        storage={"path": str(tmp_path / f"agent-{time.monotonic_ns()}.db")},
        mqtt={"enabled": False}, dashboard={"enabled": False},
        performance={"motion_gate": {"enabled": False}, **performance},
    )


class SlowDetector:
    """The real detector, made slower than the camera (a weak box, a big model)."""

    def __init__(self, detector, seconds):
        self.inner, self.seconds, self.backend = detector, seconds, "slow"

    def detect(self, frames, imgsz=None):
        time.sleep(self.seconds)
        return self.inner.detect(frames, imgsz)


def test_a_slow_detector_drops_stale_frames_instead_of_building_a_backlog(tmp_path, assets_dir, clip, fast_detector):
    config = agent_config(tmp_path, assets_dir, "unused.onnx", [{"id": "door", "source": str(clip), "lines": LINES}])
    agent = Agent(config, realtime=True, detector=SlowDetector(fast_detector, 0.2))
    seen: list[tuple[int, float]] = []
    agent.frame_observers.append(lambda frame, result: seen.append((frame.index, time.time() - frame.ts)))
    agent.start()
    try:
        agent.run(duration=4.0)
    finally:
        agent.shutdown()
    stats = agent.cameras["door"].reader.stats
    assert len(seen) >= 8 and stats.frames_read > 2 * len(seen)
    assert stats.frames_dropped >= stats.frames_read - len(seen) - 1
    indices = [index for index, _ in seen]
    assert min(b - a for a, b in zip(indices, indices[1:])) >= 2, "stale frames are skipped, not queued"
    lags = [lag for _, lag in seen]
    # Each processed frame was at most one detector call (+ scheduling) old; a queue would grow by
    # ~0.16 s per frame (0.2 s work per 0.04 s frame) to more than 2 s by the end.
    assert max(lags) < 1.0 and lags[-1] < 1.0, lags


class StallingMjpegCamera:
    """A real HTTP MJPEG camera on loopback that sends a few frames and then goes silent
    with the connection open (a hung IP camera)."""

    def __init__(self, image, frames=10):
        self.jpeg = cv2.imencode(".jpg", image)[1].tobytes()
        self.frames = frames
        self.release = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/video.mjpg"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.release.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection):
        with connection:
            connection.recv(4096)
            connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n")
            for _ in range(self.frames):
                connection.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                   % len(self.jpeg) + self.jpeg + b"\r\n")
                time.sleep(0.04)
            self.release.wait(120)  # stalls here

    def close(self):
        self.release.set()
        self.server.close()


def test_a_stalled_camera_does_not_delay_the_others(tmp_path, assets_dir, clip, openvino_model, bus):
    camera = StallingMjpegCamera(cv2.resize(bus, (320, 240)))
    cameras = [{"id": "street", "source": str(clip), "lines": LINES},
               {"id": "hung", "source": camera.url, "imgsz": 320}]
    agent = Agent(agent_config(tmp_path, assets_dir, openvino_model, cameras), realtime=False, max_frames=90)
    processed: dict[str, list[float]] = {"street": [], "hung": []}

    def observe(frame, result):
        processed[frame.camera_id].append(time.monotonic())
        if len(processed["street"]) == 90:
            agent.stop()

    agent.frame_observers.append(observe)
    agent.start()
    try:
        started = time.monotonic()
        agent.run(duration=120)
        elapsed = time.monotonic() - started
    finally:
        agent.shutdown()
        camera.close()
    hung = agent.cameras["hung"].reader.stats
    assert len(processed["street"]) == 90, "the file camera went on to its end"
    assert 0 < len(processed["hung"]) <= 10 and hung.frames_read <= 10, "the hung camera really stalled"
    gaps = np.diff(processed["street"])
    # The hung camera's read blocks for 10 s (capture.NETWORK_TIMEOUT_MS) at a time; the street camera
    # never waited for it.
    assert gaps.max() < 3.0 and elapsed < 60, (gaps.max(), elapsed)


def test_four_cameras_batched_count_what_one_at_a_time_counts(tmp_path, assets_dir, clip, openvino_model):
    cameras = [{"id": f"cam{i}", "source": str(clip), "lines": LINES} for i in range(4)]
    results = {}
    for max_batch in (4, 1):
        agent = Agent(agent_config(tmp_path, assets_dir, openvino_model, cameras, max_batch=max_batch),
                      realtime=False, max_frames=45)
        sizes: list[int] = []
        detect = agent.detector.detect
        agent.detector.detect = lambda frames, imgsz=None: sizes.append(len(frames)) or detect(frames, imgsz)
        crossings: dict[str, list] = {f"cam{i}": [] for i in range(4)}
        agent.frame_observers.append(lambda frame, result: crossings[frame.camera_id].extend(
            (frame.index, c.line_id, c.direction) for c in result.crossings))
        agent.start()
        try:
            agent.run(duration=120)
        finally:
            agent.shutdown()
        assert all(runtime.frames_processed == 45 for runtime in agent.cameras.values())
        assert max(sizes) <= max_batch
        results[max_batch] = (crossings, sizes)
    batched, single = results[4][0], results[1][0]
    assert max(results[4][1]) > 1, "frames of several cameras went through one call"
    assert batched == single
    assert len({tuple(c) for c in batched.values()}) == 1, "the same clip counts the same on every camera"


# -- memory ---------------------------------------------------------------------------------------
def test_no_per_track_state_is_kept_after_tracks_end():
    camera = CameraConfig(id="c", source="x.mp4", lines=LINES)
    analytics = CameraAnalytics(camera, TrackerConfig(), 10.0)
    people = sv.Detections(xyxy=np.array([[100, 100, 150, 250], [300, 100, 350, 250]], dtype=np.float32),
                           confidence=np.array([0.9, 0.9], dtype=np.float32), class_id=np.array([0, 0]))
    ts = 0.0
    for step in range(20):  # two people walk across the vertical line
        shift = np.array([12 * step, 0, 12 * step, 0], dtype=np.float32)
        moved = sv.Detections(xyxy=people.xyxy + shift, confidence=people.confidence, class_id=people.class_id)
        analytics.process(moved, (360, 640, 3), ts)
        ts += 0.1
    assert all(counter.track_count == 2 for counter in analytics.counters)
    for _ in range(250):  # then nobody, for 25 s (line state is dropped 10-20 s after a track ends)
        analytics.process(sv.Detections.empty(), (360, 640, 3), ts)
        ts += 0.1
    assert all(counter.track_count == 0 for counter in analytics.counters)
    assert len(analytics.tracker._tracker.tracks) == 0
