"""Rollup sections of the store analytics: pure reads of committed rows over
any window (minute, hour, day), merged into every rollup payload.

Registered on import (``edge_agent.rollup`` imports this module):
``occupancy``, ``zones`` (entries and dwell), ``shelves`` (product
interactions), ``heatmap`` (whole hours inside the window) and ``staff``.
Payload shapes are documented in docs/analytics.md.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlite_utils

from ..rollup import Window, count_crossings, section
from ..storage import iso_utc, minute_start
from .metrics import concurrency, dwell_summary, fold_occupancy, interaction_summary
from .recorder import SETTINGS_KEY
from .settings import AnalyticsSettings

_DEFAULTS = {"timezone": "UTC", **AnalyticsSettings().model_dump(mode="json")}


def _settings(db: sqlite_utils.Database) -> dict:
    row = db.execute("SELECT value FROM meta WHERE key = ?", [SETTINGS_KEY]).fetchone()
    return {**_DEFAULTS, **(json.loads(row[0]) if row else {})}


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def closing_times(start: float, end: float, closing: str, timezone: str) -> tuple[float, list[float]]:
    """(the last closing time at or before ``start``, closing times in (start, end))."""
    zone = ZoneInfo(timezone)
    hour, minute = (int(part) for part in closing.split(":"))
    local = datetime.fromtimestamp(start, zone)
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate.timestamp() > start:
        candidate -= timedelta(days=1)
    first = candidate.timestamp()
    later: list[float] = []
    day = candidate
    while True:
        day = (day + timedelta(days=1)).replace(hour=hour, minute=minute)
        ts = day.timestamp()
        if ts >= end:
            break
        if ts > start:
            later.append(ts)
    return first, later


def _zones(db: sqlite_utils.Database, camera_id: str, kinds: tuple[str, ...]) -> dict[str, str | None]:
    """zone id → product label, for the configured zones of ``kinds`` plus any with data."""
    marks = ",".join("?" for _ in kinds)
    zones = {zone_id: product for zone_id, product in db.execute(
        f"SELECT zone_id, product FROM camera_zones WHERE camera_id = ? AND kind IN ({marks}) ORDER BY zone_id",
        [camera_id, *kinds]).fetchall()}
    return zones


@section("occupancy")
def occupancy(db: sqlite_utils.Database, window: Window) -> dict:
    settings = _settings(db)
    start, end = minute_start(window.start), minute_start(window.end)
    day_start, resets = closing_times(start, end, settings["closing_time"], settings["timezone"])
    configured = db.execute("SELECT COUNT(*) FROM camera_lines").fetchone()[0]
    entrance_filter = (
        "AND EXISTS (SELECT 1 FROM camera_lines l WHERE l.camera_id = e.camera_id AND l.line_id = e.line_id "
        "AND l.entrance = 1)" if configured else ""
    )
    rows = db.execute(
        f"SELECT e.ts, e.direction FROM events e WHERE e.kind = 'visitor' AND e.ts >= ? AND e.ts < ? "
        f"{entrance_filter} ORDER BY e.ts, e.id",
        [iso_utc(day_start), iso_utc(end)],
    ).fetchall()
    changes = [(_epoch(ts), 1 if direction == "in" else -1) for ts, direction in rows]
    folded = fold_occupancy(changes, resets, start, end)
    last_reset = max([day_start, *resets])
    since = [delta for ts, delta in changes if ts >= last_reset]
    in_window = [delta for ts, delta in changes if ts >= start]
    store = {
        "now": folded.value,
        "peak": folded.peak,
        "in": sum(1 for d in in_window if d > 0),
        "out": sum(1 for d in in_window if d < 0),
        "since_reset": {
            "in": sum(1 for d in since if d > 0),
            "out": sum(1 for d in since if d < 0),
            "imbalance": sum(since),
            "clamped_outs": fold_occupancy([(t, d) for t, d in changes if t >= last_reset], [], last_reset, end).clamped,
        },
    }
    store["imbalance"] = store["in"] - store["out"]
    zones = {}
    for zone_id in _zones(db, window.camera_id, ("zone", "shelf")):
        intervals = db.execute(
            "SELECT enter_ts, exit_ts FROM zone_visits WHERE camera_id = ? AND zone_id = ? AND kind = 'visitor' "
            "AND (closed_by IS NULL OR closed_by != 'restart') AND enter_ts < ? AND (exit_ts IS NULL OR exit_ts >= ?)",
            [window.camera_id, zone_id, end, start],
        ).fetchall()
        now, peak = concurrency(intervals, start, end)
        zones[zone_id] = {"now": now, "peak": peak}
    return {"store": store, "zones": zones}


def _finished_visits(db, window: Window, zone_id: str, columns: str) -> list[tuple]:
    return db.execute(
        f"SELECT {columns} FROM zone_visits WHERE camera_id = ? AND zone_id = ? AND kind = 'visitor' "
        "AND closed_by = 'exit' AND exit_bucket >= ? AND exit_bucket < ?",
        [window.camera_id, zone_id, window.start, window.end],
    ).fetchall()


@section("zones")
def zones(db: sqlite_utils.Database, window: Window) -> dict:
    settings = _settings(db)
    out = {}
    zone_ids = set(_zones(db, window.camera_id, ("zone", "shelf")))
    zone_ids |= {row[0] for row in db.execute(
        "SELECT DISTINCT zone_id FROM zone_visits WHERE camera_id = ? AND ((enter_bucket >= ? AND enter_bucket < ?) "
        "OR (exit_bucket >= ? AND exit_bucket < ?))",
        [window.camera_id, window.start, window.end, window.start, window.end]).fetchall()}
    for zone_id in sorted(zone_ids):
        entries = db.execute(
            "SELECT COUNT(*) FROM zone_visits WHERE camera_id = ? AND zone_id = ? AND kind = 'visitor' "
            "AND enter_bucket >= ? AND enter_bucket < ?",
            [window.camera_id, zone_id, window.start, window.end],
        ).fetchone()[0]
        dwells = [row[0] for row in _finished_visits(db, window, zone_id, "dwell_s")]
        out[zone_id] = {"entries": entries, **dwell_summary(dwells, settings["passing_max_seconds"],
                                                            settings["engaged_min_seconds"])}
    return out


@section("shelves")
def shelves(db: sqlite_utils.Database, window: Window) -> dict:
    out = {}
    for zone_id, product in _zones(db, window.camera_id, ("shelf",)).items():
        visits = _finished_visits(db, window, zone_id, "track_id, interaction, reaches")
        out[zone_id] = {"product": product,
                        **interaction_summary((track, bool(hit), reaches) for track, hit, reaches in visits)}
    return out


@section("heatmap")
def heatmap(db: sqlite_utils.Database, window: Window) -> dict | None:
    """The sum of the whole hours inside the window (None for shorter windows)."""
    rows = db.execute(
        "SELECT hour, cols, rows, frames, cells FROM heatmap_hours WHERE camera_id = ? AND hour >= ? AND hour < ? "
        "ORDER BY hour",
        [window.camera_id, window.start, window.end],
    ).fetchall()
    end = minute_start(window.end)
    whole = [row for row in rows if minute_start(row[0]) + 3600 <= end]
    if not whole:
        return None
    cols, grid_rows = whole[-1][1], whole[-1][2]
    cells = [[0] * cols for _ in range(grid_rows)]
    frames = 0
    hours = []
    for hour, c, r, f, data in whole:
        if (c, r) != (cols, grid_rows):
            continue  # the grid size was changed that hour: not addable
        for row_cells, add in zip(cells, json.loads(data)):
            for k, value in enumerate(add):
                row_cells[k] += value
        frames += f
        hours.append(hour)
    return {"cols": cols, "rows": grid_rows, "frames": frames, "hours": hours, "cells": cells}


@section("staff")
def staff(db: sqlite_utils.Database, window: Window) -> dict:
    return {"lines": count_crossings(db, window, "staff")}
