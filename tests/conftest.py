"""Shared fixtures: real files from ../shared, a real mosquitto per test."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.mosquitto import Mosquitto

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGE_AGENT_SHARED_DIR", REPO.parent / "shared"))
SHARED_FILES = {
    "yolov8n_fp32.onnx": SHARED / "models" / "yolov8n_fp32.onnx",
    "yolov8n_int8.onnx": SHARED / "models" / "yolov8n_int8.onnx",
    "crosswalk_640x360.mp4": SHARED / "data" / "crosswalk_640x360.mp4",
    "vtest.avi": SHARED / "data" / "eval" / "PETS09-S2L1" / "vtest.avi",
}


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    missing = [str(p) for p in SHARED_FILES.values() if not p.exists()]
    if missing:
        pytest.fail(f"test data missing (set EDGE_AGENT_SHARED_DIR): {missing}")
    return SHARED


@pytest.fixture(scope="session")
def assets_dir(tmp_path_factory, shared_dir) -> Path:
    """An assets directory made of links to ../shared: nothing is ever downloaded."""
    directory = tmp_path_factory.mktemp("assets")
    for name, source in SHARED_FILES.items():
        (directory / name).symlink_to(source)
    return directory


@pytest.fixture(scope="session")
def model_path(assets_dir) -> Path:
    return assets_dir / "yolov8n_fp32.onnx"


@pytest.fixture(scope="session")
def clip(assets_dir) -> Path:
    return assets_dir / "crosswalk_640x360.mp4"


@pytest.fixture
def broker(tmp_path):
    with Mosquitto(workdir=tmp_path / "broker") as server:
        yield server


class Subscriber:
    """A real MQTT client collecting what arrives on a topic filter."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, dict | str, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a, **k: self._subscribed.set()
        self.client.on_connect = lambda c, *a, **k: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, client, userdata, message) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            body = message.payload.decode(errors="replace")
        with self._lock:
            self.messages.append((message.topic, body, bool(message.retain)))

    def payloads(self, suffix: str) -> list[dict]:
        with self._lock:
            return [body for topic, body, _ in self.messages if topic.endswith(suffix)]

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def subscribe():
    made: list[Subscriber] = []

    def factory(port: int, topic: str = "smartstore/#") -> Subscriber:
        sub = Subscriber(port, topic)
        made.append(sub)
        return sub

    yield factory
    for sub in made:
        sub.close()
