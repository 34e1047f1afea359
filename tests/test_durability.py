"""Storage production grade, on real SQLite files: upgrade from the previous
release, hour/day rollups from the same sections, retention and the disk budget,
export, re-queueing."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.config import StorageConfig
from edge_agent.counting import Crossing
from edge_agent.retention import prune
from edge_agent.rollup import SECTIONS, Identity, close_minutes, close_periods, period_bounds, section
from edge_agent.storage import MIGRATIONS, Store, iso_utc

REPO = Path(__file__).resolve().parent.parent
IDENTITY = Identity("org", "store1", "box1")
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC).timestamp()


def rows(path, sql, params=()):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, params).fetchall()


def test_upgrade_from_the_previous_release_keeps_data(tmp_path):
    path = tmp_path / "agent.db"
    with sqlite3.connect(path) as conn:  # exactly what 0.1.0 left on a box
        conn.executescript((REPO / "tests/data/agent-0.1.0.sql").read_text())
    assert rows(path, "SELECT name FROM schema_migrations") == [("0001_core",)]

    store = Store(path)
    assert store.schema_version == sorted(name for name, _ in MIGRATIONS)
    tables = {r[0] for r in rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"rollups_hour", "rollups_day", "rollup_periods", "sensor_readings", "device_log"} <= tables
    # Data kept: events, the closed minutes, the outbox with its sent/pending state.
    assert rows(path, "SELECT COUNT(*) FROM events") == [(5,)]
    assert [m.id for m in store.unsent()] == ["o1/s1/d1/door/minute/2026-11-25T10:01:00.000Z"]
    assert store.bucket_for("door", T0 + 30) == "2026-11-25T10:02Z"  # 10:00-10:01 stay closed
    # seq continues after the old ones, never reused.
    assert store.last_seq() == 2
    with store.transaction() as db:
        assert store.enqueue(db, "new", "t", {}) == 3
    # The old open minute and the new tables work together: close everything.
    identity = Identity("o1", "s1", "d1")
    assert close_minutes(store, identity, {"door": ["main"]}, now=T0 + 86400 * 2) == 1
    close_periods(store, identity, {"door": ["main"]}, "UTC", now=T0 + 86400 * 2)
    assert rows(path, "SELECT hour, in_count, out_count FROM rollups_hour") == [("2026-11-25T10:00Z", 3, 2)]
    assert rows(path, "SELECT day, in_count, out_count FROM rollups_day") == [("2026-11-25", 3, 2)]
    store.close()


def test_sqlite_settings(tmp_path):
    store = Store(tmp_path / "a.db")
    assert rows(tmp_path / "a.db", "PRAGMA journal_mode") == [("wal",)]
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL on new files
    store.close()
    normal = Store(tmp_path / "b.db", synchronous="NORMAL")
    assert normal.db.execute("PRAGMA synchronous").fetchone()[0] == 1
    normal.close()


def test_record_many_is_one_transaction_with_record_semantics(tmp_path):
    store = Store(tmp_path / "a.db")
    entries = [("cam", T0 + i, [Crossing("door", i, "in", T0 + i)]) for i in range(100)]
    assert store.record_many(entries) == 100
    assert rows(tmp_path / "a.db", "SELECT COUNT(*), MIN(bucket), MAX(bucket) FROM events") == [
        (100, "2026-11-25T10:00Z", "2026-11-25T10:01Z")]
    assert rows(tmp_path / "a.db", "SELECT minute, frames FROM camera_minutes ORDER BY minute") == [
        ("2026-11-25T10:00Z", 60), ("2026-11-25T10:01Z", 40)]
    assert store.watermarks["cam"] == T0 + 99

    class Boom(Exception):
        pass

    def broken():
        yield ("cam", T0 + 200, [Crossing("door", 1, "in", T0 + 200)])
        raise Boom

    with pytest.raises(Boom):
        store.record_many(broken())
    assert rows(tmp_path / "a.db", "SELECT COUNT(*) FROM events") == [(100,)]  # all or nothing
    store.close()


def _fill_day(store, camera="cam", per_minute=2):
    """Two crossings a minute 10:00-12:59, then a frame at 13:00 (closes 12:59)."""
    entries = []
    for m in range(180):
        ts = T0 + m * 60 + 10
        entries.append((camera, ts, [Crossing("door", m * 2 + k, "in" if k == 0 else "out", ts) for k in range(per_minute)]))
    store.record_many(entries)
    store.record(camera, T0 + 3 * 3600 + 1)


def test_hour_and_day_rollups_use_the_same_sections(tmp_path):
    calls = []

    @section("probe")
    def probe(db, window):
        calls.append((window.start, window.end))
        return {"events": db.execute("SELECT COUNT(*) FROM events WHERE camera_id = ? AND bucket >= ? AND bucket < ?",
                                     [window.camera_id, window.start, window.end]).fetchone()[0]}

    try:
        store = Store(tmp_path / "a.db")
        _fill_day(store)
        close_minutes(store, IDENTITY, {"cam": ["door"]}, now=T0 + 3 * 3600 + 1)
        assert close_periods(store, IDENTITY, {"cam": ["door"]}, "UTC", now=T0 + 3 * 3600 + 1) == 3  # 3 hours
        assert ("2026-11-25T10:00Z", "2026-11-25T11:00Z") in calls
        hours = rows(tmp_path / "a.db", "SELECT hour, in_count, out_count FROM rollups_hour ORDER BY hour")
        assert hours == [("2026-11-25T10:00Z", 60, 60), ("2026-11-25T11:00Z", 60, 60), ("2026-11-25T12:00Z", 60, 60)]
        payloads = [json.loads(p) for (p,) in rows(tmp_path / "a.db",
                                                   "SELECT payload FROM outbox WHERE topic LIKE '%/rollup/hour'")]
        assert [p["probe"]["events"] for p in payloads] == [120, 120, 120]
        assert payloads[0]["id"] == "org/store1/box1/cam/hour/2026-11-25T10:00:00.000Z"
        assert payloads[0]["frames"] == 60 and payloads[0]["local_date"] == "2026-11-25"
        # The day is not over (13:00 is still open): no day rollup yet, nothing closes twice.
        assert close_periods(store, IDENTITY, {"cam": ["door"]}, "UTC", now=T0 + 3 * 3600 + 1) == 0
        # The camera goes silent; after the day's end the rest closes by time.
        close_minutes(store, IDENTITY, {"cam": ["door"]}, now=T0 + 86400)
        assert close_periods(store, IDENTITY, {"cam": ["door"]}, "UTC", now=T0 + 86400) == 2  # 13:00 hour + day
        day = json.loads(rows(tmp_path / "a.db", "SELECT payload FROM outbox WHERE topic LIKE '%/rollup/day'")[0][0])
        assert day["lines"] == {"door": {"in": 180, "out": 180}} and day["probe"] == {"events": 360}
        assert day["start"] == "2026-11-25T00:00:00.000Z" and day["end"] == "2026-11-26T00:00:00.000Z"
        # Minutes, hours and the day all add up to the events.
        minute_sum = sum(json.loads(p)["lines"]["door"]["in"] for (p,) in rows(
            tmp_path / "a.db", "SELECT payload FROM outbox WHERE topic LIKE '%/rollup/minute'"))
        hour_sum = rows(tmp_path / "a.db", "SELECT SUM(in_count) FROM rollups_hour")[0][0]
        assert minute_sum == hour_sum == day["lines"]["door"]["in"] == 180
        # A late event for the closed day is accounted after it, never lost nor re-sent.
        store.record("cam", T0 + 3600, [Crossing("door", 9999, "in", T0 + 3600)])
        late = rows(tmp_path / "a.db", "SELECT bucket FROM events WHERE track_id = 9999")[0][0]
        assert late >= "2026-11-26T00:00Z"
        store.close()
    finally:
        SECTIONS.pop("probe", None)


def test_local_time_windows():
    assert period_bounds("2026-11-25T10:37Z", "hour", "Asia/Kolkata") == ("2026-11-25T10:30Z", "2026-11-25T11:30Z")
    assert period_bounds("2026-11-25T10:37Z", "day", "Asia/Shanghai") == ("2026-11-24T16:00Z", "2026-11-25T16:00Z")
    # A DST day has 23 hours.
    assert period_bounds("2026-03-29T10:00Z", "day", "Europe/Berlin") == ("2026-03-28T23:00Z", "2026-03-29T22:00Z")


def budget(tmp_path, mb: float) -> StorageConfig:
    """A config with a budget below the validated minimum (8 MB), for small test files."""
    return StorageConfig(path=tmp_path / "a.db").model_copy(update={"disk_budget_mb": mb, "min_free_disk_mb": 0})


def _outbox_fill(store, n, sent, start_ts=T0, payload_bytes=400):
    with store.transaction() as db:
        seqs = [store.enqueue(db, f"m{start_ts}-{i}", "t/rollup/minute", {"pad": "x" * payload_bytes}) for i in range(n)]
        if sent:
            db.conn.executemany("UPDATE outbox SET sent_at = ?, created_at = ? WHERE seq = ?",
                                [(iso_utc(start_ts + 1), iso_utc(start_ts), s) for s in seqs])
    return seqs


def test_retention_by_age_removes_only_what_moved_on(tmp_path):
    store = Store(tmp_path / "a.db")
    now = T0 + 40 * 86400
    _fill_day(store)  # events on day 0, closed below
    close_minutes(store, IDENTITY, {}, now=T0 + 86400)
    close_periods(store, IDENTITY, {}, "UTC", now=T0 + 86400)
    store.record("cam2", T0 + 60, [Crossing("door", 1, "in", T0 + 60)])  # never rolled (camera has no closed day)
    old_sent = _outbox_fill(store, 10, sent=True)
    _outbox_fill(store, 5, sent=False, start_ts=T0 + 1)
    with store.transaction() as db:
        db.execute("UPDATE outbox SET created_at = ? WHERE sent_at IS NULL", [iso_utc(T0)])
        db.execute("INSERT INTO sensor_readings (node_id, ts, kind, value) VALUES ('beam1', ?, 'beam_in', 1)", [T0])
        db.execute("INSERT INTO sensor_readings (node_id, ts, kind, value) VALUES ('beam1', ?, 'beam_in', 1)", [now])
    store.mark_sent(range(1, old_sent[0]))  # the rollups of day 0 were sent
    report = prune(store, StorageConfig(path=tmp_path / "a.db"), now=now)
    assert report.by_age["events"] == 360  # cam's day is closed and older than 7 days
    assert rows(tmp_path / "a.db", "SELECT camera_id, COUNT(*) FROM events GROUP BY camera_id") == [("cam2", 1)]
    assert rows(tmp_path / "a.db", "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL") == [(5,)]  # never by age
    assert rows(tmp_path / "a.db", "SELECT COUNT(*) FROM sensor_readings") == [(1,)]
    assert rows(tmp_path / "a.db", "SELECT COUNT(*) FROM rollups_minute") == [(0,)]  # 30 days
    assert rows(tmp_path / "a.db", "SELECT COUNT(*) FROM rollups_hour") == [(3,)]  # kept forever by default
    assert rows(tmp_path / "a.db", "SELECT granularity, COUNT(*) FROM rollup_periods GROUP BY 1 ORDER BY 1") == [
        ("day", 1), ("hour", 4)]
    assert report.dropped_unsent == {} and store.counters().get("dropped_unsent_messages", 0) == 0
    # The newest rolled minute of a camera stays: later events still go after it.
    assert store.bucket_for("cam", T0) > "2026-11-25T23:59Z"
    store.close()
    reopened = Store(tmp_path / "a.db")
    assert reopened.bucket_for("cam", T0) > "2026-11-25T23:59Z"
    reopened.close()


def test_disk_budget_prunes_sent_first_and_counts_unsent_drops(tmp_path):
    store = Store(tmp_path / "a.db")
    sent = _outbox_fill(store, 3000, sent=True, payload_bytes=1000)
    unsent = _outbox_fill(store, 3000, sent=False, start_ts=T0 + 10, payload_bytes=1000)
    used = store.size()["used_bytes"]
    assert used > 6_000_000
    # Budget between "unsent only" and "everything": only sent messages go, oldest first.
    config = budget(tmp_path, used * 0.7 / 1024 / 1024)
    report = prune(store, config, now=T0 + 3600)
    assert report.for_space.get("outbox", 0) > 0 and report.dropped_unsent == {}
    remaining = [r[0] for r in rows(tmp_path / "a.db", "SELECT seq FROM outbox WHERE sent_at IS NOT NULL ORDER BY seq")]
    assert 0 < len(remaining) < len(sent) and remaining == sent[len(sent) - len(remaining):]  # the oldest went
    assert store.pending_count() == 3000
    assert store.size()["used_bytes"] <= config.disk_budget_mb * 1024 * 1024 * 0.9
    assert rows(tmp_path / "a.db", "PRAGMA freelist_count")[0][0] < 50  # pages given back (incremental vacuum)

    # A budget that unsent data alone exceeds: sent data all gone, then the oldest unsent, counted.
    report = prune(store, budget(tmp_path, 2.0), now=T0 + 3600)
    left = [r[0] for r in rows(tmp_path / "a.db", "SELECT seq FROM outbox ORDER BY seq")]
    dropped = [s for s in unsent if s not in left]
    assert rows(tmp_path / "a.db", "SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL") == [(0,)]
    assert dropped == unsent[:len(dropped)] and left == unsent[len(dropped):]  # oldest unsent first
    assert report.dropped_unsent["outbox"] == len(dropped) > 0
    assert store.counters()["dropped_unsent_messages"] == len(dropped)
    assert store.size()["used_bytes"] <= 2.0 * 1024 * 1024
    logged = rows(tmp_path / "a.db", "SELECT level, detail FROM device_log WHERE event LIKE 'dropped unsent%'")
    assert sum(json.loads(d)["count"] for _, d in logged) == len(dropped) and {l for l, _ in logged} == {"error"}
    store.close()


def test_disk_budget_prefers_summarised_events_to_unsent_messages(tmp_path):
    store = Store(tmp_path / "a.db")
    for day in range(3):
        entries = [("cam", T0 + day * 86400 + i, [Crossing("door", i, "in", T0 + day * 86400 + i)]) for i in range(3000)]
        store.record_many(entries)
    close_minutes(store, IDENTITY, {}, now=T0 + 4 * 86400)
    close_periods(store, IDENTITY, {}, "UTC", now=T0 + 4 * 86400)
    pending = store.pending_count()
    used = store.size()["used_bytes"]
    config = budget(tmp_path, used * 0.6 / 1024 / 1024)
    report = prune(store, config, now=T0 + 4 * 86400)
    assert report.for_space.get("events", 0) > 0 and report.dropped_unsent == {}
    assert store.pending_count() == pending  # every rollup message still queued
    oldest = rows(tmp_path / "a.db", "SELECT MIN(ts) FROM events")[0][0]
    assert oldest > iso_utc(T0)  # the oldest events went first
    store.close()


def test_requeue_by_time_and_seq(tmp_path):
    store = Store(tmp_path / "a.db")
    _fill_day(store)
    close_minutes(store, IDENTITY, {"cam": ["door"]}, now=T0 + 3 * 3600 + 1)
    store.mark_sent(range(1, store.last_seq() + 1))
    result = store.requeue(since="2026-11-25T10:05:00.000Z", until="2026-11-25T10:10:00.000Z",
                           topic_suffixes=["rollup/minute"])
    assert result["requeued"] == 5
    assert [json.loads(m.payload)["start"] for m in store.unsent()] == [
        f"2026-11-25T10:0{i}:00.000Z" for i in range(5, 10)]
    store.mark_sent([m.seq for m in store.unsent()])
    result = store.requeue(from_seq=3, to_seq=4)
    assert result["requeued"] == 2 and result["not_on_device"] == 0
    with store.transaction() as db:
        db.execute("DELETE FROM outbox WHERE seq = 10")
    assert store.requeue(from_seq=9, to_seq=11)["not_on_device"] == 1
    store.close()


def test_export_csv_and_jsonl(tmp_path):
    store = Store(tmp_path / "a.db")
    _fill_day(store)
    store.log("connected", source="uplink", broker="x")
    store.close()
    from click.testing import CliRunner

    from edge_agent.cli import main

    def run(*args):
        result = CliRunner().invoke(main, ["export", "--db", str(tmp_path / "a.db"), *args])
        result.returncode = result.exit_code
        return result

    result = run("--from", "2026-11-25T10:00Z", "--to", "2026-11-25T10:30Z", "--format", "csv")
    assert result.returncode == 0, result.stderr
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(table) == 60 and table[0]["ts"] == "2026-11-25T10:00:10.000Z" and table[0]["camera_id"] == "cam"
    assert "exported 60 rows of events" in result.stderr
    # Store-local times: 18:00 in Shanghai is 10:00 UTC.
    local = run("--from", "2026-11-25T18:00", "--to", "2026-11-25T18:30", "--tz", "Asia/Shanghai")
    assert local.stdout == result.stdout
    jsonl = run("--table", "device_log", "--format", "jsonl")
    (line,) = jsonl.stdout.splitlines()
    record = json.loads(line)
    assert record["event"] == "connected" and record["detail"] == {"broker": "x"} and record["ts"].endswith("Z")
    empty = run("--table", "rollups_hour", "--from", "2030-01-01")
    assert empty.returncode == 0 and empty.stdout.strip() == "camera_id,hour,line_id,in_count,out_count"
    bad = run("--from", "yesterday")
    assert bad.returncode == 2 and "2026-11-25" in bad.stderr and "Traceback" not in bad.stderr
