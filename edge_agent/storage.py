"""SQLite storage (sqlite-utils, WAL): the agent's source of truth.

Every count is committed here before anything else sees it; rollups and the
MQTT outbox are derived from committed rows in the same database, so a crash or
power cut never leaves a message that has no event behind it, or the reverse.

All writes of one process go through one connection under one lock (SQLite
has one writer anyway); readers (dashboard, CLI) open their own connections.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlite_utils

from .counting import Crossing

MINUTE_FORMAT = "%Y-%m-%dT%H:%MZ"


def iso_utc(ts: float) -> str:
    """Epoch seconds → ``2026-11-25T04:49:20.123Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def minute_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(MINUTE_FORMAT)


def minute_start(minute: str) -> float:
    return datetime.strptime(minute, MINUTE_FORMAT).replace(tzinfo=UTC).timestamp()


def next_minute(minute: str) -> str:
    return (datetime.strptime(minute, MINUTE_FORMAT) + timedelta(minutes=1)).strftime(MINUTE_FORMAT)


# -- migrations ---------------------------------------------------------------
# Named, applied in order, each once; a later release appends, never edits.
Migration = Callable[[sqlite_utils.Database], None]


def _m0001_core(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,             -- when it happened, ISO 8601 UTC
            bucket TEXT NOT NULL,         -- the minute it is accounted in (UTC)
            camera_id TEXT NOT NULL,
            line_id TEXT NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            track_id INTEGER NOT NULL,
            kind TEXT NOT NULL DEFAULT 'visitor'
        )"""
    )
    db.execute("CREATE INDEX events_ts ON events (ts)")
    db.execute("CREATE INDEX events_bucket ON events (camera_id, bucket)")
    db.execute(
        """CREATE TABLE camera_minutes (
            camera_id TEXT NOT NULL,
            minute TEXT NOT NULL,
            frames INTEGER NOT NULL DEFAULT 0,
            rolled INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (camera_id, minute)
        )"""
    )
    db.execute("CREATE INDEX camera_minutes_open ON camera_minutes (rolled, camera_id, minute)")
    db.execute(
        """CREATE TABLE rollups_minute (
            camera_id TEXT NOT NULL,
            minute TEXT NOT NULL,
            line_id TEXT NOT NULL,
            in_count INTEGER NOT NULL,
            out_count INTEGER NOT NULL,
            PRIMARY KEY (camera_id, minute, line_id)
        )"""
    )
    db.execute(
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            topic TEXT NOT NULL,
            payload TEXT NOT NULL,
            qos INTEGER NOT NULL DEFAULT 1,
            retain INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            sent_at TEXT,
            attempts INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute("CREATE INDEX outbox_unsent ON outbox (sent_at, seq)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    # A person's stay in a zone (issue 8 fills it; sensor fusion reads it).
    db.execute(
        """CREATE TABLE zone_visits (
            id INTEGER PRIMARY KEY,
            camera_id TEXT NOT NULL,
            zone_id TEXT NOT NULL,
            track_id INTEGER NOT NULL,
            enter_ts REAL NOT NULL,       -- epoch seconds UTC
            exit_ts REAL,                 -- NULL while the person is still inside
            kind TEXT NOT NULL DEFAULT 'visitor'
        )"""
    )
    db.execute("CREATE INDEX zone_visits_time ON zone_visits (camera_id, zone_id, enter_ts)")


# Named, applied in name order, each once. Features keep their migrations in
# their own modules ("module:function"); number ranges: 0001-0099 core and
# storage, 0100-0199 analytics, 0200-0299 sensors, 0300-0399 dashboard/ops.
MIGRATIONS: list[tuple[str, Migration | str]] = [
    ("0001_core", _m0001_core),
    ("0100_analytics", "edge_agent.analytics.schema:migrate"),
]


def _resolve(migration: Migration | str) -> Migration:
    if callable(migration):
        return migration
    module_name, _, function = migration.partition(":")
    import importlib

    return getattr(importlib.import_module(module_name), function)


@dataclass(slots=True)
class OutboxMessage:
    seq: int
    id: str
    topic: str
    payload: str
    qos: int
    retain: bool


class Store:
    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA busy_timeout = 30000")
        self.db.enable_wal()
        # FULL: a commit is on the card before it is acknowledged anywhere (power cuts are
        # common in stores; the cost is one fsync per batch, and we batch).
        self.db.execute(f"PRAGMA synchronous = {synchronous}")
        self.lock = threading.RLock()
        self._migrate()
        self._frames: dict[tuple[str, str], int] = {}
        self._last_flush = time.monotonic()
        self._rolled_until: dict[str, str] = dict(
            self.db.execute(
                "SELECT camera_id, MAX(minute) FROM camera_minutes WHERE rolled = 1 GROUP BY camera_id"
            ).fetchall()
        )
        self.watermarks: dict[str, float] = {}
        self.late_events = 0

    # -- schema ---------------------------------------------------------------
    def _migrate(self) -> None:
        with self.lock:
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            applied = {row[0] for row in self.db.execute("SELECT name FROM schema_migrations").fetchall()}
            for name, migration in sorted(MIGRATIONS, key=lambda item: item[0]):
                if name in applied:
                    continue
                with self.transaction():
                    _resolve(migration)(self.db)
                    self.db.execute(
                        "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", [name, iso_utc(time.time())]
                    )

    @property
    def schema_version(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT name FROM schema_migrations ORDER BY name")]

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction under the process-wide write lock."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # -- events ---------------------------------------------------------------
    def bucket_for(self, camera_id: str, ts: float) -> str:
        """The minute an event at ``ts`` is accounted in: its own minute, or the
        first open one if that minute was already rolled up and published."""
        minute = minute_of(ts)
        rolled = self._rolled_until.get(camera_id)
        if rolled is not None and minute <= rolled:
            return next_minute(rolled)
        return minute

    def account(self, camera_id: str, ts: float) -> str:
        """The bucket for a row written beside the events (zone visits, sensor
        readings): like ``bucket_for``, and that minute is sure to be rolled up."""
        with self.lock:
            bucket = self.bucket_for(camera_id, ts)
            self._frames.setdefault((camera_id, bucket), 0)
            return bucket

    def record(self, camera_id: str, ts: float, crossings: Iterable[Crossing] = (), frames: int = 1,
               flush_every: float = 1.0) -> None:
        """Account processed frames and commit crossings (at once, if any).

        Frame counts are batched in memory and written at least every
        ``flush_every`` seconds or when a crossing is committed.
        """
        crossings = list(crossings)
        with self.lock:
            bucket = self.bucket_for(camera_id, ts)
            key = (camera_id, bucket)
            self._frames[key] = self._frames.get(key, 0) + frames
            if crossings or time.monotonic() - self._last_flush >= flush_every:
                with self.transaction() as db:
                    self._write_events(db, camera_id, crossings)
                    self._flush_frames(db)
            self.watermarks[camera_id] = max(ts, self.watermarks.get(camera_id, 0.0))

    def flush(self) -> None:
        with self.lock:
            if self._frames:
                with self.transaction() as db:
                    self._flush_frames(db)

    def _write_events(self, db: sqlite_utils.Database, camera_id: str, crossings: list[Crossing]) -> None:
        rows = []
        for crossing in crossings:
            bucket = self.bucket_for(camera_id, crossing.ts)
            if bucket != minute_of(crossing.ts):
                self.late_events += 1
            rows.append((iso_utc(crossing.ts), bucket, camera_id, crossing.line_id, crossing.direction,
                         crossing.track_id, getattr(crossing, "kind", "visitor")))
            self._frames.setdefault((camera_id, bucket), 0)
        if rows:
            db.conn.executemany(
                "INSERT INTO events (ts, bucket, camera_id, line_id, direction, track_id, kind) VALUES (?,?,?,?,?,?,?)",
                rows,
            )

    def _flush_frames(self, db: sqlite_utils.Database) -> None:
        if self._frames:
            db.conn.executemany(
                """INSERT INTO camera_minutes (camera_id, minute, frames) VALUES (?, ?, ?)
                   ON CONFLICT (camera_id, minute) DO UPDATE SET frames = frames + excluded.frames""",
                [(camera, minute, count) for (camera, minute), count in self._frames.items()],
            )
            self._frames.clear()
        self._last_flush = time.monotonic()

    def mark_rolled(self, db: sqlite_utils.Database, camera_id: str, minute: str) -> None:
        db.execute("UPDATE camera_minutes SET rolled = 1 WHERE camera_id = ? AND minute = ?", [camera_id, minute])
        if minute > self._rolled_until.get(camera_id, ""):
            self._rolled_until[camera_id] = minute

    # -- outbox -----------------------------------------------------------------
    def enqueue(self, db: sqlite_utils.Database, message_id: str, topic: str, payload: dict,
                qos: int = 1, retain: bool = False) -> int | None:
        """Add a message inside the caller's transaction; ``seq`` is written into
        the payload. An id already queued is left alone (returns None)."""
        cursor = db.execute(
            "INSERT OR IGNORE INTO outbox (id, topic, payload, qos, retain, created_at) VALUES (?, ?, '', ?, ?, ?)",
            [message_id, topic, qos, int(retain), iso_utc(time.time())],
        )
        if cursor.rowcount == 0:
            return None
        seq = cursor.lastrowid
        body = {**payload, "seq": seq}
        db.execute("UPDATE outbox SET payload = ? WHERE seq = ?", [json.dumps(body, separators=(",", ":")), seq])
        return seq

    def unsent(self, after_seq: int = 0, limit: int = 100) -> list[OutboxMessage]:
        with self.lock:
            rows = self.db.execute(
                "SELECT seq, id, topic, payload, qos, retain FROM outbox WHERE sent_at IS NULL AND seq > ? "
                "ORDER BY seq LIMIT ?",
                [after_seq, limit],
            ).fetchall()
        return [OutboxMessage(seq, mid, topic, payload, qos, bool(retain)) for seq, mid, topic, payload, qos, retain in rows]

    def mark_sent(self, seqs: Iterable[int]) -> None:
        seqs = list(seqs)
        if not seqs:
            return
        now = iso_utc(time.time())
        with self.transaction() as db:
            db.conn.executemany(
                "UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE seq = ? AND sent_at IS NULL",
                [(now, seq) for seq in seqs],
            )

    def pending_count(self) -> int:
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]

    def close(self) -> None:
        self.flush()
        with self.lock:
            self.db.conn.close()


def open_readonly(path: str | Path) -> sqlite_utils.Database:
    """A reader connection for the dashboard and CLI (WAL lets it read while the agent writes)."""
    conn = sqlite3.connect(f"file:{Path(path).expanduser()}?mode=ro", uri=True, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    return sqlite_utils.Database(conn)
