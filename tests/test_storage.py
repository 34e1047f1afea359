"""Storage and rollups on real SQLite files."""

import json
import sqlite3
from datetime import UTC, datetime

from edge_agent.counting import Crossing
from edge_agent.rollup import Identity, close_minutes
from edge_agent.storage import MIGRATIONS, Store, minute_start

IDENTITY = Identity("org", "store1", "box1")
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC).timestamp()


def rows(path, sql):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_wal_and_migrations(tmp_path):
    store = Store(tmp_path / "a.db")
    assert rows(tmp_path / "a.db", "PRAGMA journal_mode")[0][0] == "wal"
    applied = store.schema_version
    assert applied[0] == "0001_core" and applied == sorted(name for name, _ in MIGRATIONS)
    store.close()
    again = Store(tmp_path / "a.db")  # re-opening applies nothing twice
    assert again.schema_version == applied
    again.close()


def test_crossings_are_committed_immediately(tmp_path):
    store = Store(tmp_path / "a.db")
    store.record("cam", T0 + 1, [Crossing("door", 7, "in", T0 + 1)])
    # Another connection (another process) sees it without any flush or close.
    assert rows(tmp_path / "a.db", "SELECT camera_id, line_id, direction, track_id FROM events") == [
        ("cam", "door", "in", 7)
    ]
    assert rows(tmp_path / "a.db", "SELECT ts, bucket FROM events") == [("2026-11-25T10:00:01.000Z", "2026-11-25T10:00Z")]
    store.close()


def test_rollup_closes_minute_after_watermark(tmp_path):
    store = Store(tmp_path / "a.db")
    store.record("cam", T0 + 5, [Crossing("door", 1, "in", T0 + 5), Crossing("door", 2, "out", T0 + 5)])
    store.record("cam", T0 + 30, [Crossing("door", 3, "in", T0 + 30)])
    assert close_minutes(store, IDENTITY, {"cam": ["door", "side"]}, now=T0 + 61) == 0  # pipeline not past the minute
    store.record("cam", T0 + 61)
    assert close_minutes(store, IDENTITY, {"cam": ["door", "side"]}, now=T0 + 61) == 1
    assert rows(tmp_path / "a.db", "SELECT line_id, in_count, out_count FROM rollups_minute ORDER BY line_id") == [
        ("door", 2, 1), ("side", 0, 0)
    ]
    (seq, topic, payload), = rows(tmp_path / "a.db", "SELECT seq, topic, payload FROM outbox")
    body = json.loads(payload)
    assert topic == "smartstore/v1/org/store1/box1/rollup/minute"
    assert body["seq"] == seq and body["lines"]["door"] == {"in": 2, "out": 1}
    assert body["id"] == "org/store1/box1/cam/minute/2026-11-25T10:00:00.000Z"
    assert body["start"] == "2026-11-25T10:00:00.000Z" and body["end"] == "2026-11-25T10:01:00.000Z"
    # Later runs close only the next minute (it saw one frame); 10:00 is never queued twice.
    assert close_minutes(store, IDENTITY, {"cam": ["door"]}, now=T0 + 3600) == 1
    assert close_minutes(store, IDENTITY, {"cam": ["door"]}, now=T0 + 7200) == 0
    ids = [row[0] for row in rows(tmp_path / "a.db", "SELECT id FROM outbox ORDER BY seq")]
    assert ids == ["org/store1/box1/cam/minute/2026-11-25T10:00:00.000Z",
                   "org/store1/box1/cam/minute/2026-11-25T10:01:00.000Z"]
    store.close()


def test_silent_camera_closes_after_stale_timeout(tmp_path):
    store = Store(tmp_path / "a.db")
    store.record("cam", T0 + 5, [Crossing("door", 1, "in", T0 + 5)])
    assert close_minutes(store, IDENTITY, {}, now=T0 + 70, stale_after=30) == 0
    assert close_minutes(store, IDENTITY, {}, now=T0 + 91, stale_after=30) == 1
    store.close()


def test_late_event_goes_to_next_open_minute_never_lost(tmp_path):
    store = Store(tmp_path / "a.db")
    store.record("cam", T0 + 5, [Crossing("door", 1, "in", T0 + 5)])
    store.record("cam", T0 + 65)
    close_minutes(store, IDENTITY, {"cam": ["door"]}, now=T0 + 65)
    # A slow frame from 10:00:59 is committed after 10:00 was published.
    store.record("cam", T0 + 59, [Crossing("door", 2, "in", T0 + 59)])
    assert store.late_events == 1
    store.record("cam", T0 + 125)
    close_minutes(store, IDENTITY, {"cam": ["door"]}, now=T0 + 125)
    totals = rows(tmp_path / "a.db", "SELECT minute, in_count FROM rollups_minute ORDER BY minute")
    assert totals == [("2026-11-25T10:00Z", 1), ("2026-11-25T10:01Z", 1)]
    assert sum(n for _, n in totals) == rows(tmp_path / "a.db", "SELECT COUNT(*) FROM events")[0][0]
    store.close()


def test_rolled_state_survives_restart(tmp_path):
    store = Store(tmp_path / "a.db")
    store.record("cam", T0 + 5, [Crossing("door", 1, "in", T0 + 5)])
    store.record("cam", T0 + 65)
    close_minutes(store, IDENTITY, {"cam": ["door"]}, now=T0 + 65)
    store.close()
    reopened = Store(tmp_path / "a.db")
    assert reopened.bucket_for("cam", T0 + 30) == "2026-11-25T10:01Z"
    assert minute_start("2026-11-25T10:01Z") == T0 + 60
    reopened.close()


def test_outbox_ids_unique_and_seq_monotonic(tmp_path):
    store = Store(tmp_path / "a.db")
    with store.transaction() as db:
        first = store.enqueue(db, "m1", "t", {"a": 1})
        duplicate = store.enqueue(db, "m1", "t", {"a": 2})
        second = store.enqueue(db, "m2", "t", {"a": 3})
    assert duplicate is None and second > first
    assert [m.id for m in store.unsent()] == ["m1", "m2"]
    store.mark_sent([first])
    assert [m.id for m in store.unsent()] == ["m2"] and store.pending_count() == 1
    store.close()
