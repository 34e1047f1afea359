"""Sensor ingestion: the store's MQTT broker → validated messages → SQLite.

paho's network thread only checks messages (topic, registry, rate, size,
payload model) and queues the good ones; one writer thread commits them in
batches and only then acknowledges them to the broker (``manual_ack``), so a
crash between receipt and commit makes the broker deliver again, and the
``(node, boot, seq)`` key stores a re-delivered event once. Bad messages are
counted per node and logged (at most one line per node and problem every 30 s),
never raised: a broken or hostile node cannot stop the agent. Memory is bounded:
a fixed-size queue, a per-node token bucket, a capped table of unknown nodes.

Door beams report running totals with every message, so a crossing whose event
was lost (Wi-Fi down) is recovered from the next message's totals.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import sqlite_utils
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel

from ..storage import Store, iso_utc, minute_of
from . import fusion  # registers the "sensors" rollup section
from .config import ResolvedNode, SensorsConfig, resolve_nodes
from .messages import (
    BAD_TOPIC,
    TOO_LARGE,
    Crossing,
    Diag,
    DoorState,
    MessageError,
    Motion,
    PirState,
    ShelfChange,
    ShelfState,
    parse_message,
    parse_topic,
)

log = logging.getLogger(__name__)

NODE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
MAX_UNKNOWN_NODES = 50  # distinct unknown ids remembered; the rest are counted as "(other)"
MAX_RECOVER = 100  # crossings recovered from one jump in totals; more is a glitch, not lost events
LOG_EVERY_SECONDS = 30.0
MAX_PACKET_BYTES = 65536  # asked of the broker (MQTT 5): larger packets never reach us
BATCH = 500


class RateMeter:
    """Messages in the last minute, in six 10-second slots."""

    def __init__(self) -> None:
        self.slots = [0] * 6
        self.slot_start = [0.0] * 6

    def add(self, now: float) -> None:
        index = int(now // 10) % 6
        if self.slot_start[index] != now // 10:
            self.slot_start[index] = now // 10
            self.slots[index] = 0
        self.slots[index] += 1

    def per_minute(self, now: float) -> int:
        current = now // 10
        return sum(n for n, start in zip(self.slots, self.slot_start) if current - start < 6)


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class NodeHealth:
    node: ResolvedNode
    bucket: TokenBucket
    status: str | None = None  # "online"/"offline" as the node last said (retained birth/will)
    last_seen: float | None = None
    messages: int = 0
    rate: RateMeter = field(default_factory=RateMeter)
    boot: int | None = None
    reboots: int = 0
    uptime_s: int | None = None
    rssi: int | None = None
    battery_v: float | None = None
    reading: dict[str, Any] = field(default_factory=dict)
    events: int = 0  # events stored
    recovered: int = 0  # crossings recovered from totals
    missed_events: int = 0  # seq gaps not filled (events the node could not deliver)
    duplicates: int = 0
    errors: Counter = field(default_factory=Counter)
    last_error: dict | None = None
    blocked_since: float | None = None


@dataclass
class _Seq:
    """Per node, per boot: what has been stored, to find duplicates, gaps and lost crossings."""

    boot: int | None = None
    max_seq: int = 0
    known: bool = False  # False until a message of this boot was stored: no gap can be judged yet
    totals: tuple[int, int] | None = None  # door: (in, out) already accounted for


@dataclass(slots=True)
class _Item:
    ts: float
    node_id: str
    leaf: str
    message: BaseModel
    payload: str
    mid: int
    qos: int
    generation: int


class SensorIngestion:
    def __init__(self, config: SensorsConfig, store: Store, cameras: Sequence[Any] = ()) -> None:
        self.config = config
        self.store = store
        self.nodes = resolve_nodes(config, cameras)
        self.root = config.broker.topic_root
        self.nodes_health = {
            node_id: NodeHealth(node, TokenBucket(config.max_messages_per_second, config.burst))
            for node_id, node in self.nodes.items()
        }
        self.unknown_nodes: Counter = Counter()
        self.other_errors: Counter = Counter()
        self.connected = False
        self.connects = 0
        self.stored_events = 0
        self.stored_readings = 0
        self.warnings: list[dict] = []
        self.last_error: str | None = None
        self._seq: dict[str, _Seq] = {}
        self._uncommitted: Counter = Counter()  # (node id, counter) → n, credited after COMMIT
        self._queue: deque[_Item] = deque()
        self._queue_lock = threading.Lock()
        self._health_lock = threading.Lock()
        self._log_gate: dict[tuple[str, str], list[float]] = {}
        self._generation = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="sensors-writer", daemon=True)
        self._sensor_only = any(node.source == config.source_id and node.enabled for node in self.nodes.values())
        self._ensured_minute: str | None = None
        self.client = self._make_client()

    # -- lifecycle --------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        broker = self.config.broker
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=broker.client_id,
                             protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
        if broker.username:
            client.username_pw_set(broker.username, broker.password)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        self._save_registry()
        self._load_sequences()
        broker = self.config.broker
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = broker.session_expiry_seconds
        properties.MaximumPacketSize = MAX_PACKET_BYTES
        self.client.connect_async(broker.host, broker.port, keepalive=broker.keepalive, clean_start=False,
                                  properties=properties)
        self.client.loop_start()
        self._writer.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Commit (and acknowledge) what was received, then disconnect."""
        self._stop.set()
        self._wake.set()
        if self._writer.is_alive():
            self._writer.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def lines_by_source(self) -> dict[str, list[str]]:
        """Doors counted by beams alone appear as lines of the sensors source."""
        doors = sorted({n.door for n in self.nodes.values() if n.kind == "door_beam" and n.camera is None and n.enabled})
        return {self.config.source_id: doors} if doors else {}

    def _save_registry(self) -> None:
        now = time.time()
        with self.store.transaction() as db:
            db.execute("DELETE FROM sensor_nodes")
            db.conn.executemany(
                "INSERT INTO sensor_nodes (node_id, kind, source, door_id, zone_id, camera_id, line_id, product, "
                "enabled, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(n.id, n.kind, n.source, n.door, n.zone, n.camera, n.line, n.product, int(n.enabled), now)
                 for n in self.nodes.values()],
            )
            shelf = self.config.shelf
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       [fusion.META_SHELF_MATCH,
                        json.dumps({"before": shelf.match_before_seconds, "after": shelf.match_after_seconds})])

    def _load_sequences(self) -> None:
        """Pick up each node's last boot, seq and door totals from the database."""
        with self.store.lock:
            for node_id in self.nodes:
                row = self.store.db.execute(
                    "SELECT boot FROM sensor_events WHERE node_id = ? ORDER BY id DESC LIMIT 1", [node_id]
                ).fetchone()
                if row is None:
                    continue
                boot = row[0]
                max_seq = self.store.db.execute(
                    "SELECT MAX(seq) FROM sensor_events WHERE node_id = ? AND boot = ?", [node_id, boot]
                ).fetchone()[0] or 0
                totals = self.store.db.execute(
                    "SELECT in_total, out_total FROM sensor_events WHERE node_id = ? AND boot = ? AND type = 'crossing' "
                    "ORDER BY id DESC LIMIT 1", [node_id, boot]
                ).fetchone()
                self._seq[node_id] = _Seq(boot=boot, max_seq=max_seq, known=True,
                                          totals=tuple(totals) if totals else None)

    # -- paho callbacks (network thread) ----------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"the store broker refused the connection: {reason_code}"
            log.warning("sensors: %s", self.last_error)
            return
        self._generation += 1
        self.connected = True
        self.connects += 1
        self.last_error = None
        client.subscribe(f"{self.root}/#", qos=1)
        log.info("sensors: connected to %s:%s", self.config.broker.host, self.config.broker.port)

    def _on_connect_fail(self, client, userdata) -> None:
        error = f"cannot reach the store broker {self.config.broker.host}:{self.config.broker.port}; retrying"
        if error != self.last_error:
            log.warning("sensors: %s", error)
        self.last_error = error

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected and not self._stop.is_set():
            log.warning("sensors: disconnected from the store broker: %s", reason_code)
        self.connected = False

    def _on_message(self, client, userdata, message) -> None:
        queued = False
        try:
            queued = self._accept(message)
        except Exception as exc:  # never let one message take the subscriber down
            self.other_errors["internal"] += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("sensors: failed to handle a message on %s", message.topic[:200])
        finally:
            if not queued:
                client.ack(message.mid, message.qos)

    def _accept(self, message) -> bool:
        """Check one message; True if it was queued for the writer (acknowledged after commit)."""
        now = time.time()
        topic = parse_topic(message.topic, self.root)
        if topic is None or not NODE_ID.match(topic.node_id):
            self._count_unknown(topic.node_id if topic else "", message.topic)
            return False
        health = self.nodes_health.get(topic.node_id)
        if health is None:
            self._count_unknown(topic.node_id, message.topic)
            return False
        node = health.node
        if not node.enabled:
            self._error(health, "disabled", "message from a node marked enabled: false", now)
            return False
        if not health.bucket.take():
            self._error(health, "rate_limited",
                        f"more than {self.config.max_messages_per_second:g} messages/s (burst {self.config.burst})", now)
            return False
        payload = message.payload
        if len(payload) > self.config.max_payload_bytes:
            self._error(health, TOO_LARGE, f"{len(payload)} bytes (limit {self.config.max_payload_bytes})", now)
            return False
        if message.retain and not payload:
            return False  # a retained message being cleared
        try:
            parsed = parse_message(node.kind, topic.leaf, payload)
        except MessageError as exc:
            self._error(health, exc.category, f"{topic.leaf}: {exc.detail}", now)
            return False
        with self._health_lock:
            if not message.retain:  # a retained status is old news, not a sign of life
                health.last_seen = now
                health.messages += 1
                health.rate.add(now)
            if topic.leaf == "status":
                health.status = parsed
                return False
        with self._queue_lock:
            if len(self._queue) >= self.config.queue_size:
                overflow = True
            else:
                overflow = False
                self._queue.append(_Item(time.time(), node.id, topic.leaf, parsed,
                                         payload.decode("utf-8", "replace"), message.mid, message.qos,
                                         self._generation))
        if overflow:
            self._error(health, "overflow", f"the write queue is full ({self.config.queue_size} messages)", now)
            return False
        self._wake.set()
        return True

    def _count_unknown(self, node_id: str, topic: str) -> None:
        with self._health_lock:
            if not node_id or not NODE_ID.match(node_id):
                self.other_errors[BAD_TOPIC] += 1
                key = "(bad topic)"
            else:
                key = node_id if (node_id in self.unknown_nodes or len(self.unknown_nodes) < MAX_UNKNOWN_NODES) \
                    else "(other)"
                self.unknown_nodes[key] += 1
        # One line for all unknown nodes every LOG_EVERY_SECONDS: ids can be endless.
        self._log_limited("(unknown)", "unknown", "sensors: message from an unregistered node on %r "
                          "(add it under sensors.nodes)", topic[:200])

    def _error(self, health: NodeHealth, category: str, detail: str, now: float) -> None:
        with self._health_lock:
            health.errors[category] += 1
            health.last_error = {"at": iso_utc(now), "category": category, "detail": detail[:300]}
        self._log_limited(health.node.id, category, "sensors: node %s: %s (%s)", health.node.id, category, detail[:300])

    def _log_limited(self, key: str, category: str, fmt: str, *args: Any) -> None:
        """One log line per (node, problem) every LOG_EVERY_SECONDS, with the count suppressed."""
        now = time.monotonic()
        with self._health_lock:
            gate = self._log_gate.get((key, category))
            if gate is None:
                if len(self._log_gate) > 4 * (len(self.nodes) + MAX_UNKNOWN_NODES + 2):
                    self._log_gate.clear()
                gate = self._log_gate[(key, category)] = [float("-inf"), 0]
            if now - gate[0] < LOG_EVERY_SECONDS:
                gate[1] += 1
                return
            suppressed, gate[0], gate[1] = gate[1], now, 0
        log.warning(fmt + (" [%d similar messages not logged]" if suppressed else ""),
                    *args, *((suppressed,) if suppressed else ()))

    # -- writer thread --------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            stopping = self._stop.is_set()  # one more pass after stop() drains the queue
            try:
                self._write_pending()
            except Exception as exc:  # a failing write is retried, never fatal
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("sensors: writing to SQLite failed; retrying")
                self._stop.wait(1.0)
            if stopping:
                break

    def _write_pending(self) -> None:
        while True:
            with self._queue_lock:
                taken_at = time.time()
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                more = bool(self._queue)
            self._commit(batch, taken_at, drained=not more)
            if not more:
                return

    def _commit(self, batch: list[_Item], taken_at: float, drained: bool = True) -> None:
        if not batch:
            if (self._sensor_only and self.connected
                    and self.store.bucket_for(self.config.source_id, taken_at) != self._ensured_minute):
                with self.store.transaction() as db:
                    self._ensure_sensor_minute(db, taken_at)
            self._advance_watermark(taken_at)
            return
        try:
            self._uncommitted.clear()
            with self.store.transaction() as db:
                self._ensure_sensor_minute(db, taken_at)
                for item in batch:
                    self._apply(db, item)
            self._credit()
        except Exception:
            # Per-node state may be half-updated: reload it, then store what can be
            # stored one message at a time; a message that still fails is dropped
            # (and counted) so it cannot block the others.
            log.exception("sensors: batch of %d messages failed; retrying one by one", len(batch))
            self._seq.clear()
            self._load_sequences()
            done = []
            for item in batch:
                try:
                    self._uncommitted.clear()
                    with self.store.transaction() as db:
                        self._apply(db, item)
                    self._credit()
                    done.append(item)
                except Exception as exc:
                    self._error(self.nodes_health[item.node_id], "store_error", f"{type(exc).__name__}: {exc}",
                                time.time())
                    self._seq.clear()
                    self._load_sequences()
                    done.append(item)
            batch = done
        if drained:
            self._advance_watermark(taken_at)
        for item in batch:
            if item.qos and item.generation == self._generation:
                self.client.ack(item.mid, item.qos)

    def _credit(self) -> None:
        """Count what the last transaction stored, now that it is committed."""
        with self._health_lock:
            for (node_id, name), n in self._uncommitted.items():
                if node_id is None:
                    setattr(self, name, getattr(self, name) + n)
                else:
                    health = self.nodes_health[node_id]
                    setattr(health, name, getattr(health, name) + n)
        self._uncommitted.clear()

    def _advance_watermark(self, taken_at: float) -> None:
        """Everything received up to ``taken_at`` is committed: sensor-only minutes
        that ended before it can be rolled up."""
        if self._sensor_only:
            with self.store.lock:
                self.store.watermarks[self.config.source_id] = max(
                    taken_at, self.store.watermarks.get(self.config.source_id, 0.0))

    def _ensure_sensor_minute(self, db: sqlite_utils.Database, now: float) -> None:
        """A sensor-only store gets a rollup every minute, zeros included, like a
        camera — while the store broker is reachable (no data is not zero)."""
        if not self._sensor_only or not self.connected:
            return
        minute = self.store.bucket_for(self.config.source_id, now)
        if minute != self._ensured_minute:
            db.execute("INSERT OR IGNORE INTO camera_minutes (camera_id, minute, frames) VALUES (?, ?, 0)",
                       [self.config.source_id, minute])
            self._ensured_minute = minute

    def _bucket(self, db: sqlite_utils.Database, source: str, ts: float) -> str:
        bucket = self.store.bucket_for(source, ts)
        if bucket != minute_of(ts):
            self.store.late_events += 1
        db.execute("INSERT OR IGNORE INTO camera_minutes (camera_id, minute, frames) VALUES (?, ?, 0)",
                   [source, bucket])
        return bucket

    def _apply(self, db: sqlite_utils.Database, item: _Item) -> None:
        health = self.nodes_health[item.node_id]
        node = health.node
        message = item.message
        seq = self._seq.setdefault(node.id, _Seq())
        if seq.boot != message.boot:
            if seq.boot is not None:
                with self._health_lock:
                    health.reboots += 1
                log.info("sensors: node %s restarted (boot %s)", node.id, message.boot)
            self._seq[node.id] = seq = _Seq(boot=message.boot)
        with self._health_lock:
            health.boot = message.boot
        if item.leaf == "diag":
            self._diag(db, item, health, message)
        elif item.leaf == "state":
            self._state(db, item, health, seq, message)
        else:
            self._event(db, item, health, seq, message)
        seq.known = True

    def _readings(self, db: sqlite_utils.Database, item: _Item, values: dict[str, float | None]) -> None:
        rows = [(item.node_id, item.ts, kind, float(value), item.payload)
                for kind, value in values.items() if value is not None]
        if rows:
            db.conn.executemany("INSERT INTO sensor_readings (node_id, ts, kind, value, payload) VALUES (?,?,?,?,?)",
                                rows)
            self._uncommitted[(None, "stored_readings")] += len(rows)

    def _diag(self, db, item: _Item, health: NodeHealth, message: Diag) -> None:
        self._readings(db, item, {"uptime_s": message.up, "rssi": message.rssi, "battery_v": message.battery_v})
        with self._health_lock:
            if message.up is not None:
                health.uptime_s = message.up
            if message.rssi is not None:
                health.rssi = message.rssi
            if message.battery_v is not None:
                health.battery_v = message.battery_v

    def _state(self, db, item: _Item, health: NodeHealth, seq: _Seq, message: BaseModel) -> None:
        if isinstance(message, DoorState):
            self._readings(db, item, {"in_total": message.in_total, "out_total": message.out_total,
                                      "beam_a_broken": message.a_broken, "beam_b_broken": message.b_broken})
            self._door_totals(db, item, health, seq, message, direction=None)
            with self._health_lock:
                health.reading = {"in_total": message.in_total, "out_total": message.out_total,
                                  "a_broken": message.a_broken, "b_broken": message.b_broken}
                if message.a_broken or message.b_broken:
                    health.blocked_since = health.blocked_since or item.ts
                else:
                    health.blocked_since = None
        elif isinstance(message, PirState):
            self._readings(db, item, {"motion": message.motion})
            with self._health_lock:
                health.reading = {"motion": message.motion}
        elif isinstance(message, ShelfState):
            self._readings(db, item, {"weight_g": message.weight_g})
            with self._health_lock:
                health.reading = {"weight_g": message.weight_g}

    def _event(self, db, item: _Item, health: NodeHealth, seq: _Seq, message: BaseModel) -> None:
        if db.execute("SELECT 1 FROM sensor_events WHERE node_id = ? AND boot = ? AND seq = ?",
                      [item.node_id, message.boot, message.seq]).fetchone():
            with self._health_lock:
                health.duplicates += 1
            return
        with self._health_lock:
            if seq.known and message.seq > seq.max_seq + 1:
                health.missed_events += message.seq - seq.max_seq - 1
            elif seq.known and message.seq < seq.max_seq:
                health.missed_events = max(0, health.missed_events - 1)  # late, not lost
        seq.max_seq = max(seq.max_seq, message.seq)
        if isinstance(message, Crossing):
            self._door_totals(db, item, health, seq, message, direction=message.direction)
        elif isinstance(message, Motion):
            self._insert_event(db, item, health, type="motion", motion=int(message.state), seq=message.seq)
        elif isinstance(message, ShelfChange):
            self._insert_event(db, item, health, type=message.type, delta_g=message.delta_g,
                               weight_g=message.weight_g, items=message.items, seq=message.seq)
            with self._health_lock:
                health.reading = {"weight_g": message.weight_g}

    def _door_totals(self, db, item: _Item, health: NodeHealth, seq: _Seq, message: Crossing | DoorState,
                     direction: str | None) -> None:
        """Store crossings so that, per boot, the node's totals are counted exactly once."""
        totals = (message.in_total, message.out_total)
        if seq.totals is None:  # the first totals of this boot we see: they are the baseline
            if direction is not None:
                self._insert_crossing(db, item, health, direction, message, recovered=False)
            seq.totals = totals
            return
        deltas = {"in": totals[0] - seq.totals[0], "out": totals[1] - seq.totals[1]}
        if direction is not None:
            if deltas[direction] >= 1:
                self._insert_crossing(db, item, health, direction, message, recovered=False)
                deltas[direction] -= 1
            else:
                # Already recovered from an earlier message's totals (it arrived late).
                log.debug("sensors: node %s: late crossing seq %s already counted", item.node_id, message.seq)
        # Negative: an older message (e.g. a state sent before the last event); nothing new.
        missing = {d: max(0, n) for d, n in deltas.items()}
        if missing["in"] + missing["out"] > MAX_RECOVER:
            self._error(health, "totals_jump",
                        f"totals jumped by {missing['in'] + missing['out']} crossings; not recovered", item.ts)
        else:
            for lost_direction in ("in", "out"):
                for _ in range(missing[lost_direction]):
                    self._insert_crossing(db, item, health, lost_direction, message, recovered=True)
        seq.totals = (max(seq.totals[0], totals[0]), max(seq.totals[1], totals[1]))

    def _insert_crossing(self, db, item: _Item, health: NodeHealth, direction: str, message, recovered: bool) -> None:
        node = health.node
        if node.swap_direction:
            direction = "out" if direction == "in" else "in"
        bucket = self._insert_event(db, item, health, type="crossing", door_id=node.door, direction=direction,
                                    in_total=message.in_total, out_total=message.out_total,
                                    seq=None if recovered else message.seq, recovered=int(recovered))
        if recovered:
            self._uncommitted[(node.id, "recovered")] += 1
        if node.camera is None:
            # No camera counts this door: the beam's crossings are the door's counts.
            db.execute(
                "INSERT INTO events (ts, bucket, camera_id, line_id, direction, track_id, kind) "
                "VALUES (?, ?, ?, ?, ?, ?, 'visitor')",
                [iso_utc(item.ts), bucket, node.source, node.door, direction,
                 0 if recovered else message.seq],
            )

    def _insert_event(self, db, item: _Item, health: NodeHealth, **columns: Any) -> str:
        node = health.node
        bucket = self._bucket(db, node.source, item.ts)
        row = {"node_id": node.id, "ts": item.ts, "bucket": bucket, "source": node.source, "zone_id": node.zone,
               "camera_id": node.camera, "boot": item.message.boot, "payload": item.payload, **columns}
        names = ", ".join(row)
        db.execute(f"INSERT INTO sensor_events ({names}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
        self._uncommitted[(None, "stored_events")] += 1
        self._uncommitted[(node.id, "events")] += 1
        return bucket

    # -- health -------------------------------------------------------------------
    def check(self, now: float | None = None) -> list[dict]:
        """Recompute warnings: offline nodes, blocked beams, doors where camera and beam disagree."""
        now = time.time() if now is None else now
        warnings: list[dict] = []
        with self._health_lock:
            for health in self.nodes_health.values():
                node = health.node
                if not node.enabled:
                    continue
                if health.status == "offline":
                    warnings.append({"code": "node_offline", "node": node.id,
                                     "message": f"sensor node {node.id!r} reported offline (its last will)"})
                elif health.last_seen is None or now - health.last_seen > self.config.offline_after_seconds:
                    since = "never" if health.last_seen is None else f"{now - health.last_seen:.0f} s ago"
                    warnings.append({"code": "node_silent", "node": node.id,
                                     "message": f"sensor node {node.id!r} not heard from (last message {since})"})
                if health.blocked_since is not None and now - health.blocked_since > self.config.blocked_beam_seconds:
                    warnings.append({"code": "beam_blocked", "node": node.id, "door": node.door,
                                     "message": f"door {node.door!r}: a beam of {node.id!r} has been broken for "
                                                f"{now - health.blocked_since:.0f} s; something blocks it or it is misaligned"})
        door = self.config.door
        with self.store.lock:
            warnings += fusion.door_disagreements(self.store.db, now, door.window_minutes, door.min_crossings,
                                                  door.warn_below)
        for warning in warnings:
            if warning["message"] not in {w["message"] for w in self.warnings}:
                log.warning("sensors: %s", warning["message"])
        self.warnings = warnings
        return warnings

    def health(self) -> dict:
        now = time.time()
        nodes = []
        with self._health_lock:
            for health in self.nodes_health.values():
                node = health.node
                location = {key: value for key, value in (("door", node.door), ("zone", node.zone),
                            ("camera", node.camera), ("line", node.line), ("product", node.product)) if value}
                online = (node.enabled and health.status != "offline" and health.last_seen is not None
                          and now - health.last_seen <= self.config.offline_after_seconds)
                nodes.append({
                    "id": node.id,
                    "kind": node.kind,
                    "enabled": node.enabled,
                    "location": location,
                    "source": node.source,
                    "online": online,
                    "status": health.status,
                    "last_seen": iso_utc(health.last_seen) if health.last_seen else None,
                    "last_seen_age_s": round(now - health.last_seen, 1) if health.last_seen else None,
                    "messages": health.messages,
                    "messages_per_min": health.rate.per_minute(now),
                    "events": health.events,
                    "recovered": health.recovered,
                    "missed_events": health.missed_events,
                    "duplicates": health.duplicates,
                    "boot": health.boot,
                    "reboots": health.reboots,
                    "uptime_s": health.uptime_s,
                    "rssi": health.rssi,
                    "battery_v": health.battery_v,
                    "reading": dict(health.reading),
                    "errors": dict(health.errors),
                    "last_error": health.last_error,
                })
            unknown = dict(self.unknown_nodes)
            other = dict(self.other_errors)
        return {
            "connected": self.connected,
            "broker": f"{self.config.broker.host}:{self.config.broker.port}",
            "queue": len(self._queue),
            "stored_events": self.stored_events,
            "stored_readings": self.stored_readings,
            "nodes": nodes,
            "unknown_nodes": unknown,
            "errors": other,
            "warnings": list(self.warnings),
            "last_error": self.last_error,
        }
