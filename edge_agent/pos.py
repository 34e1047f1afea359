"""Point-of-sale receipts, for the dashboard's conversion (receipts ÷ visitors).

Tills report receipts in one of two simple ways, both optional (``pos:`` in the
config):

* **MQTT**: JSON on ``pos.mqtt_topic`` on the store broker, one receipt
  ``{"receipt_id": "R-1001", "ts": "2026-05-03T14:02:11+08:00", "total": 59.0, "items": 3}``
  or a list of them;
* **CSV drop folder**: ``*.csv`` files with a header ``receipt_id,ts,total,items``
  in ``pos.csv_dir``; a file is read once it has not changed for a few seconds and
  then moved to ``processed/``.

``receipt_id`` is required and de-duplicates (a till that sends a receipt twice,
or a file dropped twice, counts once); ``ts`` defaults to the time received, and a
time without an offset is the store's local time. A bad message or row is counted
and logged, never fatal.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import AgentConfig
from .storage import Store, iso_utc

log = logging.getLogger(__name__)

SETTLE_SECONDS = 3.0  # a CSV file unchanged this long is complete


def migrate(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE pos_receipts (
            receipt_id TEXT PRIMARY KEY,  -- the till's id: de-duplicates re-sends
            ts REAL NOT NULL,             -- epoch seconds UTC of the sale
            total REAL,
            items INTEGER,
            source TEXT NOT NULL,         -- mqtt | csv:<file name>
            received_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX pos_receipts_ts ON pos_receipts (ts)")


class Receipt(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    receipt_id: str = Field(min_length=1, max_length=128)
    ts: datetime | None = None
    total: float | None = Field(None, ge=0, le=1e9)
    items: int | None = Field(None, ge=0, le=100_000)

    def epoch(self, timezone: str, received: float) -> float:
        if self.ts is None:
            return received
        ts = self.ts if self.ts.tzinfo else self.ts.replace(tzinfo=ZoneInfo(timezone))
        return ts.timestamp()


@dataclass
class PosStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    files: int = 0
    connected: bool = False
    last_receipt_at: float | None = None
    last_error: str | None = None


class PosIngest:
    def __init__(self, config: AgentConfig, store: Store) -> None:
        self.config = config.pos
        self.mqtt = config.mqtt
        self.timezone = config.timezone
        self.identity = f"{config.mqtt.org}-{config.mqtt.store_id}-{config.mqtt.device_id}"
        self.store = store
        self.stats = PosStats()
        self._lock = threading.Lock()
        self.client = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self, schedule=None) -> PosIngest:
        if self.config.mqtt_topic:
            self._start_mqtt()
        if self.config.csv_dir is not None and schedule is not None:
            schedule("pos-csv", self.scan_csv, self.config.poll_seconds)
        return self

    def stop(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()

    def _start_mqtt(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-agent-pos-{self.identity}",
                             protocol=MQTTProtocolVersion.MQTTv5)
        same_broker = self.config.host is None
        if same_broker and self.mqtt.username:
            client.username_pw_set(self.mqtt.username, self.mqtt.password)
        client.reconnect_delay_set(min_delay=1, max_delay=30)

        def on_connect(client, userdata, flags, reason_code, properties=None):
            if reason_code.is_failure:
                self.stats.last_error = f"broker refused the POS subscriber: {reason_code}"
                return
            self.stats.connected = True
            client.subscribe(self.config.mqtt_topic, qos=1)

        def on_disconnect(client, userdata, flags, reason_code, properties=None):
            self.stats.connected = False

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = lambda client, userdata, message: self.handle_payload(message.payload, "mqtt")
        # A persistent session: receipts sent while the agent restarts wait on the broker.
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 24 * 3600
        client.connect_async(self.config.host or self.mqtt.host, self.config.port or self.mqtt.port,
                             keepalive=30, clean_start=False, properties=properties)
        client.loop_start()
        self.client = client

    # -- ingestion ----------------------------------------------------------------------
    def handle_payload(self, payload: bytes | str, source: str) -> int:
        """One MQTT message: a receipt or a list of receipts. Returns receipts stored."""
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            self._reject(f"{source}: not JSON ({exc})")
            return 0
        items = body if isinstance(body, list) else [body]
        receipts = []
        for item in items[:10_000]:
            try:
                receipts.append(Receipt.model_validate(item))
            except ValidationError as exc:
                self._reject(f"{source}: {_first_error(exc)}")
        return self.store_receipts(receipts, source)

    def store_receipts(self, receipts: list[Receipt], source: str) -> int:
        if not receipts:
            return 0
        now = time.time()
        stored = 0
        with self.store.transaction() as db:
            for receipt in receipts:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO pos_receipts (receipt_id, ts, total, items, source, received_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [receipt.receipt_id, receipt.epoch(self.timezone, now), receipt.total, receipt.items,
                     source, now],
                )
                stored += cursor.rowcount
        with self._lock:
            self.stats.received += len(receipts)
            self.stats.stored += stored
            self.stats.duplicates += len(receipts) - stored
            self.stats.last_receipt_at = now
        return stored

    def scan_csv(self, now: float | None = None) -> int:
        """Read every settled ``*.csv`` in the drop folder, then move it to ``processed/``."""
        folder = Path(self.config.csv_dir).expanduser()
        if not folder.is_dir():
            self.stats.last_error = f"POS folder {folder} does not exist"
            return 0
        now = time.time() if now is None else now
        stored = 0
        for path in sorted(folder.glob("*.csv")):
            if now - path.stat().st_mtime < SETTLE_SECONDS:
                continue  # the till may still be writing it
            stored += self.ingest_csv(path)
            done = folder / "processed"
            done.mkdir(exist_ok=True)
            target = done / path.name
            if target.exists():
                target = done / f"{path.stem}-{int(now)}{path.suffix}"
            shutil.move(str(path), target)
            self.stats.files += 1
        return stored

    def ingest_csv(self, path: Path) -> int:
        receipts = []
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                if not reader.fieldnames or "receipt_id" not in reader.fieldnames:
                    self._reject(f"{path.name}: no header with a receipt_id column")
                    return 0
                for row in reader:
                    data = {key: value for key, value in row.items() if key and value not in (None, "")}
                    try:
                        receipts.append(Receipt.model_validate(data))
                    except ValidationError as exc:
                        self._reject(f"{path.name} line {reader.line_num}: {_first_error(exc)}")
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            self._reject(f"{path.name}: cannot read ({exc})")
            return 0
        return self.store_receipts(receipts, f"csv:{path.name}")

    def _reject(self, message: str) -> None:
        with self._lock:
            self.stats.rejected += 1
            self.stats.last_error = message
        log.warning("POS receipt rejected: %s", message)

    def health(self) -> dict:
        s = self.stats
        return {
            "mqtt_topic": self.config.mqtt_topic,
            "csv_dir": str(self.config.csv_dir) if self.config.csv_dir else None,
            "connected": s.connected if self.config.mqtt_topic else None,
            "received": s.received,
            "stored": s.stored,
            "duplicates": s.duplicates,
            "rejected": s.rejected,
            "files": s.files,
            "last_receipt_at": iso_utc(s.last_receipt_at) if s.last_receipt_at else None,
            "last_error": s.last_error,
        }


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "receipt"
    return f"{where}: {error['msg']}"
