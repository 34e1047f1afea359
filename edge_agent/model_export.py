"""Converting a model for the box it runs on, with Ultralytics' exporter.

The export runs in a child process (``python -m edge_agent.model_export``), so torch
is loaded only for the conversion and never stays in the agent's process.

Ultralytics exports from PyTorch weights. When only an Ultralytics ONNX export
is at hand (as on machines without internet, where ``yolov8n.pt`` cannot be
fetched), the network is rebuilt from the architecture named in the ONNX
metadata, the ONNX weights are loaded into it, and its output is checked
against the ONNX file's own before anything is exported; a mismatch is an error.

Formats and the runtime that loads them (``detect.choose_backend``):

==============  ==============================  =============================
format          made by                          runs on
==============  ==============================  =============================
``openvino``    Ultralytics (dynamic shapes)     OpenVINO, lean (Intel/AMD x86)
``onnx``        Ultralytics (dynamic shapes)     OpenVINO / ONNX Runtime, lean
``ncnn``        Ultralytics + pnnx               Ultralytics (Raspberry Pi, ARM)
``engine``      Ultralytics + TensorRT           Ultralytics (Jetson, NVIDIA GPU)
``pt``          rebuilt from an ONNX export      Ultralytics (PyTorch)
==============  ==============================  =============================
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FORMATS = ("openvino", "onnx", "ncnn", "engine", "torchscript", "tflite", "pt")
# Formats whose consumer here reshapes per camera and batch: export them with free shapes.
DYNAMIC_BY_DEFAULT = {"openvino", "onnx"}


class ExportError(RuntimeError):
    pass


def export_model(
    source: Path,
    fmt: str,
    target: Path | None = None,
    imgsz: int = 640,
    dynamic: bool | None = None,
    half: bool = False,
    batch: int = 1,
    timeout: float = 900.0,
) -> Path:
    """Convert ``source`` (.pt, or an Ultralytics .onnx) to ``fmt``; returns the
    produced file or folder (``target`` when given, else beside ``source``)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    source = Path(source).absolute()  # not resolved: the output goes beside the name given, not a link's target
    if not source.exists():
        raise ExportError(f"{source} does not exist")
    dynamic = fmt in DYNAMIC_BY_DEFAULT if dynamic is None else dynamic
    args = [sys.executable, "-m", "edge_agent.model_export", str(source), fmt, "--imgsz", str(imgsz),
            "--batch", str(batch)] + (["--dynamic"] if dynamic else []) + (["--half"] if half else [])
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": os.environ.get("YOLO_AUTOINSTALL", "0")}
    with tempfile.TemporaryDirectory(prefix="edge-agent-export-") as work:
        # cwd: the folder holding this package, so the child runs this very code.
        result = subprocess.run(args + ["--workdir", work], capture_output=True, text=True, env=env,
                                timeout=timeout, cwd=Path(__file__).resolve().parent.parent)
        if result.returncode != 0:
            raise ExportError(f"exporting {source.name} to {fmt} failed:\n{result.stderr[-3000:]}")
        produced = Path(json.loads(result.stdout.strip().splitlines()[-1])["produced"])
        target = target or source.parent / produced.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        shutil.move(str(produced), str(target))
    return target


# -- child process ----------------------------------------------------------------------------
def architecture_of(metadata: dict[str, str]) -> str:
    """``Ultralytics YOLOv8n model trained on coco.yaml`` → ``yolov8n.yaml``."""
    match = re.search(r"\b(YOLO(?:v\d+|\d+)[nsmlx])\b", metadata.get("description", ""), re.IGNORECASE)
    if not match:
        raise ExportError("the ONNX metadata does not name a YOLO architecture (e.g. 'YOLOv8n'); "
                          "export from the .pt weights instead")
    return match.group(1).lower() + ".yaml"


def rebuild_from_onnx(onnx_path: Path, out_pt: Path, tolerance: float = 0.05):
    """Ultralytics PyTorch checkpoint with the weights of an Ultralytics ONNX detect export."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper
    from ultralytics.nn.tasks import DetectionModel

    proto = onnx.load(str(onnx_path))
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    if metadata.get("task", "detect") != "detect" or metadata.get("end2end") == "True":
        raise ExportError(f"{onnx_path.name}: only non-end-to-end detection exports can be rebuilt")
    names = ast.literal_eval(metadata.get("names", "{}")) or {i: str(i) for i in range(80)}
    model = DetectionModel(architecture_of(metadata), nc=len(names), verbose=False)
    model.fuse(verbose=False)  # an export folds BatchNorm into the convolutions: match that
    wanted = model.state_dict()
    weights = {}
    for initializer in proto.graph.initializer:
        # INT8 files hold quantized tensors under other names: they are not found and refused below.
        key = initializer.name.removesuffix("_fp32")
        if key in wanted:
            weights[key] = torch.from_numpy(numpy_helper.to_array(initializer).copy())
    missing = [key for key in wanted if key not in weights or weights[key].shape != wanted[key].shape]
    if missing:
        raise ExportError(f"{onnx_path.name}: {len(missing)} weights of {architecture_of(metadata)} are not in "
                          f"the file (first: {missing[0]}); export from the .pt weights instead")
    model.load_state_dict(weights)
    model.names = names
    model.args = {"imgsz": _imgsz(metadata), "task": "detect"}
    model.eval()

    size = _imgsz(metadata)
    probe = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: probe})[0]
    with torch.no_grad():
        got = model(torch.from_numpy(probe))[0].numpy()
    worst = float(np.abs(got - expected).max())
    if got.shape != expected.shape or worst > tolerance:
        raise ExportError(f"{onnx_path.name}: the rebuilt network differs from the ONNX file (max |Δ| {worst:.4f})")
    torch.save({"model": model, "train_args": {"imgsz": size, "task": "detect"},
                "date": metadata.get("date"), "version": metadata.get("version")}, out_pt)
    return out_pt, worst


def _imgsz(metadata: dict[str, str]) -> int:
    value = ast.literal_eval(metadata.get("imgsz", "640"))
    return int(max(value) if isinstance(value, (list, tuple)) else value)


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m edge_agent.model_export")
    parser.add_argument("source", type=Path)
    parser.add_argument("format", choices=FORMATS)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dynamic", action="store_true")
    parser.add_argument("--half", action="store_true")
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    source = args.source.resolve()
    stem = args.source.stem
    if source.suffix == ".onnx":
        pt, worst = rebuild_from_onnx(source, args.workdir / f"{stem}.pt")
        print(f"rebuilt {source.name} as PyTorch (max |Δ| {worst:.5f} against the ONNX file)", file=sys.stderr)
    elif source.suffix == ".pt":
        pt = args.workdir / f"{stem}.pt"
        shutil.copyfile(source, pt)  # Ultralytics writes beside its input: keep that in the work folder
    else:
        raise ExportError(f"{source.name}: export starts from a .pt file or an Ultralytics .onnx export")
    if args.format == "pt":
        produced = pt
    else:
        from ultralytics import YOLO

        options = {"format": args.format, "imgsz": args.imgsz, "batch": args.batch, "half": args.half}
        if args.format in ("openvino", "onnx", "engine", "torchscript"):
            options["dynamic"] = args.dynamic
        produced = Path(YOLO(str(pt), task="detect").export(**options))
    print(json.dumps({"produced": str(produced)}))


if __name__ == "__main__":
    try:
        _child(sys.argv[1:])
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
