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
from functools import lru_cache
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
    return _minute_string(int(ts // 60))


@lru_cache(maxsize=4096)
def _minute_string(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).strftime(MINUTE_FORMAT)


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
            rolled INTEGER NOT NULL DEFAULT 0,  -- 0 open, 1 rolled up, 2 sealed (see close_through)
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


def _m0002_durability(db: sqlite_utils.Database) -> None:
    """Hour/day rollups, sensor readings, the device log; indexes for retention."""
    db.execute(
        """CREATE TABLE rollups_hour (
            camera_id TEXT NOT NULL,
            hour TEXT NOT NULL,           -- first minute of the (store-local) hour, UTC, e.g. 2026-11-25T02:00Z
            line_id TEXT NOT NULL,
            in_count INTEGER NOT NULL,
            out_count INTEGER NOT NULL,
            PRIMARY KEY (camera_id, hour, line_id)
        )"""
    )
    db.execute(
        """CREATE TABLE rollups_day (
            camera_id TEXT NOT NULL,
            day TEXT NOT NULL,            -- the store-local date, e.g. 2026-11-25
            start TEXT NOT NULL,          -- its first minute in UTC
            line_id TEXT NOT NULL,
            in_count INTEGER NOT NULL,
            out_count INTEGER NOT NULL,
            PRIMARY KEY (camera_id, day, line_id)
        )"""
    )
    # One row per closed hour/day window and camera: what was queued for it.
    db.execute(
        """CREATE TABLE rollup_periods (
            granularity TEXT NOT NULL CHECK (granularity IN ('hour', 'day')),
            camera_id TEXT NOT NULL,
            start TEXT NOT NULL,          -- minute strings (UTC), end exclusive
            end TEXT NOT NULL,
            frames INTEGER NOT NULL,
            message_id TEXT NOT NULL,
            closed_at TEXT NOT NULL,
            PRIMARY KEY (granularity, camera_id, start)
        )"""
    )
    # Generic sensor readings (issue 5 writes them): one value per row, the
    # node's whole message in payload (JSON) when there is more to keep.
    db.execute(
        """CREATE TABLE sensor_readings (
            id INTEGER PRIMARY KEY,
            node_id TEXT NOT NULL,
            ts REAL NOT NULL,             -- epoch seconds UTC
            kind TEXT NOT NULL,           -- e.g. beam_in, beam_out, presence, weight_g, pickup
            value REAL,
            payload TEXT
        )"""
    )
    db.execute("CREATE INDEX sensor_readings_ts ON sensor_readings (ts)")
    db.execute("CREATE INDEX sensor_readings_node ON sensor_readings (node_id, kind, ts)")
    # Health events of this box (uplink up/down, pruning, dropped data, commands).
    db.execute(
        """CREATE TABLE device_log (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,             -- epoch seconds UTC
            level TEXT NOT NULL,          -- info / warning / error
            source TEXT NOT NULL,         -- storage / uplink / agent / …
            event TEXT NOT NULL,
            detail TEXT                   -- JSON object
        )"""
    )
    db.execute("CREATE INDEX device_log_ts ON device_log (ts)")
    db.execute("CREATE INDEX rollups_minute_minute ON rollups_minute (minute)")
    db.execute("CREATE INDEX zone_visits_enter ON zone_visits (enter_ts)")


# Named, applied in name order, each once. Features keep their migrations in
# their own modules ("module:function"); number ranges: 0001-0099 core and
# storage, 0100-0199 analytics, 0200-0299 sensors, 0300-0399 dashboard/ops.
MIGRATIONS: list[tuple[str, Migration | str]] = [
    ("0001_core", _m0001_core),
    ("0002_durability", _m0002_durability),
    ("0200_sensors", "edge_agent.sensors.schema:migrate"),
    ("0300_dashboard", "edge_agent.dashboard.schema:migrate"),
    ("0301_pos_receipts", "edge_agent.pos:migrate"),
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
    """The agent's one writer connection.

    Durability: WAL journal, ``synchronous=FULL`` by default (every commit is
    fsynced before it returns; see docs/storage.md for why on SD cards), and
    every write in a short transaction. Crossings are committed before
    ``record``/``record_many`` return; frame counts are batched.
    """

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA busy_timeout = 30000")
        if self.db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
            # A new file: let pruning give pages back to the card (only possible before
            # the first table exists; older files reuse freed pages instead).
            self.db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self.db.enable_wal()
        # FULL: a commit is on the card before it is acknowledged anywhere (power cuts are
        # common in stores; the cost is one fsync per batch, and we batch).
        self.db.execute(f"PRAGMA synchronous = {synchronous}")
        # Keep the WAL file from staying large after a burst (it is reused, not shrunk, otherwise).
        self.db.execute("PRAGMA journal_size_limit = 8388608")
        self.lock = threading.RLock()
        self._migrate()
        self._frames: dict[tuple[str, str], int] = {}
        self._last_flush = time.monotonic()
        self._rolled_until: dict[str, str] = dict(
            self.db.execute(
                "SELECT camera_id, MAX(minute) FROM camera_minutes WHERE rolled >= 1 GROUP BY camera_id"
            ).fetchall()
        )
        self.watermarks: dict[str, float] = {}
        self.late_events = 0
        # Called inside the transaction that inserts events (e.g. the live MQTT feed
        # queues its messages there, so an event and its message commit together).
        self.event_listeners: list[Callable[[sqlite_utils.Database, list[dict]], None]] = []

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

    def record_many(self, entries: Iterable[tuple[str, float, Iterable[Crossing]]], frames: int = 1) -> int:
        """The batched path: many ``(camera_id, ts, crossings)`` in ONE transaction.

        Same semantics as calling ``record`` for each entry, except that all
        of them commit together (one fsync): nothing is committed, and nothing
        may be acknowledged, until this returns. Returns the events written.
        """
        rows: list[tuple] = []
        with self.lock:
            with self.transaction() as db:
                for camera_id, ts, crossings in entries:
                    key = (camera_id, self.bucket_for(camera_id, ts))
                    self._frames[key] = self._frames.get(key, 0) + frames
                    rows.extend(self._event_rows(camera_id, crossings))
                    if ts > self.watermarks.get(camera_id, 0.0):
                        self.watermarks[camera_id] = ts
                self._insert_events(db, rows)
                self._flush_frames(db)
        return len(rows)

    def flush(self) -> None:
        with self.lock:
            if self._frames:
                with self.transaction() as db:
                    self._flush_frames(db)

    def _write_events(self, db: sqlite_utils.Database, camera_id: str, crossings: list[Crossing]) -> None:
        self._insert_events(db, self._event_rows(camera_id, crossings))

    def _event_rows(self, camera_id: str, crossings: Iterable[Crossing]) -> list[tuple]:
        rows = []
        for crossing in crossings:
            bucket = self.bucket_for(camera_id, crossing.ts)
            if bucket != minute_of(crossing.ts):
                self.late_events += 1
            rows.append((iso_utc(crossing.ts), bucket, camera_id, crossing.line_id, crossing.direction,
                         crossing.track_id, getattr(crossing, "kind", "visitor")))
            self._frames.setdefault((camera_id, bucket), 0)
        return rows

    def _insert_events(self, db: sqlite_utils.Database, rows: list[tuple]) -> None:
        if rows:
            db.conn.executemany(
                "INSERT INTO events (ts, bucket, camera_id, line_id, direction, track_id, kind) VALUES (?,?,?,?,?,?,?)",
                rows,
            )
            if self.event_listeners:
                keys = ("ts", "bucket", "camera_id", "line_id", "direction", "track_id", "kind")
                events = [dict(zip(keys, row)) for row in rows]
                for listener in self.event_listeners:
                    listener(db, events)

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

    def close_through(self, db: sqlite_utils.Database, camera_id: str, minute: str) -> None:
        """Make sure nothing more is accounted at or before ``minute`` for this camera
        (a closed hour/day of a camera that went silent): later events go after it."""
        if minute <= self._rolled_until.get(camera_id, ""):
            return
        # rolled = 2: a seal, not a minute with data (no rollup of its own, never a window's content).
        db.execute(
            "INSERT INTO camera_minutes (camera_id, minute, frames, rolled) VALUES (?, ?, 0, 2) "
            "ON CONFLICT (camera_id, minute) DO NOTHING",
            [camera_id, minute],
        )
        self._rolled_until[camera_id] = minute

    def rolled_cameras(self) -> list[str]:
        """Cameras with at least one closed minute."""
        return sorted(self._rolled_until)

    def rolled_until(self, camera_id: str) -> str | None:
        return self._rolled_until.get(camera_id)

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

    def last_seq(self) -> int:
        """The newest ``seq`` ever given out (AUTOINCREMENT never reuses one, even after pruning)."""
        with self.lock:
            row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return row[0] if row else 0

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

    def requeue(self, *, since: str | None = None, until: str | None = None, from_seq: int | None = None,
                to_seq: int | None = None, topic_suffixes: Iterable[str] | None = None,
                camera_id: str | None = None, limit: int = 100_000) -> dict:
        """Mark already-sent messages unsent again (HQ's "re-send" command): they go
        out once more with their original ``id``, ``seq`` and payload.

        ``since``/``until`` (ISO UTC, end exclusive) select rollups by their window
        start and other messages by when they were created.
        """
        where, params = ["sent_at IS NOT NULL"], []
        when = "COALESCE(json_extract(payload, '$.start'), created_at)"
        if since:
            where.append(f"{when} >= ?")
            params.append(since)
        if until:
            where.append(f"{when} < ?")
            params.append(until)
        if from_seq is not None:
            where.append("seq >= ?")
            params.append(from_seq)
        if to_seq is not None:
            where.append("seq <= ?")
            params.append(to_seq)
        suffixes = list(topic_suffixes or [])
        if suffixes:
            where.append("(" + " OR ".join("topic LIKE ?" for _ in suffixes) + ")")
            params.extend(f"%/{suffix}" for suffix in suffixes)
        if camera_id is not None:
            where.append("json_extract(payload, '$.camera') = ?")
            params.append(camera_id)
        with self.transaction() as db:
            seqs = [row[0] for row in db.execute(
                f"SELECT seq FROM outbox WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?", [*params, limit + 1]
            ).fetchall()]
            truncated = len(seqs) > limit
            seqs = seqs[:limit]
            db.conn.executemany("UPDATE outbox SET sent_at = NULL WHERE seq = ?", [(seq,) for seq in seqs])
            oldest = db.execute("SELECT MIN(seq) FROM outbox").fetchone()[0]
            missing = None
            if from_seq is not None and to_seq is not None:
                present = db.execute("SELECT COUNT(*) FROM outbox WHERE seq BETWEEN ? AND ?",
                                     [from_seq, to_seq]).fetchone()[0]
                missing = max(0, min(to_seq, self.last_seq()) - from_seq + 1 - present)
        return {"requeued": len(seqs), "truncated": truncated, "oldest_seq_on_device": oldest,
                "not_on_device": missing}

    # -- device log and counters --------------------------------------------------
    def log(self, event: str, level: str = "info", source: str = "agent", db: sqlite_utils.Database | None = None,
            **detail) -> None:
        """A health event for the device log (kept per ``storage.retention.device_log``)."""
        row = [time.time(), level, source, event, json.dumps(detail, default=str) if detail else None]
        sql = "INSERT INTO device_log (ts, level, source, event, detail) VALUES (?, ?, ?, ?, ?)"
        if db is not None:
            db.execute(sql, row)
        else:
            with self.transaction() as tx:
                tx.execute(sql, row)

    def bump(self, db: sqlite_utils.Database, counter: str, by: int = 1) -> None:
        """Add to a persistent counter (``meta`` table), inside the caller's transaction."""
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
            [f"counter.{counter}", by],
        )

    def counters(self) -> dict[str, int]:
        with self.lock:
            rows = self.db.execute("SELECT key, value FROM meta WHERE key LIKE 'counter.%'").fetchall()
        return {key.removeprefix("counter."): int(value) for key, value in rows}

    # -- size -----------------------------------------------------------------------
    def size(self) -> dict[str, int]:
        """Bytes the database uses (pages in use, WAL included) and the files' size on disk."""
        with self.lock:
            page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
            pages = self.db.execute("PRAGMA page_count").fetchone()[0]
            free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        files = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                files += Path(str(self.path) + suffix).stat().st_size
            except OSError:
                pass
        return {"used_bytes": (pages - free) * page_size, "file_bytes": files}

    def close(self) -> None:
        self.flush()
        with self.lock:
            self.db.conn.close()


def open_readonly(path: str | Path) -> sqlite_utils.Database:
    """A reader connection for the dashboard and CLI (WAL lets it read while the agent writes)."""
    conn = sqlite3.connect(f"file:{Path(path).expanduser()}?mode=ro", uri=True, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    return sqlite_utils.Database(conn)
