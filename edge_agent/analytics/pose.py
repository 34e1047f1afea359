"""Optional pose model: wrist keypoints for shelf reaches.

The rule is pure (:func:`wrists_by_track`: pose boxes matched to tracks by IoU,
wrists kept when confident). The model runs through Ultralytics (it imports
torch) and only when ``analytics.pose_model`` is configured; no pose model
ships with the agent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..geometry import Point, box_iou

# COCO-17 keypoint order (Ultralytics *-pose models)
LEFT_WRIST, RIGHT_WRIST = 9, 10


class PoseModelError(ConfigError):
    """A configured pose model that cannot be used (shown as a config error)."""


@dataclass(frozen=True)
class PoseResult:
    boxes: np.ndarray  # (N, 4) pixel xyxy
    keypoints: np.ndarray  # (N, 17, 3): x, y in 0–1, confidence


def wrists_by_track(pose: PoseResult, track_boxes: np.ndarray, track_ids: np.ndarray,
                    min_confidence: float = 0.5, min_iou: float = 0.3) -> dict[int, tuple[Point, ...]]:
    """Each track's confident wrist keypoints, from the pose box that overlaps it most."""
    found: dict[int, tuple[Point, ...]] = {}
    iou = box_iou(np.asarray(track_boxes, dtype=float), np.asarray(pose.boxes, dtype=float))
    taken: set[int] = set()
    for t in np.argsort(-iou.max(axis=1)) if iou.size else []:
        order = [p for p in np.argsort(-iou[t]) if p not in taken and iou[t, p] >= min_iou]
        if not order:
            continue
        p = order[0]
        taken.add(p)
        wrists = tuple(
            (float(pose.keypoints[p, k, 0]), float(pose.keypoints[p, k, 1]))
            for k in (LEFT_WRIST, RIGHT_WRIST)
            if pose.keypoints[p, k, 2] >= min_confidence
        )
        found[int(track_ids[t])] = wrists
    return found


class PoseEstimator:
    """An Ultralytics pose model (``*-pose.pt``, or its ONNX/OpenVINO export)."""

    def __init__(self, model_path: str | Path, imgsz: int = 640) -> None:
        path = Path(model_path).expanduser()
        if not path.exists():
            raise PoseModelError(f"analytics.pose_model: {path} does not exist; give the path of a YOLO pose "
                                 "model (e.g. yolo11n-pose.pt or its ONNX export) or remove the key")
        task = _declared_task(path)
        if task is not None and task != "pose":
            raise PoseModelError(f"analytics.pose_model: {path.name} is a '{task}' model, not a pose model; "
                                 "use a YOLO *-pose model (17 COCO keypoints)")
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO

        self.model = YOLO(str(path), task="pose")
        self.imgsz = imgsz

    def estimate(self, image: np.ndarray) -> PoseResult:
        result = self.model.predict(image, imgsz=self.imgsz, classes=[0], verbose=False)[0]
        if result.keypoints is None or len(result.boxes) == 0:
            return PoseResult(np.empty((0, 4)), np.empty((0, 17, 3)))
        xyn = result.keypoints.xyn.cpu().numpy()
        conf = result.keypoints.conf
        conf = conf.cpu().numpy() if conf is not None else np.ones(xyn.shape[:2])
        return PoseResult(result.boxes.xyxy.cpu().numpy(), np.concatenate([xyn, conf[..., None]], axis=2))


def _declared_task(path: Path) -> str | None:
    """The task Ultralytics wrote into an exported model's metadata, if any."""
    try:
        if path.suffix == ".onnx":
            import onnx

            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            return meta.get("task")
        if path.is_dir() and (path / "metadata.yaml").exists():
            import yaml

            return (yaml.safe_load((path / "metadata.yaml").read_text()) or {}).get("task")
    except Exception:  # unreadable metadata: let Ultralytics decide
        return None
    return None
