"""People detection: frames in, ``sv.Detections`` out.

Two kinds of backend sit behind one small interface:

* the *lean* backend runs an ONNX / OpenVINO model directly with OpenVINO or
  ONNX Runtime and does the letterbox and NMS in OpenCV/numpy; it never
  imports torch, which keeps ~180 MB+ out of the long-running agent;
* the *Ultralytics* backend hands the model to ``ultralytics.YOLO`` and so
  runs every format Ultralytics runs (PyTorch, NCNN, TensorRT, …).

``backend: auto`` picks the lean backend for ``.onnx`` files and OpenVINO
folders (OpenVINO when installed, else ONNX Runtime) and Ultralytics otherwise.
"""

from __future__ import annotations

import ast
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import supervision as sv

from .config import DetectorConfig

log = logging.getLogger(__name__)

PAD_VALUE = 114  # Ultralytics' letterbox grey


class Detector(Protocol):
    backend: str

    def detect(self, frames: Sequence[np.ndarray], imgsz: int | None = None) -> list[sv.Detections]:
        """One ``sv.Detections`` (pixel xyxy, confidence, class_id) per frame."""
        ...


class DetectorError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was fitted into the model input; undone on the boxes."""

    scale: float
    pad_x: float
    pad_y: float


def letterbox(frame: np.ndarray, height: int, width: int) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio and pad to (height, width), as Ultralytics does."""
    h, w = frame.shape[:2]
    scale = min(height / h, width / w)
    new_w, new_h = round(w * scale), round(h * scale)
    if (new_w, new_h) != (w, h):
        frame = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (width - new_w) / 2, (height - new_h) / 2
    top, bottom = round(pad_y - 0.1), round(pad_y + 0.1)
    left, right = round(pad_x - 0.1), round(pad_x + 0.1)
    if top or bottom or left or right:
        frame = cv2.copyMakeBorder(frame, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return frame, Letterbox(scale, left, top)


def decode_yolo_output(
    output: np.ndarray,
    box: Letterbox,
    frame_shape: tuple[int, ...],
    classes: Sequence[int],
    confidence: float,
    iou: float,
    max_det: int = 300,
) -> sv.Detections:
    """Decode one image's raw YOLOv8/11 head output (4 + nc, anchors).

    A candidate is kept when its best class is one of ``classes`` and that
    class's score passes ``confidence`` (Ultralytics' rule), then per-class NMS.
    """
    scores_all = output[4:]
    wanted = np.asarray(classes, dtype=int)
    wanted_scores = scores_all[wanted]  # (len(classes), anchors)
    candidate = (wanted_scores > confidence).any(axis=0)
    if not candidate.any():
        return sv.Detections.empty()
    idx = np.nonzero(candidate)[0]
    best_class = scores_all[:, idx].argmax(axis=0)
    keep = np.isin(best_class, wanted)
    idx, best_class = idx[keep], best_class[keep]
    if idx.size == 0:
        return sv.Detections.empty()
    scores = scores_all[best_class, idx].astype(np.float32)
    keep = scores > confidence
    idx, best_class, scores = idx[keep], best_class[keep], scores[keep]
    if idx.size == 0:
        return sv.Detections.empty()
    cx, cy, bw, bh = output[0, idx], output[1, idx], output[2, idx], output[3, idx]
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(np.float32)
    kept = _nms_per_class(xyxy, scores, best_class, iou, max_det)
    xyxy, scores, best_class = xyxy[kept], scores[kept], best_class[kept]
    xyxy[:, [0, 2]] -= box.pad_x
    xyxy[:, [1, 3]] -= box.pad_y
    xyxy /= box.scale
    height, width = frame_shape[:2]
    xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, width)
    xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, height)
    return sv.Detections(xyxy=xyxy, confidence=scores, class_id=best_class.astype(int))


def _nms_per_class(xyxy: np.ndarray, scores: np.ndarray, class_id: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    # Offsetting boxes by class keeps classes apart in one NMS call (Ultralytics' trick).
    offset = class_id[:, None].astype(np.float32) * 7680.0
    boxes = xyxy + offset
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    kept = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou, top_k=max_det)
    kept = np.asarray(kept, dtype=int).reshape(-1)
    return kept[np.argsort(-scores[kept], kind="stable")][:max_det]


