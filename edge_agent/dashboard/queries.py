"""Read-side queries behind the dashboard and its JSON API (no HTTP here).

Times in SQLite are UTC; everything a manager sees is bucketed in the store's
local time zone (``config.timezone``): hours and days are local hours and days.
Only ``kind = 'visitor'`` rows count as visitors (staff are kept apart).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import sqlite_utils

from ..storage import next_minute, iso_utc, minute_of

Granularity = Literal["hour", "day"]

# Dwell histogram bin edges (seconds); the last bin is open-ended.
DWELL_BINS = [0, 5, 15, 30, 60, 120, 300]


def local_day_start(now: float, timezone: str) -> float:
    """Epoch seconds of today's local midnight in the store's time zone."""
    local = datetime.fromtimestamp(now, ZoneInfo(timezone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def day_bounds(day: date, timezone: str) -> tuple[float, float]:
    """[local midnight, next local midnight) of ``day`` as epoch seconds."""
    zone = ZoneInfo(timezone)
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return start.timestamp(), end.timestamp()


# Lines whose crossings are not store visits (an inner door, an aisle line): their
# counts show per line but stay out of the store totals. (camera id, line id) pairs.
Excluded = frozenset[tuple[str, str]] | set[tuple[str, str]]


def today_counts(db: sqlite_utils.Database, now: float, timezone: str, exclude: Excluded = frozenset()) -> dict:
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
    total_in = sum(entry["in"] for key, entry in lines.items() if key not in exclude)
    total_out = sum(entry["out"] for key, entry in lines.items() if key not in exclude)
    for key, entry in lines.items():
        entry["entrance"] = key not in exclude
    occupancy = store_occupancy(db, now)
    return {
        "since": since,
        "in": total_in,
        "out": total_out,
        "occupancy": occupancy["now"],
        "occupancy_drift": occupancy["since_reset"]["clamped_outs"],
        "lines": list(lines.values()),
    }


def store_occupancy(db: sqlite_utils.Database, now: float) -> dict:
    """The analytics' occupancy (never negative, reset at closing time) up to now:
    the same figure the rollups carry."""
    from ..analytics.sections import occupancy
    from ..rollup import Window

    minute = minute_of(now)
    return occupancy(db, Window("", minute, next_minute(minute)))["store"]


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


# -- bucketing -----------------------------------------------------------------------
class Buckets:
    """Local hour or day buckets between two instants, keyed by ISO strings
    (``2026-05-03T14:00:00+08:00`` for hours, ``2026-05-03`` for days)."""

    def __init__(self, start: float, end: float, timezone: str, granularity: Granularity) -> None:
        self.zone = ZoneInfo(timezone)
        self.granularity = granularity
        self.start, self.end = start, end
        keys: list[str] = []
        if granularity == "hour":
            t = start
            while t < end:
                key = self.key(t)
                if not keys or keys[-1] != key:
                    keys.append(key)
                t += 3600
        else:
            day = datetime.fromtimestamp(start, self.zone).date()
            last = datetime.fromtimestamp(end - 1, self.zone).date()
            while day <= last:
                keys.append(day.isoformat())
                day += timedelta(days=1)
        self.keys = keys
        self.index = {key: i for i, key in enumerate(keys)}
        self._minute_keys: dict[str, str] = {}

    def key(self, ts: float) -> str:
        local = datetime.fromtimestamp(ts, self.zone)
        if self.granularity == "hour":
            return local.replace(minute=0, second=0, microsecond=0).isoformat()
        return local.date().isoformat()

    def of_minute(self, minute: str) -> str:
        """Key for a UTC minute ``YYYY-MM-DDTHH:MM`` (cached: many rows share minutes)."""
        key = self._minute_keys.get(minute)
        if key is None:
            ts = datetime.strptime(minute, "%Y-%m-%dT%H:%M").replace(tzinfo=UTC).timestamp()
            key = self._minute_keys[minute] = self.key(ts)
        return key

    def zeros(self) -> list[int]:
        return [0] * len(self.keys)


def door_series(db: sqlite_utils.Database, buckets: Buckets) -> dict[tuple[str, str], dict[str, list[int]]]:
    """Visitors in/out per (camera, line) per bucket."""
    rows = db.execute(
        "SELECT camera_id, line_id, direction, substr(ts, 1, 16) AS minute, COUNT(*) FROM events "
        "WHERE ts >= ? AND ts < ? AND kind = 'visitor' GROUP BY camera_id, line_id, direction, minute",
        [iso_utc(buckets.start), iso_utc(buckets.end)],
    ).fetchall()
    series: dict[tuple[str, str], dict[str, list[int]]] = {}
    for camera_id, line_id, direction, minute, count in rows:
        position = buckets.index.get(buckets.of_minute(minute))
        if position is None:
            continue
        entry = series.setdefault((camera_id, line_id), {"in": buckets.zeros(), "out": buckets.zeros()})
        entry[direction][position] += count
    return dict(sorted(series.items()))


def zone_series(db: sqlite_utils.Database, buckets: Buckets) -> dict[tuple[str, str], list[int]]:
    """Visitor entries per (camera, zone) per bucket."""
    rows = db.execute(
        "SELECT camera_id, zone_id, CAST(enter_ts / 60 AS INTEGER) AS minute, COUNT(*) FROM zone_visits "
        "WHERE enter_ts >= ? AND enter_ts < ? AND kind = 'visitor' GROUP BY camera_id, zone_id, minute",
        [buckets.start, buckets.end],
    ).fetchall()
    series: dict[tuple[str, str], list[int]] = {}
    for camera_id, zone_id, minute, count in rows:
        position = buckets.index.get(buckets.key(minute * 60))
        if position is None:
            continue
        series.setdefault((camera_id, zone_id), buckets.zeros())[position] += count
    return dict(sorted(series.items()))


def receipts_between(db: sqlite_utils.Database, start: float, end: float) -> int:
    return db.execute("SELECT COUNT(*) FROM pos_receipts WHERE ts >= ? AND ts < ?", [start, end]).fetchone()[0]


def visitors_between(db: sqlite_utils.Database, start: float, end: float, exclude: Excluded = frozenset()) -> int:
    rows = db.execute(
        "SELECT camera_id, line_id, COUNT(*) FROM events WHERE ts >= ? AND ts < ? AND kind = 'visitor' "
        "AND direction = 'in' GROUP BY camera_id, line_id",
        [iso_utc(start), iso_utc(end)],
    ).fetchall()
    return sum(count for camera, line, count in rows if (camera, line) not in exclude)


def _totals(doors: dict[tuple[str, str], dict[str, list[int]]], buckets: Buckets,
            exclude: Excluded) -> tuple[list[int], list[int]]:
    total_in, total_out = buckets.zeros(), buckets.zeros()
    for key, entry in doors.items():
        if key in exclude:
            continue
        total_in = [a + b for a, b in zip(total_in, entry["in"])]
        total_out = [a + b for a, b in zip(total_out, entry["out"])]
    return total_in, total_out


def _rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _change(now_value: int, before: int) -> float | None:
    return round((now_value - before) / before, 4) if before else None


def today_summary(db: sqlite_utils.Database, now: float, timezone: str, pos_configured: bool,
                  exclude: Excluded = frozenset()) -> dict:
    """Everything on the Today page: counts, hours, busiest hour, conversion and
    the same weekday last week (up to the same time of day, and the whole day)."""
    zone = ZoneInfo(timezone)
    counts = today_counts(db, now, timezone, exclude)
    start = local_day_start(now, timezone)
    today = datetime.fromtimestamp(now, zone).date()
    _, end = day_bounds(today, timezone)
    hours = Buckets(start, end, timezone, "hour")
    hourly_in, hourly_out = _totals(door_series(db, hours), hours, exclude)

    last_week_day = today - timedelta(days=7)
    lw_start, lw_end = day_bounds(last_week_day, timezone)
    local_now = datetime.fromtimestamp(now, zone)
    lw_same_time = min(lw_end, datetime.combine(last_week_day, local_now.time().replace(tzinfo=None),
                                                tzinfo=zone).timestamp())
    lw_hours = Buckets(lw_start, lw_end, timezone, "hour")
    lw_hourly_in, _ = _totals(door_series(db, lw_hours), lw_hours, exclude)
    lw_so_far = visitors_between(db, lw_start, lw_same_time, exclude)

    busiest = None
    if any(hourly_in):
        position = max(range(len(hourly_in)), key=lambda i: (hourly_in[i], -i))
        busiest = {"hour": hours.keys[position], "in": hourly_in[position]}

    receipts = receipts_between(db, start, now + 1) if pos_configured else None
    lw_receipts = receipts_between(db, lw_start, lw_same_time) if pos_configured else None
    return {
        **counts,
        "date": today.isoformat(),
        "hours": hours.keys,
        "hourly_in": hourly_in,
        "hourly_out": hourly_out,
        "busiest_hour": busiest,
        "conversion": {
            "configured": pos_configured,
            "receipts": receipts,
            "rate": _rate(receipts, counts["in"]) if pos_configured else None,
        },
        "last_week": {
            "date": last_week_day.isoformat(),
            "in_same_time": lw_so_far,
            "in_whole_day": sum(lw_hourly_in),
            "hourly_in": lw_hourly_in[: len(hourly_in)] + [0] * max(0, len(hourly_in) - len(lw_hourly_in)),
            "change": _change(counts["in"], lw_so_far),
            "receipts_same_time": lw_receipts,
            "conversion_rate": _rate(lw_receipts, lw_so_far) if pos_configured else None,
        },
    }


def trends(db: sqlite_utils.Database, start_day: date, end_day: date, timezone: str,
           granularity: Granularity, zone_info: dict[tuple[str, str], dict], exclude: Excluded = frozenset()) -> dict:
    start, _ = day_bounds(start_day, timezone)
    _, end = day_bounds(end_day, timezone)
    buckets = Buckets(start, end, timezone, granularity)
    doors = door_series(db, buckets)
    zones = zone_series(db, buckets)
    total_in, total_out = _totals(doors, buckets, exclude)
    return {
        "start": start_day.isoformat(),
        "end": end_day.isoformat(),
        "granularity": granularity,
        "timezone": timezone,
        "buckets": buckets.keys,
        "total": {"in": total_in, "out": total_out},
        "doors": [{"camera": camera, "line": line, "entrance": (camera, line) not in exclude, **values}
                  for (camera, line), values in doors.items()],
        "zones": [{"camera": camera, "zone": zone_id, **_zone_meta(zone_info, camera, zone_id), "entries": values}
                  for (camera, zone_id), values in zones.items()],
    }


def _zone_meta(zone_info: dict[tuple[str, str], dict], camera: str, zone_id: str) -> dict:
    info = zone_info.get((camera, zone_id), {})
    return {"kind": info.get("kind", "zone"), "product": info.get("product")}


# -- zones and products --------------------------------------------------------------
@dataclass(slots=True)
class _ZoneAgg:
    entries: int = 0
    tracks: set | None = None
    dwell: list | None = None
    interactions: int = 0


def _percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(0, math.ceil(fraction * len(sorted_values)) - 1)  # nearest rank
    return round(sorted_values[rank], 1)


def has_column(db: sqlite_utils.Database, table: str, column: str) -> bool:
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})").fetchall())


def has_table(db: sqlite_utils.Database, table: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [table]).fetchone() is not None


def zone_stats(db: sqlite_utils.Database, start: float, end: float, now: float, passing: float, engaged: float,
               zone_info: dict[tuple[str, str], dict], interaction_min: float | None = None) -> dict:
    """Per zone: entries, unique visitors, dwell (median, p90, histogram, passing /
    browsing / engaged); per shelf: interactions, interaction rate = interactions ÷
    passers-by (entries); hot products.

    An interaction is the analytics' own verdict where ``zone_visits`` has an
    ``interaction`` column (a long enough stay or a wrist reach), otherwise a stay
    of at least ``interaction_min`` (default ``passing``) seconds.
    """
    interaction_min = passing if interaction_min is None else interaction_min
    flag = "interaction" if has_column(db, "zone_visits", "interaction") else "NULL"
    rows = db.execute(
        f"SELECT camera_id, zone_id, track_id, enter_ts, exit_ts, {flag} FROM zone_visits "
        "WHERE enter_ts >= ? AND enter_ts < ? AND kind = 'visitor'",
        [start, end],
    ).fetchall()
    aggs: dict[tuple[str, str], _ZoneAgg] = {}
    for camera_id, zone_id, track_id, enter_ts, exit_ts, interaction in rows:
        agg = aggs.setdefault((camera_id, zone_id), _ZoneAgg(tracks=set(), dwell=[]))
        agg.entries += 1
        agg.tracks.add(track_id)
        stayed = (exit_ts if exit_ts is not None else now) - enter_ts
        if interaction if interaction is not None else stayed >= interaction_min:
            agg.interactions += 1
        if exit_ts is not None:
            agg.dwell.append(max(0.0, exit_ts - enter_ts))

    zones = []
    for (camera, zone_id), agg in sorted(aggs.items()):
        dwell = sorted(agg.dwell)
        histogram = [0] * len(DWELL_BINS)
        for value in dwell:
            position = max(i for i, edge in enumerate(DWELL_BINS) if value >= edge)
            histogram[position] += 1
        zones.append({
            "camera": camera,
            "zone": zone_id,
            **_zone_meta(zone_info, camera, zone_id),
            "entries": agg.entries,
            "unique_visitors": len(agg.tracks),
            "interactions": agg.interactions,
            "interaction_rate": _rate(agg.interactions, agg.entries),
            "median_dwell_s": _percentile(dwell, 0.5),
            "p90_dwell_s": _percentile(dwell, 0.9),
            "passing": sum(1 for v in dwell if v < passing),
            "browsing": sum(1 for v in dwell if passing <= v < engaged),
            "engaged": sum(1 for v in dwell if v >= engaged),
            "dwell_histogram": histogram,
        })
    # Shelves configured but not visited still appear (with zeros) in the ranking.
    seen = {(z["camera"], z["zone"]) for z in zones}
    for (camera, zone_id), info in sorted(zone_info.items()):
        if info.get("kind") == "shelf" and (camera, zone_id) not in seen:
            zones.append({"camera": camera, "zone": zone_id, **_zone_meta(zone_info, camera, zone_id),
                          "entries": 0, "unique_visitors": 0, "interactions": 0, "interaction_rate": None,
                          "median_dwell_s": None, "p90_dwell_s": None, "passing": 0, "browsing": 0,
                          "engaged": 0, "dwell_histogram": [0] * len(DWELL_BINS)})

    shelves = sorted((z for z in zones if z["kind"] == "shelf"),
                     key=lambda z: (-z["interactions"], -(z["interaction_rate"] or 0), z["zone"]))
    products: dict[str, dict] = {}
    for shelf in shelves:
        if not shelf["product"]:
            continue
        entry = products.setdefault(shelf["product"], {"product": shelf["product"], "interactions": 0,
                                                       "passers_by": 0, "shelves": []})
        entry["interactions"] += shelf["interactions"]
        entry["passers_by"] += shelf["entries"]
        entry["shelves"].append(f"{shelf['camera']}/{shelf['zone']}")
    hot = sorted(products.values(), key=lambda p: (-p["interactions"], p["product"]))
    for entry in hot:
        entry["interaction_rate"] = _rate(entry["interactions"], entry["passers_by"])
    return {
        "thresholds": {"passing_seconds": passing, "engaged_seconds": engaged, "interaction_seconds": interaction_min},
        "dwell_bins": DWELL_BINS,
        "zones": [z for z in zones if z["kind"] != "shelf"],
        "shelves": shelves,
        "hot_products": hot,
    }


def zone_heat(db: sqlite_utils.Database, camera_id: str, start: float, end: float) -> dict[str, int]:
    """Visitor entries per zone of one camera (the zone-level heatmap)."""
    rows = db.execute(
        "SELECT zone_id, COUNT(*) FROM zone_visits WHERE camera_id = ? AND enter_ts >= ? AND enter_ts < ? "
        "AND kind = 'visitor' GROUP BY zone_id",
        [camera_id, start, end],
    ).fetchall()
    return dict(rows)


def heatmap_grid(db: sqlite_utils.Database, camera_id: str, start: float, end: float) -> dict | None:
    """The analytics' occupancy grid (person-frames per cell, ``heatmap_hours``)
    summed over the whole UTC hours that start in [start, end); None without one."""
    if not has_table(db, "heatmap_hours"):
        return None
    rows = db.execute(
        "SELECT cols, rows, frames, cells FROM heatmap_hours WHERE camera_id = ? AND hour >= ? AND hour < ?",
        [camera_id, iso_utc(start)[:13] + ":00Z", iso_utc(end)[:13] + ":00Z"],
    ).fetchall()
    total, frames, shape = None, 0, None
    for cols, rows_, hour_frames, cells in rows:
        grid = json.loads(cells)
        if shape is None:
            shape, total = (rows_, cols), [[0] * cols for _ in range(rows_)]
        if (rows_, cols) != shape:
            continue  # the grid size changed in between: keep the first one's
        for r in range(rows_):
            for c in range(cols):
                total[r][c] += grid[r][c]
        frames += hour_frames
    if total is None:
        return None
    return {"cols": shape[1], "rows": shape[0], "frames": frames, "cells": total}


# -- storage ---------------------------------------------------------------------------
def storage_health(db: sqlite_utils.Database, path: Path, status: dict) -> dict:
    """The agent's storage status (size, budget, drops: retention.storage_status)
    plus what the Health page adds: the disk as a whole and the oldest data kept."""
    path = Path(path).expanduser()
    usage = shutil.disk_usage(path.parent)
    oldest = [row[0] for row in (db.execute("SELECT MIN(ts) FROM events").fetchone(),) if row[0]]
    oldest_visit = db.execute("SELECT MIN(enter_ts) FROM zone_visits").fetchone()[0]
    if oldest_visit is not None:
        oldest.append(iso_utc(oldest_visit))
    return {
        **status,
        "path": str(path),
        "database_bytes": status["file_bytes"],
        "disk_total_bytes": usage.total,
        "disk_free_bytes": usage.free,
        "disk_used": round(1 - usage.free / usage.total, 4) if usage.total else None,
        "oldest_data": min(oldest) if oldest else None,
        "events": db.execute("SELECT COUNT(*) FROM events").fetchone()[0],
    }
