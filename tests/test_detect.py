"""The lean detector (no torch) against Ultralytics on the same ONNX file."""

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from edge_agent.config import DetectorConfig
from edge_agent.detect import choose_backend, letterbox, load_detector


@pytest.fixture(scope="module")
def bus():
    import ultralytics

    image = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "bus.jpg"))
    assert image is not None
    return image


def test_letterbox_matches_ultralytics_geometry():
    frame = np.zeros((360, 640, 3), np.uint8)
    boxed, box = letterbox(frame, 640, 640)
    assert boxed.shape == (640, 640, 3) and box.scale == 1.0 and box.pad_y == 140 and box.pad_x == 0


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_lean_backends_find_the_four_people_ultralytics_finds(bus, model_path, backend):
    from ultralytics import YOLO

    config = DetectorConfig(backend=backend, confidence=0.25)
    ours = load_detector(model_path, config).detect([bus])[0]
    theirs = YOLO(str(model_path), task="detect").predict(bus, conf=0.25, classes=[0], verbose=False)[0]
    reference = theirs.boxes.xyxy.cpu().numpy()
    assert len(ours) == len(reference) == 4
    assert (ours.class_id == 0).all()
    overlap = sv.box_iou_batch(ours.xyxy, reference).max(axis=1)
    assert overlap.min() > 0.95, overlap


def test_auto_backend_choice(model_path, tmp_path):
    assert choose_backend(model_path, "auto") == "openvino"
    assert choose_backend(tmp_path / "yolov8n.pt", "auto") == "ultralytics"
    assert choose_backend(model_path, "onnxruntime") == "onnxruntime"


def test_lean_path_keeps_torch_out_of_the_process(model_path, tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "from edge_agent.config import DetectorConfig, TrackerConfig\n"
        "from edge_agent.detect import load_detector\n"
        "from edge_agent.tracking import make_tracker\n"
        f"d = load_detector(Path({str(model_path)!r}), DetectorConfig())\n"
        "t = make_tracker(TrackerConfig())\n"
        "t.update(d.detect([np.zeros((360, 640, 3), np.uint8)])[0], 0.0)\n"
        "print('torch' in sys.modules)\n"
    )
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
