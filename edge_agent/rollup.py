"""Minute rollups: closed minutes of committed events → rollup rows + outbox messages.

A camera's minute closes once its pipeline has processed a frame after the
minute's end (its watermark), or once the camera has been silent for
``stale_after`` seconds. Closing writes the rollup, queues its MQTT message and
marks the minute rolled in one transaction; events that arrive later for a
rolled minute are accounted in the next open minute (see ``Store.bucket_for``),
so nothing is counted twice or lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlite_utils

from .storage import MINUTE_FORMAT, Store, iso_utc, minute_of, minute_start, next_minute

log = logging.getLogger(__name__)

ROLLUP_SCHEMA = "smartstore.rollup/1"


@dataclass(frozen=True)
class Window:
    """What a rollup covers: one camera, buckets ``start`` ≤ b < ``end`` (minute strings)."""

    camera_id: str
    start: str  # first minute, e.g. 2026-11-25T10:00Z
    end: str  # first minute after the window
    lines: tuple[str, ...] = ()


# A section adds one key to every rollup payload (minute, hour, day): a pure read
# of committed rows over a window, so coarser rollups reuse it unchanged.
# Features register theirs (issue 8: zones, occupancy, dwell; issue 5: sensors).
Section = Callable[[sqlite_utils.Database, Window], object]
SECTIONS: dict[str, Section] = {}


def section(name: str) -> Callable[[Section], Section]:
    def register(func: Section) -> Section:
        SECTIONS[name] = func
        return func

    return register


def count_crossings(db: sqlite_utils.Database, window: Window, kind: str,
                    lines: Sequence[str] = ()) -> dict[str, dict[str, int]]:
    """In/out per line of ``kind`` crossings ('visitor' or 'staff') in the window; ``lines``
    are listed even when nobody crossed them."""
    counts = {line_id: {"in": 0, "out": 0} for line_id in lines}
    for line_id, direction, count in db.execute(
        "SELECT line_id, direction, COUNT(*) FROM events WHERE camera_id = ? AND bucket >= ? AND bucket < ? "
        "AND kind = ? GROUP BY line_id, direction",
        [window.camera_id, window.start, window.end, kind],
    ).fetchall():
        counts.setdefault(line_id, {"in": 0, "out": 0})[direction] = count
    return counts


@section("lines")
def line_counts(db: sqlite_utils.Database, window: Window) -> dict:
    return count_crossings(db, window, "visitor", window.lines)


@dataclass(frozen=True)
class Identity:
    """Who is sending: goes into every topic and payload."""

    org: str
    store: str
    device: str
    topic_prefix: str = "smartstore/v1"

    @property
    def base_topic(self) -> str:
        return f"{self.topic_prefix}/{self.org}/{self.store}/{self.device}"

    def topic(self, suffix: str) -> str:
        return f"{self.base_topic}/{suffix}"


def rollup_message_id(identity: Identity, camera_id: str, granularity: str, start: str) -> str:
    """Stable across re-sends and restarts: HQ de-duplicates on it."""
    return f"{identity.org}/{identity.store}/{identity.device}/{camera_id}/{granularity}/{start}"


def close_minutes(
    store: Store,
    identity: Identity,
    lines_by_camera: Mapping[str, Sequence[str]],
    now: float | None = None,
    stale_after: float = 30.0,
) -> int:
    """Roll up every closable minute; returns how many camera-minutes were closed."""
    now = time.time() if now is None else now
    closed = 0
    with store.transaction() as db:
        store._flush_frames(db)  # frame counts batched so far belong to the minutes about to close
        open_minutes = db.execute(
            "SELECT camera_id, minute, frames FROM camera_minutes WHERE rolled = 0 ORDER BY camera_id, minute"
        ).fetchall()
        for camera_id, minute, frames in open_minutes:
            end = minute_start(next_minute(minute))
            caught_up = store.watermarks.get(camera_id, 0.0) >= end
            silent = now - stale_after >= end
            if not (caught_up or silent):
                continue
            window = Window(camera_id, minute, next_minute(minute), tuple(lines_by_camera.get(camera_id, ())))
            sections = {name: collect(db, window) for name, collect in SECTIONS.items()}
            counts = sections["lines"]
            db.conn.executemany(
                "INSERT OR REPLACE INTO rollups_minute (camera_id, minute, line_id, in_count, out_count) "
                "VALUES (?, ?, ?, ?, ?)",
                [(camera_id, minute, line_id, c["in"], c["out"]) for line_id, c in counts.items()],
            )
            start_iso = iso_utc(minute_start(minute))
            payload = {
                "schema": ROLLUP_SCHEMA,
                "id": rollup_message_id(identity, camera_id, "minute", start_iso),
                "org": identity.org,
                "store": identity.store,
                "device": identity.device,
                "camera": camera_id,
                "granularity": "minute",
                "start": start_iso,
                "end": iso_utc(end),
                "frames": frames,
                **sections,
            }
            store.enqueue(db, payload["id"], identity.topic("rollup/minute"), payload, qos=1)
            store.mark_rolled(db, camera_id, minute)
            closed += 1
    if closed:
        log.debug("closed %d camera-minutes", closed)
    return closed


# -- hours and days -------------------------------------------------------------
# Windows follow the store's local clock (config ``timezone``): an hour is a local
# hour, a day a local calendar day (23 or 25 hours on DST changes). Window bounds
# are UTC minute strings, so sections read them exactly like minute windows.

def period_bounds(minute: str, granularity: str, timezone: str) -> tuple[str, str]:
    """The local hour or day holding ``minute`` → (first minute, first minute after), UTC."""
    tz = ZoneInfo(timezone)
    local = datetime.strptime(minute, MINUTE_FORMAT).replace(tzinfo=UTC).astimezone(tz)
    if granularity == "hour":
        start = local.replace(minute=0, second=0, microsecond=0).timestamp()
        end = start + 3600  # a real hour, also across a DST change
    elif granularity == "day":
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        start = midnight.replace(tzinfo=tz).timestamp()
        end = (midnight + timedelta(days=1)).replace(tzinfo=tz).timestamp()
    else:
        raise ValueError(f"unknown granularity {granularity!r}")
    return minute_of(start), minute_of(end)


def previous_minute(minute: str) -> str:
    return (datetime.strptime(minute, MINUTE_FORMAT) - timedelta(minutes=1)).strftime(MINUTE_FORMAT)


def close_periods(
    store: Store,
    identity: Identity,
    lines_by_camera: Mapping[str, Sequence[str]],
    timezone: str = "UTC",
    now: float | None = None,
    stale_after: float = 30.0,
) -> int:
    """Close every finished hour, then every finished day, for every camera.

    A window closes once all its minutes are rolled up and the camera's closed
    minutes reach its last minute (or the camera has been silent past its end;
    then the window is sealed so later events go after it). Its payload is built
    by the same SECTIONS as a minute's, over the whole window, and written with
    its outbox message and its ``rollup_periods`` row in one transaction.
    Returns how many windows were closed.
    """
    now = time.time() if now is None else now
    closed = 0
    for granularity in ("hour", "day"):
        closed += _close_windows(store, identity, lines_by_camera, granularity, timezone, now, stale_after)
    if closed:
        log.debug("closed %d hour/day windows", closed)
    return closed


def _close_windows(store: Store, identity: Identity, lines_by_camera: Mapping[str, Sequence[str]],
                   granularity: str, timezone: str, now: float, stale_after: float) -> int:
    closed = 0
    with store.transaction() as db:
        for camera_id in store.rolled_cameras():
            last_end = db.execute(
                "SELECT MAX(end) FROM rollup_periods WHERE granularity = ? AND camera_id = ?", [granularity, camera_id]
            ).fetchone()[0] or ""
            cursor = last_end
            while True:  # windows close in order; each step reads one row
                first = db.execute(
                    "SELECT minute FROM camera_minutes WHERE camera_id = ? AND minute >= ? AND rolled = 1 "
                    "ORDER BY minute LIMIT 1", [camera_id, cursor]).fetchone()
                if first is None:
                    break
                start, end = period_bounds(first[0], granularity, timezone)
                start = max(start, cursor)  # never overlap the previous window (e.g. after a time zone change)
                last_minute = previous_minute(end)
                rolled_until = store.rolled_until(camera_id) or ""
                if rolled_until < last_minute:
                    silent = now - stale_after >= minute_start(end)
                    still_open = db.execute(
                        "SELECT COUNT(*) FROM camera_minutes WHERE camera_id = ? AND minute >= ? AND minute < ? "
                        "AND rolled = 0", [camera_id, start, end]).fetchone()[0]
                    if not silent or still_open:
                        break
                    store.close_through(db, camera_id, last_minute)
                _write_window(store, db, identity, lines_by_camera, granularity, camera_id, start, end, timezone)
                closed += 1
                cursor = end
    return closed


def _write_window(store: Store, db: sqlite_utils.Database, identity: Identity,
                  lines_by_camera: Mapping[str, Sequence[str]], granularity: str, camera_id: str,
                  start: str, end: str, timezone: str) -> None:
    window = Window(camera_id, start, end, tuple(lines_by_camera.get(camera_id, ())))
    sections = {name: collect(db, window) for name, collect in SECTIONS.items()}
    frames = db.execute(
        "SELECT COALESCE(SUM(frames), 0) FROM camera_minutes WHERE camera_id = ? AND minute >= ? AND minute < ?",
        [camera_id, start, end],
    ).fetchone()[0]
    start_iso, end_iso = iso_utc(minute_start(start)), iso_utc(minute_start(end))
    counts = sections["lines"]
    if granularity == "hour":
        db.conn.executemany(
            "INSERT OR REPLACE INTO rollups_hour (camera_id, hour, line_id, in_count, out_count) VALUES (?, ?, ?, ?, ?)",
            [(camera_id, start, line_id, c["in"], c["out"]) for line_id, c in counts.items()],
        )
    local_day = datetime.fromtimestamp(minute_start(start), ZoneInfo(timezone)).date().isoformat()
    if granularity == "day":
        db.conn.executemany(
            "INSERT OR REPLACE INTO rollups_day (camera_id, day, start, line_id, in_count, out_count) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(camera_id, local_day, start, line_id, c["in"], c["out"]) for line_id, c in counts.items()],
        )
    payload = {
        "schema": ROLLUP_SCHEMA,
        "id": rollup_message_id(identity, camera_id, granularity, start_iso),
        "org": identity.org,
        "store": identity.store,
        "device": identity.device,
        "camera": camera_id,
        "granularity": granularity,
        "start": start_iso,
        "end": end_iso,
        "timezone": timezone,
        "local_date": local_day,
        "frames": frames,
        **sections,
    }
    store.enqueue(db, payload["id"], identity.topic(f"rollup/{granularity}"), payload, qos=1)
    db.execute(
        "INSERT INTO rollup_periods (granularity, camera_id, start, end, frames, message_id, closed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [granularity, camera_id, start, end, frames, payload["id"], iso_utc(time.time())],
    )
# Store analytics sections (occupancy, zones, shelves, heatmap, staff) register themselves.
from .analytics import sections as _analytics_sections  # noqa: E402,F401
