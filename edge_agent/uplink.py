"""MQTT uplink (paho-mqtt): drains the SQLite outbox to the broker.

A message is marked sent only when its PUBACK arrives with a success reason
code (MQTT 5 reports refusals, e.g. ACL denials, only there). Anything not
acknowledged stays in the outbox and is published again, with the same ``id``,
after the next connect; headquarters de-duplicates on that id.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from . import __version__
from .config import MqttConfig
from .rollup import Identity
from .storage import Store, iso_utc

log = logging.getLogger(__name__)

STATUS_SCHEMA = "smartstore.status/1"
EARLY_ACK_TTL = 1.0  # seconds an ack may wait for publish() to return its mid


@dataclass
class UplinkStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    published: int = 0
    acked: int = 0
    refused: int = 0
    last_ack_at: float | None = None
    last_error: str | None = None


class Uplink:
    def __init__(self, config: MqttConfig, store: Store, identity: Identity) -> None:
        self.config = config
        self.store = store
        self.identity = identity
        self.stats = UplinkStats()
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._inflight: dict[int, int] = {}  # mid → outbox seq
        self._early_acks: dict[int, tuple[bool, float]] = {}  # mid → (ok, when)
        self._acked_seqs: list[int] = []
        self._next_seq = 0  # drain cursor; reset on every connect
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain_loop, name="uplink", daemon=True)
        self.client = self._make_client()

    # -- client setup -----------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        config = self.config
        v5 = config.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edge-agent-{self.identity.org}-{self.identity.store}-{self.identity.device}",
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            **({} if v5 else {"clean_session": True}),
        )
        client.max_inflight_messages_set(config.max_inflight)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        if config.username:
            client.username_pw_set(config.username, config.password)
        if config.tls.enabled:
            client.tls_set(
                ca_certs=str(config.tls.ca_file) if config.tls.ca_file else None,
                certfile=str(config.tls.cert_file) if config.tls.cert_file else None,
                keyfile=str(config.tls.key_file) if config.tls.key_file else None,
                cert_reqs=ssl.CERT_NONE if config.tls.insecure_skip_verify else ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(config.tls.insecure_skip_verify)
        client.will_set(self.identity.topic("status"), self._status_payload("offline"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _status_payload(self, state: str) -> str:
        return json.dumps(
            {
                "schema": STATUS_SCHEMA,
                "device": self.identity.device,
                "store": self.identity.store,
                "org": self.identity.org,
                "state": state,
                "version": __version__,
                "ts": iso_utc(time.time()),
                "uptime_s": round(time.time() - self.started_at, 1),
            },
            separators=(",", ":"),
        )

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        properties = None
        if self.config.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 0
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive,
                                  properties=properties)
        self.client.loop_start()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline`` (a clean stop sends no last will) and disconnect."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.stats.connected:
            info = self.client.publish(self.identity.topic("status"), self._status_payload("offline"), qos=1, retain=True)
            info.wait_for_publish(timeout)
        self._commit_acks()
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks (network thread: no blocking, no paho calls under our lock) ----
    # paho keeps unacknowledged QoS 1 messages and re-sends them itself after a
    # reconnect (same mid), so the in-flight map survives disconnects; only
    # messages paho no longer holds (refused, or lost with a restart) are
    # published again from the outbox.
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.stats.last_error = f"broker refused the connection: {reason_code}"
            log.warning("MQTT: %s", self.stats.last_error)
            return
        with self._lock:
            self._next_seq = 0  # sweep the outbox again for anything not in flight
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.last_error = None
        log.info("MQTT connected to %s:%s", self.config.host, self.config.port)
        client.publish(self.identity.topic("status"), self._status_payload("online"), qos=1, retain=True)
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.stats.connected:
            self.stats.disconnects += 1
            if not self._stop.is_set():
                log.warning("MQTT disconnected: %s", reason_code)
        self.stats.connected = False

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

    def _resolve(self, seq: int, ok: bool, reason_code=None) -> None:
        if ok:
            self._acked_seqs.append(seq)
            self.stats.acked += 1
            self.stats.last_ack_at = time.time()
        else:
            # Refused (e.g. ACL): stays unsent; published again after the next connect.
            self.stats.refused += 1
            self.stats.last_error = f"broker refused message seq {seq}: {reason_code}"
            log.error("MQTT: %s", self.stats.last_error)

    # -- drain ----------------------------------------------------------------------
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
                self._commit_acks()
                if self.stats.connected and self._publish_batch():
                    self._wake.set()
            except Exception:  # the uplink must never take the agent down
                log.exception("uplink drain failed; retrying")
                time.sleep(1.0)

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

    # -- health -------------------------------------------------------------------------
    def health(self) -> dict:
        return {
            "connected": self.stats.connected,
            "broker": f"{self.config.host}:{self.config.port}",
            "pending": self.store.pending_count(),
            "inflight": len(self._inflight),
            "published": self.stats.published,
            "acked": self.stats.acked,
            "refused": self.stats.refused,
            "reconnects": max(0, self.stats.connects - 1),
            "last_ack_at": iso_utc(self.stats.last_ack_at) if self.stats.last_ack_at else None,
            "last_error": self.stats.last_error,
        }
