"""``edge-agent hq tail``: a small reference consumer of the device feed.

It shows the contract working end to end: subscribe to one store or all,
keep each message once (de-duplicated by ``id``), acknowledge a message to the
broker only after it is stored (paho manual ack), and print or store the feed
in SQLite or JSON lines. With ``--client-id`` it keeps a persistent session,
so the broker holds messages for it while it is away.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import ssl
import sys
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import click
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Sink:
    """Where new messages go. ``add`` returns True for a new id, False for a duplicate."""

    def add(self, message_id: str, topic: str, body: dict, raw: bytes, retained: bool) -> bool:
        raise NotImplementedError

    def count(self, what: str, by: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class SQLiteSink(Sink):
    """One row per unique id; each insert committed before the broker is acked."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute(
            """CREATE TABLE IF NOT EXISTS messages (
                id TEXT PRIMARY KEY, topic TEXT NOT NULL, schema TEXT, org TEXT, store TEXT, device TEXT,
                seq INTEGER, received_at TEXT NOT NULL, retained INTEGER NOT NULL, payload TEXT NOT NULL)"""
        )
        self.conn.execute("CREATE INDEX IF NOT EXISTS messages_device_seq ON messages (org, store, device, seq)")
        self.conn.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        self.lock = threading.Lock()

    def add(self, message_id, topic, body, raw, retained) -> bool:
        with self.lock:
            cursor = self.conn.execute(
                "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [message_id, topic, body.get("schema"), body.get("org"), body.get("store"), body.get("device"),
                 body.get("seq") if isinstance(body.get("seq"), int) else None, _now(), int(retained),
                 raw.decode("utf-8")],
            )
            return cursor.rowcount == 1

    def count(self, what: str, by: int = 1) -> None:
        with self.lock:
            self.conn.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + ?",
                              [what, by, by])

    def close(self) -> None:
        self.conn.close()


class JsonlSink(Sink):
    """Appends ``{"topic", "received_at", "retained", "payload"}`` lines; ids already in the file are skipped."""

    def __init__(self, path: Path) -> None:
        self.seen: set[str] = set()
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    self.seen.add(json.loads(line)["payload"]["id"])
                except (ValueError, KeyError, TypeError):
                    continue
        self.file = path.open("a", encoding="utf-8")
        self.lock = threading.Lock()

    def add(self, message_id, topic, body, raw, retained) -> bool:
        with self.lock:
            if message_id in self.seen:
                return False
            self.file.write(json.dumps({"topic": topic, "received_at": _now(), "retained": retained,
                                        "payload": body}, separators=(",", ":")) + "\n")
            self.file.flush()
            self.seen.add(message_id)
            return True

    def close(self) -> None:
        self.file.close()


class MemorySink(Sink):
    def __init__(self) -> None:
        self.messages: dict[str, tuple[str, dict]] = {}
        self.lock = threading.Lock()

    def add(self, message_id, topic, body, raw, retained) -> bool:
        with self.lock:
            if message_id in self.messages:
                return False
            self.messages[message_id] = (topic, body)
            return True


