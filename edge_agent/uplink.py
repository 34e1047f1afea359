"""MQTT uplink (paho-mqtt): drains the SQLite outbox to the broker, answers HQ's commands.

A message is marked sent only when its PUBACK arrives with a success reason
code (MQTT 5 reports refusals, e.g. ACL denials, only there). Anything not
acknowledged stays in the outbox and is published again, with the same ``id``,
after the next connect; headquarters de-duplicates on that id.

paho's reconnect loop doubles its wait with no randomness, so a fleet that lost
the same broker would reconnect in lockstep. Before each wait we set paho's
delay (``reconnect_delay_set``, which restarts its doubling) to our own next
step: random in [half, full] of an exponentially growing step.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import __version__, commands
from .config import MqttConfig
from .rollup import Identity
from .storage import Store, iso_utc

log = logging.getLogger(__name__)

STATUS_SCHEMA = "smartstore.status/1"
EARLY_ACK_TTL = 1.0  # seconds an ack may wait for publish() to return its mid
REFUSED_RETRY_SECONDS = 60.0  # refused messages (e.g. ACL) are tried again this often
FILE_RECHECK_SECONDS = 30.0  # a missing certificate / password file is looked for again this often
COMMAND_QUEUE = 1000


class Backoff:
    """Exponential steps from ``minimum`` to ``maximum``; each wait drawn from
    [step/2, step] ("equal jitter"): never zero, never in lockstep."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        self.minimum, self.maximum = minimum, maximum
        self.attempt = 0
        self.rng = rng or random.Random()

    def next(self) -> float:
        step = min(self.maximum, self.minimum * (2 ** self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return self.rng.uniform(step / 2, step)

    def reset(self) -> None:
        self.attempt = 0


class _TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class _Client(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed
    (paho's on_connect_fail does not say)."""

    last_connect_error: BaseException | None = None

    def reconnect(self):
        try:
            return super().reconnect()
        except Exception as exc:
            self.last_connect_error = exc
            raise


@dataclass
class UplinkStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    published: int = 0
    acked: int = 0
    refused: int = 0
    commands: int = 0
    commands_rejected: int = 0
    commands_dropped: int = 0
    last_ack_at: float | None = None
    last_error: str | None = None
    next_attempt_in: float | None = None


class Uplink:
    def __init__(self, config: MqttConfig, store: Store, identity: Identity) -> None:
        self.config = config
        self.store = store
        self.identity = identity
        self.stats = UplinkStats()
        self.started_at = time.time()
        self.backoff = Backoff(config.reconnect_min_seconds, config.reconnect_max_seconds)
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # mid → outbox seq
        self._early_acks: dict[int, tuple[bool, float]] = {}  # mid → (ok, when)
        self._acked_seqs: list[int] = []
        self._next_seq = 0  # drain cursor; reset on every connect
        self._refused_since_rewind = 0
        self._connack_refused = False
        self._last_rewind = time.monotonic()
        self._commands: queue.Queue[tuple[str, bytes]] = queue.Queue(COMMAND_QUEUE)
        self._error_results = _TokenBucket(rate=1.0, burst=20)
        self._device_log: list[tuple[str, str, dict]] = []  # written by the drain thread
        # HQ commands this device answers; the runtime adds its own (reload-config).
        self.handlers: dict[str, Callable[[commands.Command], dict]] = {
            "ping": self._ping,
            "resend": self._resend,
        }
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain_loop, name="uplink", daemon=True)
        self._files_checked = 0.0
        self.client: mqtt.Client | None = None if config.missing_files() else self._make_client()
        self._started_network = False

    # -- client setup -----------------------------------------------------------
    @property
    def _v5(self) -> bool:
        return self.config.protocol == "5"

    def _make_client(self) -> mqtt.Client:
        config = self.config
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edge-agent-{self.identity.org}-{self.identity.store}-{self.identity.device}",
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            **({} if self._v5 else {"clean_session": True}),
        )
        client.max_inflight_messages_set(config.max_inflight)
        client.will_set(self.identity.topic("status"), self._status_payload("offline", "connection lost"),
                        qos=1, retain=True)
        if config.username:
            client.username_pw_set(config.username, config.secret())
        if config.tls.enabled:
            client.tls_set(
                ca_certs=str(config.tls.ca_file) if config.tls.ca_file else None,
                certfile=str(config.tls.cert_file) if config.tls.cert_file else None,
                keyfile=str(config.tls.key_file) if config.tls.key_file else None,
                cert_reqs=ssl.CERT_NONE if config.tls.insecure_skip_verify else ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(config.tls.insecure_skip_verify)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        return client

    def _arm_reconnect(self, client: mqtt.Client) -> None:
        """Set the wait before paho's next attempt and a fresh last will (its ts and seq are now's)."""
        delay = self.backoff.next()
        self.stats.next_attempt_in = round(delay, 2)
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # also restarts paho's doubling
        client.will_set(self.identity.topic("status"), self._status_payload("offline", "connection lost"),
                        qos=1, retain=True)

    def _status_payload(self, state: str, reason: str | None = None) -> str:
        now = time.time()
        body = {
            "schema": STATUS_SCHEMA,
            "id": f"{self.identity.org}/{self.identity.store}/{self.identity.device}/status/{iso_utc(now)}/{state}",
            "org": self.identity.org,
            "store": self.identity.store,
            "device": self.identity.device,
            # Status is not in the outbox: its seq is the newest outbox seq when it was
            # made (a high-water mark HQ can compare with what it has received).
            "seq": self.store.last_seq(),
            "state": state,
            "version": __version__,
            "ts": iso_utc(now),
            "started_at": iso_utc(self.started_at),
            "uptime_s": round(now - self.started_at, 1),
        }
        if reason:
            body["reason"] = reason
        return json.dumps(body, separators=(",", ":"))

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self._start_network()
        self._thread.start()

    def _start_network(self) -> None:
        """Connect (in paho's thread) once the files the config names exist; until then
        the agent keeps counting and health says which file is missing."""
        self._files_checked = time.monotonic()
        problems = self.config.missing_files()
        if problems:
            self.stats.last_error = "; ".join(problems)
            log.error("MQTT uplink waiting: %s", self.stats.last_error)
            return
        if self.client is None:
            self.client = self._make_client()
        properties = None
        kwargs = {}
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 0
            kwargs = {"clean_start": True, "properties": properties}
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive, **kwargs)
        self.client.loop_start()
        self._started_network = True

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` (a clean stop sends no last will) and disconnect."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.client is not None and self.stats.connected:
            info = self.client.publish(self.identity.topic("status"), self._status_payload("offline", "stopped"),
                                       qos=1, retain=True)
            info.wait_for_publish(timeout)
        self._commit_acks()
        self._write_device_log()
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    # -- paho callbacks (network thread: no blocking, no paho calls under our lock) ----
    # paho keeps unacknowledged QoS 1 messages and re-sends them itself after a
    # reconnect (same mid), so the in-flight map survives disconnects; only
    # messages paho no longer holds (refused, or lost with a restart) are
    # published again from the outbox.
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.stats.connect_failures += 1
            self._connack_refused = True
            self.stats.last_error = f"broker refused the connection: {reason_code}"
            log.warning("MQTT: %s", self.stats.last_error)
            self._device_log.append(("warning", "connection refused", {"reason": str(reason_code)}))
            return
        with self._lock:
            self._next_seq = 0  # sweep the outbox again for anything not in flight
        self.backoff.reset()
        self.stats.next_attempt_in = None
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.last_error = None
        log.info("MQTT connected to %s:%s", self.config.host, self.config.port)
        client.publish(self.identity.topic("status"), self._status_payload("online"), qos=1, retain=True)
        client.subscribe(self.identity.topic("cmd/+"), qos=1)
        self._device_log.append(("info", "connected", {"broker": f"{self.config.host}:{self.config.port}"}))
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self.stats.connected and not self._stop.is_set() and not self._connack_refused:
            # Closed before the broker answered (e.g. our TLS client certificate refused).
            self.stats.connect_failures += 1
            self.stats.last_error = f"connection closed before the broker accepted it: {reason_code}"
        self._connack_refused = False
        if self.stats.connected:
            self.stats.disconnects += 1
            if not self._stop.is_set():
                log.warning("MQTT disconnected: %s", reason_code)
                self._device_log.append(("warning", "disconnected", {"reason": str(reason_code)}))
        self.stats.connected = False
        if not self._stop.is_set():
            self._arm_reconnect(client)

    def _on_connect_fail(self, client, userdata) -> None:
        self.stats.connect_failures += 1
        error = client.last_connect_error
        self.stats.last_error = f"cannot connect to {self.config.host}:{self.config.port}: {error}"
        log.warning("MQTT: %s", self.stats.last_error)
        self._arm_reconnect(client)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        ok = not reason_code.is_failure
        with self._lock:
            seq = self._inflight.pop(mid, None)
            if seq is None:
                # The ack beat publish() returning its mid (paho issue #482), or it is
                # for a status message. Kept briefly for the publisher to claim.
                self._early_acks[mid] = (ok, time.monotonic())
                return
            self._resolve(seq, ok, reason_code)
        self._wake.set()

    def _on_message(self, client, userdata, message) -> None:
        prefix = self.identity.topic("cmd/")
        if not message.topic.startswith(prefix):
            return
        try:
            self._commands.put_nowait((message.topic[len(prefix):], bytes(message.payload)))
        except queue.Full:
            self.stats.commands_dropped += 1
        self._wake.set()

    def _resolve(self, seq: int, ok: bool, reason_code=None) -> None:
        if ok:
            self._acked_seqs.append(seq)
            self.stats.acked += 1
            self.stats.last_ack_at = time.time()
        else:
            # Refused (e.g. ACL): stays unsent; published again after the next connect
            # or after REFUSED_RETRY_SECONDS.
            self.stats.refused += 1
            self._refused_since_rewind += 1
            self.stats.last_error = f"broker refused message seq {seq}: {reason_code}"
            log.error("MQTT: %s", self.stats.last_error)

    # -- drain ----------------------------------------------------------------------
    def rewind(self) -> None:
        """Sweep the outbox from the start again (after a re-send request or a refusal)."""
        with self._lock:
            self._next_seq = 0
            self._refused_since_rewind = 0
            self._last_rewind = time.monotonic()
        self._wake.set()

    def _commit_acks(self) -> None:
        with self._lock:
            seqs, self._acked_seqs = self._acked_seqs, []
            horizon = time.monotonic() - EARLY_ACK_TTL
            for mid in [m for m, (_, at) in self._early_acks.items() if at < horizon]:
                del self._early_acks[mid]
        if seqs:
            self.store.mark_sent(seqs)

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                if not self._started_network and time.monotonic() - self._files_checked > FILE_RECHECK_SECONDS:
                    self._start_network()
                self._commit_acks()
                self._write_device_log()
                self._run_commands()
                if self._refused_since_rewind and time.monotonic() - self._last_rewind > REFUSED_RETRY_SECONDS:
                    self.rewind()
                if self.stats.connected and self._publish_batch():
                    self._wake.set()
            except Exception:  # the uplink must never take the agent down
                log.exception("uplink drain failed; retrying")
                time.sleep(1.0)

    def _write_device_log(self) -> None:
        entries, self._device_log = self._device_log, []
        if entries:
            with self.store.transaction() as db:
                for level, event, detail in entries:
                    self.store.log(event, level=level, source="uplink", db=db, **detail)

    def _publish_batch(self) -> bool:
        """Publish what fits in the in-flight window; True if more is waiting."""
        with self._lock:
            room = self.config.max_inflight - len(self._inflight)
            cursor = self._next_seq
            in_flight = set(self._inflight.values())
        if room <= 0:
            return False
        limit = room + len(in_flight)
        rows = self.store.unsent(after_seq=cursor, limit=limit)
        for message in [m for m in rows if m.seq not in in_flight][:room]:
            if not self.stats.connected or self._stop.is_set():
                return False
            info = self.client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
            with self._lock:
                self._next_seq = message.seq
                early = self._early_acks.pop(info.mid, None)
                if early is not None:
                    self._resolve(message.seq, early[0])
                else:
                    # Registered even when rc says "not connected": paho queued it and sends it later.
                    self._inflight[info.mid] = message.seq
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return False
            self.stats.published += 1
        return len(rows) == limit

    # -- commands -------------------------------------------------------------------------
    def _run_commands(self) -> None:
        while True:
            try:
                name, raw = self._commands.get_nowait()
            except queue.Empty:
                return
            self.handle_command(name, raw)

    def handle_command(self, name: str, raw: bytes) -> dict | None:
        """Run one command and queue its result; returns the result (None if dropped)."""
        self.stats.commands += 1
        request_id = commands.request_id_of(raw)
        message_id = f"{self.identity.org}/{self.identity.store}/{self.identity.device}/cmd/{name}/{request_id}"
        with self.store.lock:
            if self.store.db.execute("SELECT 1 FROM outbox WHERE id = ?", [message_id]).fetchone():
                return None  # this request was answered already (HQ sent it twice)
        body: dict = {}
        try:
            command = commands.parse(name, raw)
            handler = self.handlers.get(name)
            if handler is None:
                raise commands.CommandError(f"command {name!r} is not available on this device")
            body = {"ok": True, "result": handler(command)}
        except commands.CommandError as exc:
            body = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a handler failing is an error result, not a crash
            log.exception("command %s failed", name)
            body = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
        if not body["ok"]:
            self.stats.commands_rejected += 1
            if not self._error_results.take():  # a flood of garbage must not fill the outbox
                self.stats.commands_dropped += 1
                return None
        payload = {
            "schema": commands.RESULT_SCHEMA,
            "id": message_id,
            "org": self.identity.org,
            "store": self.identity.store,
            "device": self.identity.device,
            "command": name,
            "request_id": request_id,
            "ts": iso_utc(time.time()),
            **body,
        }
        with self.store.transaction() as db:
            self.store.enqueue(db, message_id, self.identity.topic(f"cmd/{name}/result"), payload, qos=1)
            self.store.log(f"command {name}", level="info" if body["ok"] else "warning", source="uplink", db=db,
                           request_id=request_id, ok=body["ok"], error=body.get("error"))
        self._wake.set()
        return payload

    def _ping(self, command: commands.Command) -> dict:
        return {"pong": True, "version": __version__, "uptime_s": round(time.time() - self.started_at, 1),
                "pending": self.store.pending_count(), "last_seq": self.store.last_seq()}

    def _resend(self, command: commands.Command) -> dict:
        assert isinstance(command, commands.Resend)
        result = self.store.requeue(
            since=commands.iso(command.from_) if command.from_ else None,
            until=commands.iso(command.to) if command.to else None,
            from_seq=command.from_seq,
            to_seq=command.to_seq,
            topic_suffixes=command.topic_suffixes(),
            camera_id=command.camera,
        )
        self.rewind()
        return result

    # -- health -------------------------------------------------------------------------
    def health(self) -> dict:
        counters = self.store.counters()
        return {
            "connected": self.stats.connected,
            "broker": f"{self.config.host}:{self.config.port}",
            "protocol": self.config.protocol,
            "tls": self.config.tls.enabled,
            "pending": self.store.pending_count(),
            "inflight": len(self._inflight),
            "last_seq": self.store.last_seq(),
            "published": self.stats.published,
            "acked": self.stats.acked,
            "refused": self.stats.refused,
            "reconnects": max(0, self.stats.connects - 1),
            "connect_failures": self.stats.connect_failures,
            "next_attempt_in_s": self.stats.next_attempt_in,
            "commands": self.stats.commands,
            "commands_rejected": self.stats.commands_rejected,
            "commands_dropped": self.stats.commands_dropped,
            "dropped_unsent": counters.get("dropped_unsent_messages", 0),
            "last_ack_at": iso_utc(self.stats.last_ack_at) if self.stats.last_ack_at else None,
            "last_error": self.stats.last_error,
        }
