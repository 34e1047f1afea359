"""Retention and the disk budget: what may leave the box's database, and in which order.

Two passes, run by the ``storage`` job:

1. **Age.** Each table keeps its rows ``storage.retention.<table>`` days. Only
   rows whose content has already moved on are removed this way: raw events
   and zone visits once the camera's *day* rollup covering them is closed,
   outbox messages once sent. Unsent messages are never removed by age.
2. **Budget.** If the database uses more than ``storage.disk_budget_mb`` (or the
   file system has less than ``storage.min_free_disk_mb`` free), rows are
   removed oldest first among data that is already *sent* (sent outbox
   messages; raw rows already summarised into closed day rollups; old device
   log) until it is back under 90 % of the budget. Only if that is not enough,
   the oldest *unsent* outbox messages and then not-yet-summarised events are
   dropped, and every dropped row is counted (``meta`` counters, the device
   log, health messages). Nothing is dropped silently.

Deletes go in small chunks, each its own transaction, so the pipeline's
writes wait milliseconds, not seconds.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field

from .config import StorageConfig
from .storage import Store, iso_utc, minute_of, minute_start

log = logging.getLogger(__name__)

CHUNK = 2000  # rows per delete when pruning by age
SPACE_CHUNK = 500  # rows per delete when making room (re-measured after each)
UNSENT_CHUNK = 200
KEEP_DEVICE_LOG_ROWS = 1000
LOW_WATER = 0.9  # prune down to this share of the budget


@dataclass
class PruneReport:
    by_age: dict[str, int] = field(default_factory=dict)
    for_space: dict[str, int] = field(default_factory=dict)
    dropped_unsent: dict[str, int] = field(default_factory=dict)
    used_bytes_before: int = 0
    used_bytes_after: int = 0
    budget_bytes: int = 0
    free_disk_bytes: int | None = None
    over_budget: bool = False  # still over after everything allowed was removed

    @property
    def total(self) -> int:
        return sum(self.by_age.values()) + sum(self.for_space.values()) + sum(self.dropped_unsent.values())


def _delete(store: Store, table: str, where: str, params: list, order: str, limit: int) -> int:
    with store.transaction() as db:
        cursor = db.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {where} ORDER BY {order} LIMIT ?)",
            [*params, limit],
        )
        return cursor.rowcount


def _delete_all(store: Store, table: str, where: str, params: list, order: str = "rowid") -> int:
    total = 0
    while True:
        removed = _delete(store, table, where, params, order, CHUNK)
        total += removed
        if removed < CHUNK:
            return total


def day_horizons(store: Store) -> dict[str, str]:
    """Per camera: the first minute NOT yet covered by a closed day rollup.
    Raw rows before it have reached every rollup (minute, hour, day)."""
    with store.lock:
        return dict(store.db.execute(
            "SELECT camera_id, MAX(end) FROM rollup_periods WHERE granularity = 'day' GROUP BY camera_id"
        ).fetchall())


def _sensor_horizon(horizons: dict[str, str], now: float) -> float:
    # Readings are summarised by sections at rollup time; with cameras, the oldest
    # closed day of any camera bounds them; a sensor-only box keeps two days.
    if horizons:
        return minute_start(min(horizons.values()))
    return now - 2 * 86400


def prune_by_age(store: Store, config: StorageConfig, now: float) -> dict[str, int]:
    days = config.retention
    removed: dict[str, int] = {}

    def cutoff(d: float) -> float:
        return now - d * 86400

    horizons = day_horizons(store)
    for camera_id, horizon in horizons.items():
        n = _delete_all(store, "events", "camera_id = ? AND ts < ? AND bucket < ?",
                        [camera_id, iso_utc(cutoff(days.events)), horizon])
        removed["events"] = removed.get("events", 0) + n
        n = _delete_all(store, "zone_visits", "camera_id = ? AND enter_ts < ? AND COALESCE(exit_ts, enter_ts) < ?",
                        [camera_id, cutoff(days.zone_visits), minute_start(horizon)])
        removed["zone_visits"] = removed.get("zone_visits", 0) + n
        # Bookkeeping rows of closed minutes; the newest rolled one stays (it marks
        # where later events are accounted).
        n = _delete_all(store, "camera_minutes",
                        "camera_id = ? AND rolled >= 1 AND minute < ? AND minute < ? AND minute < "
                        "(SELECT MAX(minute) FROM camera_minutes WHERE camera_id = ? AND rolled >= 1)",
                        [camera_id, minute_of(cutoff(days.rollups_minute)), horizon, camera_id])
        removed["camera_minutes"] = removed.get("camera_minutes", 0) + n
    removed["sensor_readings"] = _delete_all(store, "sensor_readings", "ts < ?", [cutoff(days.sensor_readings)])
    removed["rollups_minute"] = _delete_all(store, "rollups_minute", "minute < ?",
                                            [minute_of(cutoff(days.rollups_minute))])
    if days.rollups_hour is not None:
        removed["rollups_hour"] = _delete_all(store, "rollups_hour", "hour < ?", [minute_of(cutoff(days.rollups_hour))])
    if days.rollups_day is not None:
        removed["rollups_day"] = _delete_all(store, "rollups_day", "start < ?", [minute_of(cutoff(days.rollups_day))])
    removed["outbox"] = _delete_all(store, "outbox", "sent_at IS NOT NULL AND created_at < ?",
                                    [iso_utc(cutoff(days.outbox_sent))], order="seq")
    removed["device_log"] = _delete_all(store, "device_log", "ts < ?", [cutoff(days.device_log)])
    return {table: n for table, n in removed.items() if n}


@dataclass
class _Candidate:
    table: str
    where: str
    params: list
    order: str
    oldest_sql: str  # returns the oldest row's time as ISO text


def _sent_candidates(store: Store, now: float) -> list[_Candidate]:
    """Data whose content is already at HQ or in closed rollups, per table."""
    horizons = day_horizons(store)
    candidates = [
        _Candidate("outbox", "sent_at IS NOT NULL", [], "seq",
                   "SELECT created_at FROM outbox WHERE sent_at IS NOT NULL ORDER BY seq LIMIT 1"),
        _Candidate("device_log", f"id <= (SELECT MAX(id) FROM device_log) - {KEEP_DEVICE_LOG_ROWS}", [], "id",
                   f"SELECT ts FROM device_log WHERE id <= (SELECT MAX(id) FROM device_log) - {KEEP_DEVICE_LOG_ROWS} "
                   "ORDER BY id LIMIT 1"),
    ]
    sensor_horizon = _sensor_horizon(horizons, now)
    candidates.append(_Candidate("sensor_readings", "ts < ?", [sensor_horizon], "ts",
                                 f"SELECT MIN(ts) FROM sensor_readings WHERE ts < {sensor_horizon!r}"))
    for camera_id, horizon in horizons.items():
        candidates.append(_Candidate("events", "camera_id = ? AND bucket < ?", [camera_id, horizon], "ts",
                                     "SELECT MIN(ts) FROM events WHERE camera_id = ? AND bucket < ?"))
        candidates.append(_Candidate("zone_visits", "camera_id = ? AND COALESCE(exit_ts, enter_ts) < ?",
                                     [camera_id, minute_start(horizon)], "enter_ts",
                                     "SELECT MIN(enter_ts) FROM zone_visits WHERE camera_id = ? "
                                     "AND COALESCE(exit_ts, enter_ts) < ?"))
        candidates.append(_Candidate("rollups_minute", "camera_id = ? AND minute < ?", [camera_id, horizon], "minute",
                                     "SELECT MIN(minute) FROM rollups_minute WHERE camera_id = ? AND minute < ?"))
    return candidates


def _oldest(store: Store, candidate: _Candidate) -> str | None:
    params = candidate.params if "?" in candidate.oldest_sql else []
    with store.lock:
        value = store.db.execute(candidate.oldest_sql, params).fetchone()
    if value is None or value[0] is None:
        return None
    value = value[0]
    if isinstance(value, (int, float)):
        return iso_utc(value)
    if value.endswith("Z") and len(value) == 17:  # a minute string
        return iso_utc(minute_start(value))
    return value


def free_disk_bytes(store: Store) -> int | None:
    try:
        return shutil.disk_usage(store.path.parent).free
    except OSError:
        return None


def prune(store: Store, config: StorageConfig, now: float | None = None) -> PruneReport:
    """Run both passes; returns what was removed and whether the budget is met."""
    now = time.time() if now is None else now
    report = PruneReport(budget_bytes=int(config.disk_budget_mb * 1024 * 1024))
    report.used_bytes_before = store.size()["used_bytes"]
    report.by_age = prune_by_age(store, config, now)

    used = store.size()["used_bytes"]
    free = free_disk_bytes(store)
    min_free = int(config.min_free_disk_mb * 1024 * 1024)
    need = used - int(report.budget_bytes * LOW_WATER) if used > report.budget_bytes else 0
    if free is not None and free < min_free:
        need = max(need, min_free - free + int(report.budget_bytes * (1 - LOW_WATER)))
    if need > 0:
        target = used - need
        report.for_space = _free_sent(store, now, target)
        if store.size()["used_bytes"] > target:
            report.dropped_unsent = _drop_unsent(store, target)
        report.over_budget = store.size()["used_bytes"] > target
    if report.total:
        _give_back_pages(store)
    report.used_bytes_after = store.size()["used_bytes"]
    report.free_disk_bytes = free_disk_bytes(store)
    _record(store, report)
    return report


def _free_sent(store: Store, now: float, target: int) -> dict[str, int]:
    removed: dict[str, int] = {}
    candidates = _sent_candidates(store, now)
    while store.size()["used_bytes"] > target:
        oldest = [(when, c) for c in candidates if (when := _oldest(store, c)) is not None]
        if not oldest:
            break
        _, candidate = min(oldest, key=lambda item: item[0])
        n = _delete(store, candidate.table, candidate.where, candidate.params, candidate.order, SPACE_CHUNK)
        if n == 0:
            candidates.remove(candidate)
            continue
        removed[candidate.table] = removed.get(candidate.table, 0) + n
    return removed


def _drop_unsent(store: Store, target: int) -> dict[str, int]:
    """The last resort: oldest unsent messages, then raw events not yet in a closed day."""
    dropped: dict[str, int] = {}
    while store.size()["used_bytes"] > target:
        with store.transaction() as db:
            rows = db.execute("SELECT seq, id FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
                              [UNSENT_CHUNK]).fetchall()
            if not rows:
                break
            db.execute("DELETE FROM outbox WHERE sent_at IS NULL AND seq <= ?", [rows[-1][0]])
            store.bump(db, "dropped_unsent_messages", len(rows))
            store.log("dropped unsent messages (disk budget)", level="error", source="storage", db=db,
                      count=len(rows), first_seq=rows[0][0], last_seq=rows[-1][0],
                      first_id=rows[0][1], last_id=rows[-1][1])
        dropped["outbox"] = dropped.get("outbox", 0) + len(rows)
    while store.size()["used_bytes"] > target:
        with store.transaction() as db:
            rows = db.execute("SELECT id, ts FROM events ORDER BY ts LIMIT ?", [SPACE_CHUNK]).fetchall()
            if not rows:
                break
            db.conn.executemany("DELETE FROM events WHERE id = ?", [(row[0],) for row in rows])
            store.bump(db, "dropped_unsummarised_events", len(rows))
            store.log("dropped events not yet in a closed day rollup (disk budget)", level="error",
                      source="storage", db=db, count=len(rows), first_ts=rows[0][1], last_ts=rows[-1][1])
        dropped["events"] = dropped.get("events", 0) + len(rows)
    if dropped:
        log.error("disk budget: dropped unsent data %s", dropped)
    return dropped


def _give_back_pages(store: Store) -> None:
    with store.lock:
        if store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:  # INCREMENTAL (new files)
            # executescript steps the pragma to the end (execute() frees one page per step).
            store.db.conn.executescript("PRAGMA incremental_vacuum;")


def _record(store: Store, report: PruneReport) -> None:
    if not (report.total or report.over_budget):
        return
    with store.transaction() as db:
        for table, n in report.by_age.items():
            store.bump(db, f"pruned_by_age.{table}", n)
        for table, n in report.for_space.items():
            store.bump(db, f"pruned_for_space.{table}", n)
        level = "error" if report.dropped_unsent or report.over_budget else (
            "warning" if report.for_space else "info")
        store.log("pruned", level=level, source="storage", db=db, by_age=report.by_age,
                  for_space=report.for_space, dropped_unsent=report.dropped_unsent,
                  used_bytes=report.used_bytes_after or store.size()["used_bytes"],
                  budget_bytes=report.budget_bytes, over_budget=report.over_budget)
    if report.for_space:
        log.warning("disk budget: removed sent data %s", report.for_space)


def storage_status(store: Store, config: StorageConfig) -> dict:
    """What the Health page and health messages show about storage."""
    size = store.size()
    counters = store.counters()
    with store.lock:
        oldest_event = store.db.execute("SELECT MIN(ts) FROM events").fetchone()[0]
        oldest_unsent = store.db.execute(
            "SELECT created_at FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT 1").fetchone()
    budget = int(config.disk_budget_mb * 1024 * 1024)
    return {
        "used_bytes": size["used_bytes"],
        "file_bytes": size["file_bytes"],
        "budget_bytes": budget,
        "budget_used": round(size["used_bytes"] / budget, 4),
        "free_disk_bytes": free_disk_bytes(store),
        "oldest_event": oldest_event,
        "oldest_unsent": oldest_unsent[0] if oldest_unsent else None,
        "dropped_unsent_messages": counters.get("dropped_unsent_messages", 0),
        "dropped_unsummarised_events": counters.get("dropped_unsummarised_events", 0),
        "pruned_for_space": {k.removeprefix("pruned_for_space."): v for k, v in counters.items()
                             if k.startswith("pruned_for_space.")},
    }