class Tail:
    def __init__(self, host: str, port: int, topics: Iterable[str], sink: Sink, *, protocol: str = "5",
                 client_id: str | None = None, session_expiry: int = 0, username: str | None = None,
                 password: str | None = None, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, insecure: bool = False, echo=None, validate: bool = False) -> None:
        self.host, self.port, self.topics, self.sink = host, port, list(topics), sink
        self.echo = echo
        self.validate = validate
        self.stats = {"received": 0, "new": 0, "duplicates": 0, "invalid": 0, "schema_errors": 0, "commands": 0}
        self.last_new = time.monotonic()
        self.connected = threading.Event()
        self.v5 = protocol == "5"
        persistent = client_id is not None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or "",
            protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
            manual_ack=True,
            **({} if self.v5 else {"clean_session": not persistent}),
        )
        self.session_expiry = session_expiry if persistent else 0
        self.persistent = persistent
        if username:
            self.client.username_pw_set(username, password)
        if ca_file or cert_file or insecure:
            self.client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file,
                                cert_reqs=ssl.CERT_NONE if insecure else ssl.CERT_REQUIRED)
            self.client.tls_insecure_set(insecure)
        self.client.reconnect_delay_set(0.5, 5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        print(f"hq tail: subscribed to {', '.join(self.topics)}", file=sys.stderr, flush=True)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            print(f"hq tail: broker refused the connection: {reason_code}", file=sys.stderr)
            return
        client.subscribe([(topic, 1) for topic in self.topics])
        self.connected.set()

    def _on_message(self, client, userdata, message) -> None:
        self.stats["received"] += 1
        raw = bytes(message.payload)
        topic = message.topic
        parts = topic.split("/")
        if len(parts) >= 2 and parts[-2] == "cmd":  # a request from HQ to a device, not feed
            self.stats["commands"] += 1
        else:
            self._keep(topic, raw, bool(message.retain))
        client.ack(message.mid, message.qos)  # only after the sink committed it

    def _keep(self, topic: str, raw: bytes, retained: bool) -> None:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
            self.stats["invalid"] += 1
            self.sink.count("invalid")
            print(f"hq tail: skipped a message without an id on {topic}", file=sys.stderr)
            return
        if self.validate:
            from ..contract import validator_for

            try:
                errors = list(validator_for(body).iter_errors(body))
            except ValueError as exc:
                errors = [exc]
            if errors:
                self.stats["schema_errors"] += 1
                self.sink.count("schema_errors")
                print(f"hq tail: {body['id']}: does not match its schema: {errors[0]}", file=sys.stderr)
        if self.sink.add(body["id"], topic, body, raw, retained):
            self.stats["new"] += 1
            self.last_new = time.monotonic()
            if self.echo is not None:
                self.echo(json.dumps({"topic": topic, "payload": body}, separators=(",", ":")))
        else:
            self.stats["duplicates"] += 1
            self.sink.count("duplicates")

    def start(self) -> Tail:
        properties = None
        kwargs = {}
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.session_expiry
            kwargs = {"clean_start": not self.persistent, "properties": properties}
        self.client.connect_async(self.host, self.port, keepalive=30, **kwargs)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.sink.close()

    def run(self, count: int | None = None, idle_timeout: float | None = None, duration: float | None = None,
            stop_event: threading.Event | None = None) -> None:
        stop_event = stop_event or threading.Event()
        deadline = time.monotonic() + duration if duration else None
        while not stop_event.wait(0.1):
            if count is not None and self.stats["new"] >= count:
                break
            if idle_timeout is not None and time.monotonic() - self.last_new >= idle_timeout:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break


def gaps(db_path: Path) -> dict[str, list[tuple[int, int]]]:
    """Per device, the seq ranges a tail database has not seen (status seqs excluded)."""
    conn = sqlite3.connect(str(db_path))
    result: dict[str, list[tuple[int, int]]] = {}
    rows = conn.execute("SELECT org, store, device, seq FROM messages WHERE seq IS NOT NULL "
                        "AND schema != 'smartstore.status/1' ORDER BY org, store, device, seq").fetchall()
    conn.close()
    previous: dict[str, int] = {}
    for org, store, device, seq in rows:
        key = f"{org}/{store}/{device}"
        if key in previous and seq > previous[key] + 1:
            result.setdefault(key, []).append((previous[key] + 1, seq - 1))
        previous[key] = seq
    return result


@click.command("tail")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=1883, show_default=True)
@click.option("--protocol", type=click.Choice(["5", "3.1.1"]), default="5", show_default=True)
@click.option("--prefix", default="smartstore/v1", show_default=True, help="Topic prefix of the fleet.")
@click.option("--store", "stores", multiple=True, metavar="ORG/STORE",
              help="Only this store (repeatable); default: every store under the prefix.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="Keep the feed in SQLite.")
@click.option("--jsonl", "jsonl_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Append the feed to a JSON-lines file.")
@click.option("--client-id", help="A persistent session under this id: the broker keeps messages while tail is away.")
@click.option("--session-expiry", type=int, default=86400, show_default=True,
              help="Seconds the broker keeps a persistent session (with --client-id).")
@click.option("--username")
@click.option("--password")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False), help="CA to verify the broker (enables TLS).")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="Client certificate (TLS).")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="Client key (TLS).")
@click.option("--count", type=int, help="Exit after this many new messages.")
@click.option("--idle-timeout", type=float, help="Exit after this many seconds without a new message.")
@click.option("--duration", type=float, help="Exit after this many seconds.")
@click.option("--validate", is_flag=True, help="Check each payload against the contract's JSON Schema (needs jsonschema).")
@click.option("--quiet", is_flag=True, help="Do not print messages (only the summary).")
def tail_command(host, port, protocol, prefix, stores, db_path, jsonl_path, client_id, session_expiry, username,
                 password, password_file, cafile, cert, key, count, idle_timeout, duration, validate, quiet) -> None:
    """Subscribe to the fleet feed, keep each message once (by id), print or store it."""
    prefix = prefix.strip("/")
    topics = [f"{prefix}/{store.strip('/')}/+/#" for store in stores] or [f"{prefix}/+/+/+/#"]
    for store in stores:
        if store.count("/") != 1:
            raise click.BadParameter(f"{store!r}: write ORG/STORE, e.g. acme/store-0042", param_hint="--store")
    if password_file:
        password = password_file.read_text(encoding="utf-8").strip()
    sink: Sink = SQLiteSink(db_path) if db_path else JsonlSink(jsonl_path) if jsonl_path else MemorySink()
    echo = None if quiet else (lambda line: click.echo(line))
    tail = Tail(host, port, topics, sink, protocol=protocol, client_id=client_id, session_expiry=session_expiry,
                username=username, password=password, ca_file=cafile, cert_file=cert, key_file=key, echo=echo,
                validate=validate)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    tail.start()
    try:
        tail.run(count=count, idle_timeout=idle_timeout, duration=duration, stop_event=stop)
    finally:
        tail.stop()
        summary = ", ".join(f"{k} {v}" for k, v in tail.stats.items())
        click.echo(f"hq tail: {summary}", err=True)