def _read_onnx_metadata(path: Path) -> dict[str, str]:
    """Ultralytics writes names/imgsz/stride into the ONNX metadata."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return {prop.key: prop.value for prop in model.metadata_props}
    except Exception as exc:  # a foreign ONNX file still runs with defaults
        log.debug("no Ultralytics metadata in %s: %s", path, exc)
        return {}


def _input_hw(metadata: dict[str, str], fallback: int) -> tuple[int, int]:
    raw = metadata.get("imgsz")
    if raw:
        try:
            value = ast.literal_eval(raw)
            if isinstance(value, (list, tuple)) and len(value) == 2:
                return int(value[0]), int(value[1])
            return int(value), int(value)
        except (ValueError, SyntaxError):
            pass
    return fallback, fallback


def rect_input_hw(frame_shape: Sequence[int], size: int, stride: int) -> tuple[int, int]:
    """Ultralytics' "rect" input for one frame: the longer side is ``size``, the
    shorter one padded only up to a multiple of ``stride`` (640x360 -> 384x640)."""
    h, w = frame_shape[:2]
    scale = min(size / h, size / w)
    new_h, new_w = round(h * scale), round(w * scale)
    return new_h + (size - new_h) % stride, new_w + (size - new_w) % stride


class LeanDetector:
    """OpenVINO or ONNX Runtime, no torch.

    A model with a free input shape (``models export --format openvino``, which
    exports dynamic shapes) runs each camera at its own ``imgsz`` with
    Ultralytics' rect letterbox (640x360 → 384x640, ~40 % less work than
    640x640) and several frames of one size in one inference call. A model with
    a fixed shape (an ONNX file exported with ``dynamic=False``) runs every
    frame at its own size, one frame per call.
    """

    def __init__(self, model_path: Path, config: DetectorConfig, runtime: str) -> None:
        self.config = config
        self.model_path = model_path
        self.backend = runtime
        threads = config.threads or 0
        if model_path.is_dir():
            xml = next(iter(sorted(model_path.glob("*.xml"))), None)
            if xml is None:
                raise DetectorError(f"{model_path} has no OpenVINO .xml model")
            metadata = _read_openvino_metadata(model_path)
            source = xml
        else:
            metadata = _read_onnx_metadata(model_path)
            source = model_path
        self.input_hw = _input_hw(metadata, config.imgsz)
        self.stride = int(metadata.get("stride") or 32)
        # True once the model has accepted another input shape; False once it refused one.
        self.reshapable: bool | None = None
        if runtime == "openvino":
            import openvino as ov

            core = ov.Core()
            properties = {"PERFORMANCE_HINT": "LATENCY"}
            if threads:
                properties["INFERENCE_NUM_THREADS"] = threads
            self._ov_core = core
            self._ov_model = core.read_model(str(source))
            self._ov_properties = properties
            # One compiled model per (batch, height, width): bounded by cameras × sizes.
            self._ov_compiled: dict[tuple[int, int, int], object] = {}
            shape = self._ov_model.inputs[0].get_partial_shape()
            if shape.is_static:
                self.input_hw = (shape[2].get_length(), shape[3].get_length())
            else:
                self.reshapable = True
            self._infer = self._infer_openvino
            self._prepare = _stack_images
        elif runtime == "onnxruntime":
            if model_path.is_dir():
                raise DetectorError("ONNX Runtime needs an .onnx file, not an OpenVINO folder")
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self._session = ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
            self._input_name = self._session.get_inputs()[0].name
            shape = self._session.get_inputs()[0].shape
            if all(isinstance(dim, int) for dim in shape):
                self.input_hw = (shape[2], shape[3])
                self.reshapable = False
            else:
                self.reshapable = True
            self._infer = self._infer_onnxruntime
            self._prepare = _stack_blobs
        else:
            raise DetectorError(f"unknown lean runtime {runtime!r}")

    def _infer_onnxruntime(self, blob: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: blob})[0]

    def _infer_openvino(self, images: np.ndarray) -> np.ndarray:
        """``images``: letterboxed BGR uint8, N x H x W x 3."""
        key = images.shape[:3]
        request = self._ov_compiled.get(key)
        if request is None:
            request = self._compile_openvino(*key)
            self._ov_compiled[key] = request
        return request.infer({0: images})[0]

    def _compile_openvino(self, batch: int, height: int, width: int):
        """The model for one input shape, taking the letterboxed BGR picture as it is:
        OpenVINO converts it to the network's RGB float NCHW input inside the graph
        (faster than doing it in numpy, and no 3 MB float copy per frame)."""
        import openvino as ov
        from openvino.preprocess import ColorFormat, PrePostProcessor

        model = self._ov_model.clone()
        if self.reshapable is not False and (batch, height, width) != (1, *self.input_hw):
            model.reshape({model.inputs[0].any_name: [batch, 3, height, width]})
        steps = PrePostProcessor(model)
        steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(
            ColorFormat.BGR)
        steps.input().model().set_layout(ov.Layout("NCHW"))
        steps.input().preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
        return self._ov_core.compile_model(steps.build(), "CPU", self._ov_properties).create_infer_request()

    @property
    def batches(self) -> bool:
        """Whether frames of one size go through the model in one call."""
        return bool(self.reshapable)

    def input_size_for(self, frame_shape: tuple[int, ...], imgsz: int | None) -> tuple[int, int]:
        if not self.reshapable:
            return self.input_hw
        return rect_input_hw(frame_shape, imgsz or max(self.input_hw), self.stride)

    def detect(self, frames: Sequence[np.ndarray], imgsz: int | None = None) -> list[sv.Detections]:
        if self.reshapable is None and frames:
            self._probe_reshape(frames[0].shape, imgsz)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, frame in enumerate(frames):
            groups.setdefault(self.input_size_for(frame.shape, imgsz), []).append(index)
        results: list[sv.Detections | None] = [None] * len(frames)
        for hw, indices in groups.items():
            step = len(indices) if self.batches else 1
            for start in range(0, len(indices), step):
                chunk = indices[start:start + step]
                boxes, pictures = [], []
                for index in chunk:
                    boxed, box = letterbox(frames[index], *hw)
                    boxes.append(box)
                    pictures.append(boxed)
                outputs = self._infer(self._prepare(pictures))
                for row, index in enumerate(chunk):
                    results[index] = decode_yolo_output(outputs[row], boxes[row], frames[index].shape,
                                                        self.config.classes, self.config.confidence, self.config.iou)
        return results  # type: ignore[return-value]

    def _probe_reshape(self, frame_shape: tuple[int, ...], imgsz: int | None) -> None:
        """A static OpenVINO model may still take other shapes (a fully
        convolutional graph) or not (Ultralytics bakes the anchor grid into a
        ``dynamic=False`` export): try once, remember the answer."""
        hw = rect_input_hw(frame_shape, imgsz or max(self.input_hw), self.stride)
        try:
            model = self._ov_model.clone()
            model.reshape({model.inputs[0].any_name: [2, 3, hw[0], hw[1]]})
            self.reshapable = True
        except RuntimeError:
            self.reshapable = False
            log.warning(
                "%s has a fixed input shape %dx%d: every frame is letterboxed to it, one frame per call; "
                "`edge-agent models export %s --format openvino` makes a model that runs each camera at its "
                "own size and batches cameras", self.model_path.name, *self.input_hw, self.model_path.name)


def _stack_images(pictures: list[np.ndarray]) -> np.ndarray:
    return pictures[0][None] if len(pictures) == 1 else np.stack(pictures)


def _stack_blobs(pictures: list[np.ndarray]) -> np.ndarray:
    return cv2.dnn.blobFromImages(pictures, 1 / 255.0, swapRB=True)


def _read_openvino_metadata(folder: Path) -> dict[str, str]:
    meta = folder / "metadata.yaml"
    if not meta.exists():
        return {}
    import yaml

    data = yaml.safe_load(meta.read_text()) or {}
    return {key: str(value) for key, value in data.items()}


class UltralyticsDetector:
    """Any model Ultralytics can load; imports torch."""

    backend = "ultralytics"

    def __init__(self, model_path: Path, config: DetectorConfig) -> None:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics import YOLO

        self.config = config
        self.model = YOLO(str(model_path), task="detect")

    def detect(self, frames: Sequence[np.ndarray], imgsz: int | None = None) -> list[sv.Detections]:
        results = self.model.predict(
            list(frames),
            imgsz=imgsz or self.config.imgsz,
            conf=self.config.confidence,
            iou=self.config.iou,
            classes=self.config.classes,
            verbose=False,
        )
        return [sv.Detections.from_ultralytics(result) for result in results]


def choose_backend(model_path: Path, requested: str) -> str:
    if requested != "auto":
        return requested
    is_openvino_dir = model_path.is_dir() and any(model_path.glob("*.xml"))
    if model_path.suffix == ".onnx" or is_openvino_dir:
        try:
            import openvino  # noqa: F401

            return "openvino"
        except ImportError:
            if is_openvino_dir:
                raise DetectorError(f"{model_path} is an OpenVINO model but openvino is not installed") from None
            return "onnxruntime"
    return "ultralytics"


def load_detector(model_path: Path, config: DetectorConfig) -> Detector:
    if not model_path.exists():
        raise DetectorError(f"model file {model_path} does not exist")
    backend = choose_backend(model_path, config.backend)
    log.info("detector: %s on %s", model_path.name, backend)
    if backend == "ultralytics":
        return UltralyticsDetector(model_path, config)
    return LeanDetector(model_path, config, backend)
