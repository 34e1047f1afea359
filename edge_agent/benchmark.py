"""The benchmark: our agent against plain Ultralytics on the same clip, model
file and inference runtime, in one run (``edge-agent bench`` or
``python bench/bench.py``).

Every measurement runs in its own child process (clean peak RSS, no shared
caches); runs are interleaved (ours, Ultralytics, ours, …) and repeated, and
the table shows medians, because a small shared box is noisy.

What each side runs (``--backend openvino``, the default):

* **model alone** – the OpenVINO model (Ultralytics' own OpenVINO export of the
  float ONNX weights, dynamic shapes) compiled for the clip's rect input
  (1x3x384x640 for 640x360), fed letterboxed frames of the clip; no decode, no
  pre/post-processing. Also at batch 4, to see whether batching pays on this CPU.
* **ours** – the real :class:`~edge_agent.runtime.Agent` (capture threads, fair
  scheduler, lean OpenVINO detector, BoT-SORT (the default tracker), line counter, SQLite with
  ``synchronous=FULL``), every frame of the clip (``realtime=False``),
  1 or 4 cameras, motion gate off/on.
* **Ultralytics** – ``ultralytics.solutions.ObjectCounter`` per camera on the
  same OpenVINO folder (Ultralytics' OpenVINO backend, rect letterbox), same
  line, ``classes=[0]``, ``conf=0.1``, ``iou=0.7``, ``tracker=bytetrack.yaml``
  (ByteTrack, faster than its default tracker; one of our rows runs ByteTrack too), frames read with OpenCV in the
  same process one after another, ``show=False``.

``--backend onnxruntime`` runs both sides on the float ONNX file with ONNX
Runtime instead (fixed 640x640 input).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

STAGES = ("decode", "motion", "detect", "track", "count", "store")
WARMUP_FRAMES = 10  # per run, excluded from every figure (model compile, first-call costs)


# -- child processes ---------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _line_pixels(line: list[float], width: int, height: int) -> list[tuple[float, float]]:
    return [(line[0] * width, line[1] * height), (line[2] * width, line[3] * height)]


def run_ours(spec: dict) -> dict:
    import cv2

    from .config import load_config
    from .runtime import Agent

    workdir = Path(spec["workdir"])
    db = workdir / f"ours-{os.getpid()}.db"
    line = spec["line"]
    config = load_config(
        assets_dir=str(workdir),
        cameras=[{"id": f"cam{i + 1}", "source": spec["clip"], "loop": spec.get("loop", False),
                  "lines": [{"id": "line", "points": [line[:2], line[2:]], "in_side": "left"}]}
                 for i in range(spec["cameras"])],
        detector={"model": spec["model"], "backend": spec["backend"]},
        tracker={"kind": spec.get("tracker", "botsort")},  # the agent's default
        storage={"path": str(db)},
        mqtt={"enabled": False},
        dashboard={"enabled": False},
        performance={"max_batch": spec["batch"], "motion_gate": {"enabled": spec["gate"]}},
    )
    agent = Agent(config, realtime=False, max_frames=spec.get("frames"))
    # Compile the model for every batch size the run can use, before timing.
    capture = cv2.VideoCapture(spec["clip"])
    ok, first = capture.read()
    capture.release()
    for size in range(1, min(spec["cameras"], spec["batch"]) + 1):
        agent.detector.detect([first] * size)
    mark: dict = {}
    rss_samples: list[tuple[float, float]] = []

    def snapshot() -> dict:
        return {"wall": time.perf_counter(), "cpu": time.process_time(),
                "frames": sum(r.frames_processed for r in agent.cameras.values()),
                "decode": sum(r.reader.stats.decode_seconds for r in agent.cameras.values()),
                "stages": dict(agent.times.seconds)}

    def on_frame(frame, result) -> None:
        if not mark and sum(r.frames_processed for r in agent.cameras.values()) >= WARMUP_FRAMES:
            mark.update(snapshot())

    agent.frame_observers.append(on_frame)
    agent.start()
    if spec.get("soak_minutes"):
        done = threading.Event()
        _sample_rss(rss_samples, done)
        agent.run(duration=spec["soak_minutes"] * 60)
        done.set()
    else:
        agent.run()
    end = snapshot()
    agent.shutdown()
    result = _figures(mark, end)
    result["peak_rss_mb"] = _peak_rss_mb()
    result["counts"] = _our_counts(db, list(agent.cameras))
    result["skipped"] = sum(r.gate.stats.skipped for r in agent.cameras.values() if r.gate)
    result["dropped"] = sum(r.reader.stats.frames_dropped for r in agent.cameras.values())
    if rss_samples:
        result["rss_samples"] = rss_samples
    return result


def _sample_rss(samples: list, stop: threading.Event, every: float = 10.0) -> None:
    import psutil

    process, started = psutil.Process(), time.monotonic()

    def loop() -> None:
        while not stop.is_set():
            samples.append((round(time.monotonic() - started, 1), process.memory_info().rss / 2**20))
            stop.wait(every)

    threading.Thread(target=loop, daemon=True, name="rss-sampler").start()


def _figures(mark: dict, end: dict) -> dict:
    frames = end["frames"] - mark["frames"]
    wall = end["wall"] - mark["wall"]
    ms = {stage: (end["stages"].get(stage, 0.0) - mark["stages"].get(stage, 0.0)) * 1000 / frames
          for stage in STAGES if stage != "decode"}
    ms["decode"] = (end["decode"] - mark["decode"]) * 1000 / frames
    return {"frames": frames, "seconds": wall, "fps": frames / wall, "ms": ms,
            "cpu_percent": (end["cpu"] - mark["cpu"]) / wall * 100}


def _our_counts(db: Path, cameras: list[str]) -> dict:
    """Per camera: every crossing (our rule) and each track's first crossing only
    (Ultralytics ObjectCounter's rule), from the committed events."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT camera_id, track_id, direction FROM events ORDER BY id").fetchall()
    counts = {camera: {"in": 0, "out": 0, "first_in": 0, "first_out": 0} for camera in cameras}
    seen: set[tuple[str, int]] = set()
    for camera, track, direction in rows:
        entry = counts[camera]
        entry[direction] += 1
        if (camera, track) not in seen:
            seen.add((camera, track))
            entry[f"first_{direction}"] += 1
    return counts


def run_ultralytics(spec: dict) -> dict:
    import cv2

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import solutions
    from ultralytics.utils import LOGGER

    LOGGER.setLevel(logging.ERROR)  # "No tracks found" on empty frames
    captures = [cv2.VideoCapture(spec["clip"]) for _ in range(spec["cameras"])]
    width = int(captures[0].get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(captures[0].get(cv2.CAP_PROP_FRAME_HEIGHT))
    counters = [
        solutions.ObjectCounter(model=spec["model"], region=_line_pixels(spec["line"], width, height), classes=[0],
                                conf=0.1, iou=0.7, tracker="bytetrack.yaml", show=False, verbose=False)
        for _ in captures
    ]
    seconds = dict.fromkeys(("decode", "detect", "rest"), 0.0)
    frames, mark, limit = 0, {}, spec.get("frames")
    live = list(range(len(captures)))
    per_camera = [0] * len(captures)
    while live:
        for index in list(live):
            started = time.perf_counter()
            ok, image = captures[index].read()
            decoded = time.perf_counter()
            if not ok or (limit and per_camera[index] >= limit):
                live.remove(index)
                continue
            counters[index].process(image)
            done = time.perf_counter()
            speed = counters[index].tracks.speed
            detect = (speed["preprocess"] + speed["inference"] + speed["postprocess"]) / 1000
            seconds["decode"] += decoded - started
            seconds["detect"] += detect
            seconds["rest"] += done - decoded - detect
            frames += 1
            per_camera[index] += 1
            if frames == WARMUP_FRAMES:
                mark = {"wall": time.perf_counter(), "cpu": time.process_time(), "frames": frames,
                        "decode": seconds["decode"], "stages": {"detect": seconds["detect"], "track": seconds["rest"]}}
    end = {"wall": time.perf_counter(), "cpu": time.process_time(), "frames": frames, "decode": seconds["decode"],
           "stages": {"detect": seconds["detect"], "track": seconds["rest"]}}
    result = _figures(mark, end)
    result["peak_rss_mb"] = _peak_rss_mb()
    result["counts"] = {f"cam{i + 1}": {"in": c.in_count, "out": c.out_count} for i, c in enumerate(counters)}
    result["imgsz"] = list(counters[0].tracks.orig_shape)
    return result


def run_model_alone(spec: dict) -> dict:
    """The network alone in the inference runtime, on float NCHW input made
    beforehand from letterboxed frames of the clip: no decode, no pre- or
    post-processing. The floor the pipeline's overhead is measured from."""
    import cv2
    import numpy as np

    from .config import DetectorConfig
    from .detect import letterbox, load_detector

    detector = load_detector(Path(spec["model"]), DetectorConfig(backend=spec["backend"]))
    capture = cv2.VideoCapture(spec["clip"])
    images = []
    while len(images) < 32:
        ok, image = capture.read()
        if not ok:
            break
        images.append(image)
    detector.detect(images[:1])  # settles whether the model takes other shapes
    hw = detector.input_size_for(images[0].shape, None)
    blobs = [cv2.dnn.blobFromImage(letterbox(image, *hw)[0], 1 / 255.0, swapRB=True) for image in images]
    result: dict = {"input": f"{hw[0]}x{hw[1]}"}
    for batch in (1, 4) if detector.batches else (1,):
        inputs = [np.concatenate(blobs[i:i + batch]) for i in range(0, len(blobs) - batch + 1, batch)]
        infer = _plain_model(spec, batch, hw)
        for blob in inputs[:3]:
            infer(blob)  # warm
        calls, started, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - started < spec.get("seconds", 8.0):
            infer(inputs[calls % len(inputs)])
            calls += 1
        elapsed = time.perf_counter() - started
        result[f"batch{batch}_ms_per_frame"] = elapsed * 1000 / (calls * batch)
        result[f"batch{batch}_cpu_ms_per_frame"] = (time.process_time() - cpu) * 1000 / (calls * batch)
    result["fps"] = 1000 / result["batch1_ms_per_frame"]
    result["cpu_ms_per_frame"] = result["batch1_cpu_ms_per_frame"]
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _plain_model(spec: dict, batch: int, hw: tuple[int, int]):
    """The model file compiled as the detector compiles it, minus its in-graph preprocessing."""
    path = Path(spec["model"])
    if spec["backend"] == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda blob: session.run(None, {name: blob})[0]
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(next(path.glob("*.xml")) if path.is_dir() else path))
    if not model.inputs[0].get_partial_shape().is_static:
        model.reshape({model.inputs[0].any_name: [batch, 3, *hw]})
    request = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
    return lambda blob: request.infer({0: blob})[0]


WORKERS = {"ours": run_ours, "ultralytics": run_ultralytics, "model": run_model_alone}


def _child(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    print(json.dumps(WORKERS[spec["kind"]](spec)))


def run_child(spec: dict, timeout: float) -> dict:
    started = time.time()
    process = subprocess.run([sys.executable, "-m", "edge_agent.benchmark", json.dumps(spec)], capture_output=True,
                             text=True, timeout=timeout, cwd=Path(__file__).resolve().parent.parent,
                             env={**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"})
    if process.returncode != 0:
        raise RuntimeError(f"{spec['kind']} run failed:\n{process.stderr[-3000:]}")
    result = json.loads(process.stdout.strip().splitlines()[-1])
    result["wall_with_start_s"] = time.time() - started
    return result


# -- orchestration -------------------------------------------------------------------------------
def prepare_models(assets_dir: Path, backend: str) -> tuple[Path, Path]:
    """(our model, Ultralytics' model): the same file for both sides."""
    from .assets import ensure_asset
    from .model_export import export_model

    onnx = Path(ensure_asset("yolov8n_fp32.onnx", assets_dir))
    if backend == "onnxruntime":
        return onnx, onnx
    folder = onnx.parent / "yolov8n_fp32_openvino_model"
    if not folder.exists():
        print(f"exporting {onnx.name} with Ultralytics' OpenVINO exporter (dynamic shapes) → {folder}", file=sys.stderr)
        export_model(onnx, "openvino", folder)
    return folder, folder


def plan(cameras: list[int], repeats: int, with_ultralytics: bool, batch: int) -> list[dict]:
    runs = []
    for repeat in range(repeats):
        runs.append({"kind": "model", "label": "model alone", "cameras": 1, "repeat": repeat})
        for count in cameras:
            runs.append({"kind": "ours", "label": f"ours, {count} cam, gate off", "cameras": count, "gate": False,
                         "batch": 1, "repeat": repeat})
            if with_ultralytics:
                runs.append({"kind": "ultralytics", "label": f"Ultralytics, {count} cam", "cameras": count,
                             "repeat": repeat})
            runs.append({"kind": "ours", "label": f"ours, {count} cam, gate on", "cameras": count, "gate": True,
                         "batch": 1, "repeat": repeat})
            if count == 1:
                # Our rows run the agent's default tracker (BoT-SORT from Roboflow trackers); this one
                # runs the ByteTrack of the same package, the algorithm the Ultralytics row uses.
                runs.append({"kind": "ours", "label": "ours, 1 cam, gate off, Roboflow ByteTrack",
                             "cameras": 1, "gate": False, "batch": 1, "tracker": "bytetrack", "repeat": repeat})
            if count == 1 and with_ultralytics:
                runs.append({"kind": "ours", "label": "ours, 1 cam, gate off, Ultralytics' ByteTrack", "cameras": 1,
                             "gate": False, "batch": 1, "tracker": "ultralytics-bytetrack", "repeat": repeat})
            if count > 1 and batch > 1:
                runs.append({"kind": "ours", "label": f"ours, {count} cam, gate off, batch {batch}",
                             "cameras": count, "gate": False, "batch": batch, "repeat": repeat})
    return runs


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(results: dict[str, list[dict]]) -> dict[str, dict]:
    table = {}
    for label, runs in results.items():
        row = {"runs": len(runs)}
        for key in ("fps", "cpu_percent", "peak_rss_mb", "batch1_ms_per_frame", "batch4_ms_per_frame",
                    "cpu_ms_per_frame", "batch4_cpu_ms_per_frame"):
            values = [run[key] for run in runs if key in run]
            if values:
                row[key] = _median(values)
        if runs and "ms" in runs[0]:
            row["ms"] = {stage: _median([run["ms"].get(stage, 0.0) for run in runs]) for stage in STAGES}
        for key in ("counts", "input", "skipped", "dropped", "frames"):
            if runs and key in runs[-1]:
                row[key] = runs[-1][key]
        row["counts_stable"] = all(run.get("counts") == runs[0].get("counts") for run in runs)
        table[label] = row
    return table


def format_table(table: dict[str, dict], backend: str) -> str:
    model = table.get("model alone", {})
    floor = model.get("batch1_ms_per_frame")
    lines = [
        "| run | frames/s | ms/frame | decode | motion | detect | track | count | store | CPU % | CPU ms/frame "
        "| peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    if model:
        cpu = model.get("cpu_ms_per_frame")
        lines.append(f"| model alone ({backend}, {model.get('input')}, batch 1) | {model['fps']:.1f} | {floor:.2f} | "
                     f"| | {floor:.2f} | | | | {cpu * model['fps'] / 10:.0f} | {cpu:.1f} | |")
        if "batch4_ms_per_frame" in model:
            b4 = model["batch4_ms_per_frame"]
            lines.append(f"| model alone ({backend}, batch 4) | {1000 / b4:.1f} | {b4:.2f} | | | {b4:.2f} | | | | | "
                         f"{model.get('batch4_cpu_ms_per_frame', 0):.1f} | |")
    for label, row in table.items():
        if label == "model alone":
            continue
        ms = row["ms"]
        cells = [f"{ms[stage]:.2f}" for stage in STAGES]
        if "gate off" in label:
            cells[1] = "–"
        if label.startswith("Ultralytics"):  # its tracking, counting and drawing happen in one call
            cells = [f"{ms['decode']:.2f}", "–", f"{ms['detect']:.2f}", f"{ms['track']:.2f} (with count, drawing)",
                     "(in track)", "–"]
        lines.append(f"| {label} | {row['fps']:.1f} | {1000 / row['fps']:.2f} | " + " | ".join(cells)
                     + f" | {row['cpu_percent']:.0f} | {row['cpu_percent'] * 10 / row['fps']:.1f}"
                     f" | {row['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def format_comparison(table: dict[str, dict]) -> str:
    out = ["| cameras | frames/s ours (gate off) / Ultralytics | ours (gate on) / Ultralytics | "
           "peak RSS Ultralytics / ours |", "|---|---:|---:|---:|"]
    for label, row in table.items():
        if not label.startswith("Ultralytics"):
            continue
        cameras = label.split(", ")[1]
        off, on = table.get(f"ours, {cameras}, gate off"), table.get(f"ours, {cameras}, gate on")
        if off:
            out.append(f"| {cameras} | {off['fps'] / row['fps']:.2f}× | {(on or off)['fps'] / row['fps']:.2f}× | "
                       f"{row['peak_rss_mb'] / off['peak_rss_mb']:.2f}× |")
    return "\n".join(out)


def format_counts(table: dict[str, dict]) -> str:
    """Camera 1's counts. Ours counts every crossing; ObjectCounter counts a track once
    (its first crossing), so ours is also shown under that rule."""
    out = ["| run | every crossing | first crossing of each track |", "|---|---|---|"]
    for label, row in table.items():
        counts = (row.get("counts") or {}).get("cam1")
        if counts is None:
            continue
        every = f"in {counts['in']} out {counts['out']}" if "first_in" in counts else "–"
        first = (f"in {counts['first_in']} out {counts['first_out']}" if "first_in" in counts
                 else f"in {counts['in']} out {counts['out']}")
        stable = "" if row.get("counts_stable", True) else " (varied between repeats)"
        out.append(f"| {label} | {every} | {first}{stable} |")
    return "\n".join(out)


def overhead_lines(table: dict[str, dict]) -> list[str]:
    model = table.get("model alone")
    if not model:
        return []
    lines = []
    for label, row in table.items():
        if label.startswith("ours") and "gate off" in label and "ByteTrack" not in label:
            cameras = int(label.split(", ")[1].split()[0])
            floor = model.get("batch4_ms_per_frame", model["batch1_ms_per_frame"]) if "batch 4" in label else \
                model["batch1_ms_per_frame"]
            overhead = (1000 / row["fps"]) / floor - 1
            lines.append(f"{label}: {1000 / row['fps']:.2f} ms/frame against {floor:.2f} for the model alone → "
                         f"pipeline overhead {overhead * 100:+.0f} %")
    return lines


def machine_line() -> str:
    import platform

    cpu = "unknown CPU"
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}; load average at start {load[0]:.2f}")


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in ("openvino", "onnxruntime", "opencv-python", "ultralytics", "torch", "trackers"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(parts)


def soak_report(result: dict) -> str:
    samples = result.get("rss_samples") or []
    if not samples:
        return "soak: no RSS samples"
    start = next((rss for t, rss in samples if t >= 60), samples[0][1])
    end = samples[-1][1]
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    slope = 0.0
    if len(half) >= 2:
        xs, ys = [s[0] for s in half], [s[1] for s in half]
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        denominator = sum((x - mean_x) ** 2 for x in xs)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / denominator * 3600 if denominator else 0.0
    return (f"soak: {samples[-1][0] / 60:.1f} min, {result['frames']} frames at {result['fps']:.1f} frames/s; "
            f"RSS at 1 min {start:.0f} MB, at end {end:.0f} MB, peak {max(s[1] for s in samples):.0f} MB; "
            f"trend over the second half {slope:+.1f} MB/hour")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets-dir", type=Path, default=None, help="Where the model and clip are.")
    parser.add_argument("--clip", default="crosswalk_640x360.mp4")
    parser.add_argument("--backend", choices=["openvino", "onnxruntime"], default="openvino")
    parser.add_argument("--cameras", default="1,4", help="Camera counts to run, e.g. 1,4.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=None, help="Frames per camera (default: the whole clip).")
    parser.add_argument("--line", default="0.3,0,0.3,1", help="Counting line X1,Y1,X2,Y2 (0-1).")
    parser.add_argument("--batch", type=int, default=4,
                        help="Also run our multi-camera case with this performance.max_batch (1: skip).")
    parser.add_argument("--no-ultralytics", action="store_true", help="Skip the Ultralytics baseline.")
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="Also run ours this long on the looped clip.")
    parser.add_argument("--soak-cameras", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None, help="Write every run's figures here.")
    args = parser.parse_args(argv)

    from .assets import ensure_asset
    from .config import load_config

    assets_dir = args.assets_dir or load_config().assets_dir
    clip = str(ensure_asset(args.clip, assets_dir))
    ours_model, their_model = prepare_models(assets_dir, args.backend)
    line = [float(v) for v in args.line.split(",")]
    cameras = [int(v) for v in args.cameras.split(",")]
    print(f"machine: {machine_line()}\nversions: {versions()}\nclip: {clip}\nmodel: {ours_model} ({args.backend})",
          flush=True)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as workdir:
        common = {"clip": clip, "line": line, "frames": args.frames, "backend": args.backend, "workdir": workdir}
        runs = plan(cameras, args.repeats, not args.no_ultralytics, args.batch)
        for number, run in enumerate(runs, 1):
            model = their_model if run["kind"] == "ultralytics" else ours_model
            spec = {**common, **run, "model": str(model)}
            result = run_child(spec, timeout=3600)
            results.setdefault(run["label"], []).append(result)
            print(f"[{number}/{len(runs)}] {run['label']}: {result['fps']:.1f} frames/s, "
                  f"peak RSS {result['peak_rss_mb']:.0f} MB, counts {result.get('counts', {}).get('cam1', '')}",
                  file=sys.stderr, flush=True)
        soak = None
        if args.soak_minutes:
            spec = {**common, "kind": "ours", "label": "soak", "cameras": args.soak_cameras, "gate": True,
                    "batch": 1, "loop": True, "frames": None, "soak_minutes": args.soak_minutes,
                    "model": str(ours_model)}
            soak = run_child(spec, timeout=args.soak_minutes * 60 + 600)
    table = summarise(results)
    print(f"\nmedians of {args.repeats} interleaved runs; {WARMUP_FRAMES} warm-up frames per run excluded; "
          "ms/frame = 1000 / frames/s (all cameras together); stage columns are time spent per frame in each "
          "stage (decode runs in the capture threads, beside detection)\n")
    print(format_table(table, args.backend))
    if not args.no_ultralytics:
        print("\nours / Ultralytics\n")
        print(format_comparison(table))
    print(f"\ncounts on camera 1 (line {args.line}, in = moving right)\n")
    print(format_counts(table))
    print()
    for text in overhead_lines(table):
        print(text)
    if soak is not None:
        print(soak_report(soak))
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "table": table, "soak": soak}, indent=1))
    return 0


@click.command("bench", add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def bench_command(ctx: click.Context) -> None:
    """Benchmark against plain Ultralytics on the sample clip (edge-agent bench --help for options)."""
    sys.exit(main(ctx.args))


if __name__ == "__main__":
    _child(sys.argv[1:])
