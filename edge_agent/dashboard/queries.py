"""Read-side queries behind the dashboard and its JSON API (no HTTP here)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlite_utils

from ..storage import iso_utc, minute_of


def local_day_start(now: float, timezone: str) -> float:
    """Epoch seconds of today's local midnight in the store's time zone."""
    local = datetime.fromtimestamp(now, ZoneInfo(timezone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def today_counts(db: sqlite_utils.Database, now: float, timezone: str) -> dict:
    since = iso_utc(local_day_start(now, timezone))
    rows = db.execute(
        "SELECT camera_id, line_id, direction, COUNT(*) FROM events WHERE ts >= ? AND kind = 'visitor' "
        "GROUP BY camera_id, line_id, direction ORDER BY camera_id, line_id",
        [since],
    ).fetchall()
    lines: dict[tuple[str, str], dict] = {}
    for camera_id, line_id, direction, count in rows:
        entry = lines.setdefault((camera_id, line_id), {"camera": camera_id, "line": line_id, "in": 0, "out": 0})
        entry[direction] = count
    total_in = sum(entry["in"] for entry in lines.values())
    total_out = sum(entry["out"] for entry in lines.values())
    return {
        "since": since,
        "in": total_in,
        "out": total_out,
        "occupancy": max(0, total_in - total_out),
        "lines": list(lines.values()),
    }


def recent_minutes(db: sqlite_utils.Database, now: float, minutes: int = 30) -> list[dict]:
    """In/out per minute over the last ``minutes`` minutes, zero-filled."""
    first = minute_of(now - (minutes - 1) * 60)
    rows = db.execute(
        "SELECT substr(ts, 1, 16) || 'Z' AS minute, direction, COUNT(*) FROM events "
        "WHERE ts >= ? AND kind = 'visitor' GROUP BY minute, direction",
        [first[:-1]],
    ).fetchall()
    counts: dict[str, dict] = {}
    for minute, direction, count in rows:
        counts.setdefault(minute, {"in": 0, "out": 0})[direction] = count
    start = datetime.strptime(first, "%Y-%m-%dT%H:%MZ")
    series = []
    for step in range(minutes):
        minute = (start + timedelta(minutes=step)).strftime("%Y-%m-%dT%H:%MZ")
        series.append({"minute": minute, **counts.get(minute, {"in": 0, "out": 0})})
    return series
