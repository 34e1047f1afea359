"""Simulated sensor nodes: the firmware in firmware_configs/ re-done in Python.

They connect like ESPHome does (MQTT 3.1.1, client id and username = node id,
retained ``online`` birth and ``offline`` last will), run the same little state
machines as the YAML lambdas and publish the same JSON (same keys, same order,
compact, as ArduinoJson writes it). Used by the tests and by
``edge-agent sensors simulate`` to check a store's registry before flashing.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion


def _json(fields: dict[str, Any]) -> str:
    """Compact JSON in insertion order; whole floats without '.0' like ArduinoJson."""
    def number(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    return json.dumps({key: number(value) for key, value in fields.items()}, separators=(",", ":"))


def _roundf(value: float) -> float:
    """C's roundf: halves away from zero (Python's round() goes to even)."""
    return math.copysign(math.floor(abs(value) + 0.5), value)


class SimulatedNode:
    kind = ""

    def __init__(self, node_id: str, port: int, host: str = "127.0.0.1", topic_root: str = "sensors",
                 password: str | None = None) -> None:
        self.node_id = node_id
        self.base = f"{topic_root}/{node_id}"
        self.boot = random.getrandbits(32) & 0x7FFFFFFF  # on_boot: random_uint32() & 0x7FFFFFFF
        self.seq = 0
        self.offline = False  # True: publishes are lost (Wi-Fi down), counters still move
        self._connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node_id,
                                  protocol=MQTTProtocolVersion.MQTTv311, clean_session=False)
        self.client.username_pw_set(node_id, password)
        self.client.will_set(f"{self.base}/status", "offline", qos=0, retain=True)
        self.client.on_connect = self._on_connect
        self.host, self.port = host, port

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.publish(f"{self.base}/status", "online", qos=0, retain=True)
        self._connected.set()

    def connect(self, timeout: float = 10.0) -> SimulatedNode:
        self.client.connect(self.host, self.port, keepalive=15)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            raise TimeoutError(f"{self.node_id}: no CONNACK from {self.host}:{self.port}")
        return self

    def close(self) -> None:
        """A clean shutdown: ESPHome's shutdown_message, then disconnect."""
        self.client.publish(f"{self.base}/status", "offline", qos=0, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()

    def crash(self) -> None:
        """Power cut: the socket drops without DISCONNECT; the broker sends the last will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def reboot(self) -> None:
        """Counters restart and a new boot id is drawn (the connection is kept here)."""
        self.boot = random.getrandbits(32) & 0x7FFFFFFF
        self.seq = 0
        self._reset()

    def _reset(self) -> None:
        pass

    def publish(self, leaf: str, payload: str, qos: int = 0) -> None:
        if self.offline:
            return
        info = self.client.publish(f"{self.base}/{leaf}", payload, qos=qos)
        if qos:
            info.wait_for_publish(5)

    def event(self, fields: dict[str, Any]) -> str:
        """Build and publish an event exactly like the firmware's publish_json lambdas."""
        self.seq += 1
        payload = _json({**fields, "boot": self.boot, "seq": self.seq})
        self.publish("event", payload, qos=1)
        return payload

    def diag(self, up: int | None = 60, rssi: int | None = -61) -> str:
        fields: dict[str, Any] = {"boot": self.boot, "seq": self.seq}
        if up is not None:
            fields["up"] = up
        if rssi is not None:
            fields["rssi"] = rssi
        payload = _json(fields)
        self.publish("diag", payload)
        return payload

    def battery(self, volts: float) -> str:
        payload = _json({"battery_v": _roundf(volts * 100) / 100, "boot": self.boot})
        self.publish("diag", payload)
        return payload


class DoorBeamNode(SimulatedNode):
    """packages/door_beam.yaml: beam A street side, B shop side."""

    kind = "door_beam"

    def __init__(self, *args: Any, crossing_window_ms: int = 1500, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.window_ms = crossing_window_ms
        self.in_total = 0
        self.out_total = 0
        self._reset()

    def _reset(self) -> None:
        self.in_total = self.out_total = 0
        self.first_beam, self.first_ms, self.armed = 0, 0, True
        self.beams = {"a": False, "b": False}

    def _millis(self) -> int:
        return int(time.monotonic() * 1000)

    def beam(self, name: str, broken: bool) -> str | None:
        """A debounced beam changes state; returns the event published, if any."""
        if self.beams[name] == broken:
            return None
        self.beams[name] = broken
        if not broken:
            if not self.beams["a"] and not self.beams["b"]:
                self.armed = True
            return None
        now = self._millis()
        if not self.armed:
            return None
        mine, other = (1, 2) if name == "a" else (2, 1)
        if self.first_beam == other and now - self.first_ms <= self.window_ms:
            self.first_beam, self.armed = 0, False
            if name == "b":
                self.in_total += 1
                return self._crossing("in")
            self.out_total += 1
            return self._crossing("out")
        self.first_beam, self.first_ms = mine, now
        return None

    def _crossing(self, direction: str) -> str:
        return self.event({"type": "crossing", "direction": direction, "in_total": self.in_total,
                           "out_total": self.out_total})

    def walk(self, direction: str) -> str | None:
        """A person walks through: the first beam breaks, then the second, then both clear."""
        first, second = ("a", "b") if direction == "in" else ("b", "a")
        self.beam(first, True)
        payload = self.beam(second, True)
        self.beam(first, False)
        self.beam(second, False)
        return payload

    def state(self) -> str:
        payload = _json({"in_total": self.in_total, "out_total": self.out_total, "a_broken": self.beams["a"],
                         "b_broken": self.beams["b"], "boot": self.boot, "seq": self.seq})
        self.publish("state", payload)
        return payload


class PirNode(SimulatedNode):
    """packages/pir.yaml."""

    kind = "pir"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.motion = False

    def set_motion(self, on: bool) -> str | None:
        if on == self.motion:
            return None
        self.motion = on
        return self.event({"type": "motion", "state": on})

    def state(self) -> str:
        payload = _json({"motion": self.motion, "boot": self.boot, "seq": self.seq})
        self.publish("state", payload)
        return payload


class ShelfScaleNode(SimulatedNode):
    """packages/shelf_scale.yaml: filtered readings in, settled changes out."""

    kind = "shelf_scale"

    def __init__(self, *args: Any, pickup_threshold_g: float = 40, item_weight_g: float = 100,
                 noise_g: float = 8, settle_samples: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threshold, self.item_weight = pickup_threshold_g, item_weight_g
        self.noise, self.settle = noise_g, settle_samples
        self._reset()

    def _reset(self) -> None:
        self.settled = math.nan
        self.last = math.nan
        self.stable = 0

    def reading(self, grams: float) -> str | None:
        """One filtered weight (the on_value lambda); returns the event published, if any."""
        if math.isnan(self.settled):
            self.settled = self.last = grams
            return None
        self.stable = self.stable + 1 if abs(grams - self.last) <= self.noise else 0
        self.last = grams
        if self.stable < self.settle:
            return None
        delta = grams - self.settled
        self.settled = grams
        if abs(delta) < self.threshold:
            return None
        items = int(_roundf(abs(delta) / self.item_weight))
        return self.event({"type": "pick_up" if delta < 0 else "put_back", "delta_g": _roundf(delta * 10) / 10,
                           "weight_g": _roundf(self.settled * 10) / 10, "items": max(1, items)})

    def place(self, grams: float, samples: int = 6) -> str | None:
        """The shelf settles at ``grams``: feed steady readings until it is stable."""
        published = None
        for _ in range(samples):
            published = self.reading(grams) or published
        return published

    def state(self) -> str:
        payload = _json({"weight_g": _roundf(self.settled * 10) / 10, "boot": self.boot, "seq": self.seq})
        self.publish("state", payload)
        return payload


NODE_CLASSES = {cls.kind: cls for cls in (DoorBeamNode, PirNode, ShelfScaleNode)}
