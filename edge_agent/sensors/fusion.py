"""Sensors beside the cameras: the ``sensors`` rollup section and the door check.

Pure reads of committed rows. The section works on any window (minute, hour,
day): counts are taken by ``bucket`` like the camera's own line counts, so each
sensor event is in exactly one rollup of each granularity.

Rules (docs/sensors.md):
- door: beam in/out next to the camera's in/out for the line at the same door;
  ``agreement`` = matched / larger, per direction (1.0 = identical, None = both 0);
- shelf: each pick-up is ``with_visitor`` (a tracked visitor in the shelf's
  zone within the match tolerance), else ``with_staff``, else ``nobody_seen``
  (the camera was running and saw nobody), else ``unwatched`` (no camera sees
  the zone, or it processed no frame in that minute);
- presence: PIR activations and seconds with motion per zone.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable

import sqlite_utils

from ..rollup import Window, section
from ..storage import iso_utc, minute_of, minute_start

META_SHELF_MATCH = "sensors.shelf_match"
# An open zone visit (exit_ts NULL) older than this is a track that was never
# closed (e.g. a crash), not a person still at the shelf.
OPEN_VISIT_MAX_SECONDS = 1800.0
# A PIR "on" never followed by "off" (node died) counts at most this long.
MOTION_MAX_ON_SECONDS = 3600.0


def agreement(camera: dict[str, int], beam: dict[str, int]) -> float | None:
    """Share of crossings both counted, per direction: 1.0 identical, 0.0 disjoint."""
    matched = min(camera["in"], beam["in"]) + min(camera["out"], beam["out"])
    larger = max(camera["in"], beam["in"]) + max(camera["out"], beam["out"])
    return None if larger == 0 else round(matched / larger, 3)


@section("sensors")
def sensors_section(db: sqlite_utils.Database, window: Window) -> dict:
    nodes = db.execute(
        "SELECT node_id, kind, door_id, zone_id, camera_id, line_id, product FROM sensor_nodes "
        "WHERE source = ? AND enabled = 1 ORDER BY node_id",
        [window.camera_id],
    ).fetchall()
    any_event = db.execute(
        "SELECT 1 FROM sensor_events WHERE source = ? AND bucket >= ? AND bucket < ? LIMIT 1",
        [window.camera_id, window.start, window.end],
    ).fetchone()
    if not nodes and not any_event:
        return {}
    return {
        "doors": _doors(db, window, nodes),
        "shelves": _shelves(db, window, nodes),
        "presence": _presence(db, window, nodes),
    }


def _window_args(window: Window) -> list[str]:
    return [window.camera_id, window.start, window.end]


def _doors(db: sqlite_utils.Database, window: Window, nodes: list[tuple]) -> dict:
    links: dict[str, tuple[str, str] | None] = {}
    for _node, kind, door, _zone, camera, line, _product in nodes:
        if kind == "door_beam":
            links[door] = (camera, line) if camera and line else links.get(door)
    beam: dict[str, dict[str, int]] = defaultdict(lambda: {"in": 0, "out": 0})
    recovered: dict[str, int] = defaultdict(int)
    for door, direction, count, recovered_count in db.execute(
        "SELECT door_id, direction, COUNT(*), SUM(recovered) FROM sensor_events WHERE source = ? AND bucket >= ? "
        "AND bucket < ? AND type = 'crossing' GROUP BY door_id, direction",
        _window_args(window),
    ).fetchall():
        beam[door][direction] = count
        recovered[door] += recovered_count or 0
        links.setdefault(door, None)
    doors = {}
    for door in sorted(links):
        entry: dict = {"beam": dict(beam[door]), "recovered": recovered[door], "camera": None, "agreement": None}
        link = links[door]
        if link is not None:
            camera_counts = {"in": 0, "out": 0}
            for direction, count in db.execute(
                "SELECT direction, COUNT(*) FROM events WHERE camera_id = ? AND line_id = ? AND bucket >= ? "
                "AND bucket < ? AND kind = 'visitor' GROUP BY direction",
                [link[0], link[1], window.start, window.end],
            ).fetchall():
                camera_counts[direction] = count
            entry.update(camera=camera_counts, line=link[1], agreement=agreement(camera_counts, entry["beam"]))
        doors[door] = entry
    return doors


def shelf_match_seconds(db: sqlite_utils.Database) -> tuple[float, float]:
    row = db.execute("SELECT value FROM meta WHERE key = ?", [META_SHELF_MATCH]).fetchone()
    if row:
        try:
            value = json.loads(row[0])
            return float(value["before"]), float(value["after"])
        except (ValueError, KeyError, TypeError):
            pass
    return 5.0, 2.0


def attribute_pick_up(db: sqlite_utils.Database, camera_id: str | None, zone_id: str, ts: float,
                      before: float, after: float) -> str:
    """Who was at the shelf when the scale saw the change: visitor, staff, nobody or unwatched."""
    if camera_id is None:
        return "unwatched"
    kinds = {
        kind for (kind,) in db.execute(
            "SELECT DISTINCT kind FROM zone_visits WHERE camera_id = ? AND zone_id = ? AND enter_ts <= ? "
            "AND (exit_ts >= ? OR (exit_ts IS NULL AND enter_ts >= ?))",
            [camera_id, zone_id, ts + after, ts - before, ts - OPEN_VISIT_MAX_SECONDS],
        ).fetchall()
    }
    if kinds - {"staff"}:
        return "visitor"
    if kinds:
        return "staff"
    watched = db.execute(
        "SELECT 1 FROM camera_minutes WHERE camera_id = ? AND minute IN (?, ?) AND frames > 0 LIMIT 1",
        [camera_id, minute_of(ts), minute_of(ts - before)],
    ).fetchone()
    return "nobody" if watched else "unwatched"


def _shelves(db: sqlite_utils.Database, window: Window, nodes: list[tuple]) -> dict:
    shelves: dict[str, dict] = {}

    def shelf(zone: str, product: str | None = None) -> dict:
        if zone not in shelves:
            shelves[zone] = {"product": product, "pick_ups": 0, "items_picked": 0, "put_backs": 0,
                             "items_returned": 0, "with_visitor": 0, "with_staff": 0, "nobody_seen": 0,
                             "unwatched": 0}
        elif product and not shelves[zone]["product"]:
            shelves[zone]["product"] = product
        return shelves[zone]

    for _node, kind, _door, zone, _camera, _line, product in nodes:
        if kind == "shelf_scale":
            shelf(zone, product)
    before, after = shelf_match_seconds(db)
    for ts, event_type, zone, camera, items in db.execute(
        "SELECT ts, type, zone_id, camera_id, items FROM sensor_events WHERE source = ? AND bucket >= ? "
        "AND bucket < ? AND type IN ('pick_up', 'put_back') ORDER BY ts",
        _window_args(window),
    ).fetchall():
        entry = shelf(zone)
        if event_type == "put_back":
            entry["put_backs"] += 1
            entry["items_returned"] += items or 0
            continue
        entry["pick_ups"] += 1
        entry["items_picked"] += items or 0
        who = attribute_pick_up(db, camera, zone, ts, before, after)
        entry[{"visitor": "with_visitor", "staff": "with_staff", "nobody": "nobody_seen",
               "unwatched": "unwatched"}[who]] += 1
    return dict(sorted(shelves.items()))


def merged_seconds(intervals: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """Length of the union of intervals, clipped to [start, end)."""
    total, current_start, current_end = 0.0, None, None
    for a, b in sorted((max(a, start), min(b, end)) for a, b in intervals):
        if b <= a:
            continue
        if current_end is None or a > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = a, b
        else:
            current_end = max(current_end, b)
    if current_end is not None:
        total += current_end - current_start
    return total


def _presence(db: sqlite_utils.Database, window: Window, nodes: list[tuple]) -> dict:
    start, end = minute_start(window.start), minute_start(window.end)
    presence: dict[str, dict] = {}
    pir_nodes = [(node, zone) for node, kind, _d, zone, _c, _l, _p in nodes if kind == "pir"]
    for _node, zone in pir_nodes:
        presence.setdefault(zone, {"activations": 0, "motion_s": 0.0})
    for zone, count in db.execute(
        "SELECT zone_id, COUNT(*) FROM sensor_events WHERE source = ? AND bucket >= ? AND bucket < ? "
        "AND type = 'motion' AND motion = 1 GROUP BY zone_id",
        _window_args(window),
    ).fetchall():
        presence.setdefault(zone, {"activations": 0, "motion_s": 0.0})["activations"] = count
    by_zone: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for node, zone in pir_nodes:
        previous = db.execute(
            "SELECT ts, motion FROM sensor_events WHERE node_id = ? AND type = 'motion' AND ts < ? "
            "AND ts >= ? ORDER BY ts DESC LIMIT 1",
            [node, start, start - MOTION_MAX_ON_SECONDS],
        ).fetchall()
        changes = previous + db.execute(
            "SELECT ts, motion FROM sensor_events WHERE node_id = ? AND type = 'motion' AND ts >= ? AND ts < ? "
            "ORDER BY ts",
            [node, start, end],
        ).fetchall()
        on_since = None
        for ts, motion in changes:
            if motion and on_since is None:
                on_since = ts
            elif not motion and on_since is not None:
                by_zone[zone].append((on_since, ts))
                on_since = None
        if on_since is not None:
            by_zone[zone].append((on_since, min(end, on_since + MOTION_MAX_ON_SECONDS)))
    for zone, intervals in by_zone.items():
        presence[zone]["motion_s"] = round(merged_seconds(intervals, start, end), 1)
    return dict(sorted(presence.items()))


# -- health: a door whose camera and beam disagree for a while --------------------------
def door_disagreements(db: sqlite_utils.Database, now: float, window_minutes: int, min_crossings: int,
                       warn_below: float) -> list[dict]:
    """Doors counted by both a camera line and a beam whose counts over the last
    ``window_minutes`` disagree (agreement < ``warn_below`` with at least
    ``min_crossings`` on the busier side)."""
    since = now - window_minutes * 60
    warnings = []
    for door, camera_id, line_id in db.execute(
        "SELECT DISTINCT door_id, camera_id, line_id FROM sensor_nodes WHERE kind = 'door_beam' AND enabled = 1 "
        "AND camera_id IS NOT NULL AND line_id IS NOT NULL ORDER BY door_id"
    ).fetchall():
        camera = {"in": 0, "out": 0}
        for direction, count in db.execute(
            "SELECT direction, COUNT(*) FROM events WHERE camera_id = ? AND line_id = ? AND ts >= ? "
            "AND kind = 'visitor' GROUP BY direction",
            [camera_id, line_id, iso_utc(since)],
        ).fetchall():
            camera[direction] = count
        beam = {"in": 0, "out": 0}
        for direction, count in db.execute(
            "SELECT direction, COUNT(*) FROM sensor_events WHERE door_id = ? AND type = 'crossing' AND ts >= ? "
            "GROUP BY direction",
            [door, since],
        ).fetchall():
            beam[direction] = count
        ratio = agreement(camera, beam)
        camera_total, beam_total = sum(camera.values()), sum(beam.values())
        if ratio is None or max(camera_total, beam_total) < min_crossings or ratio >= warn_below:
            continue
        if camera_total < beam_total:
            hint = (f"the camera counted fewer: check that camera {camera_id!r} is not bumped, covered or "
                    f"down and that line {line_id!r} still spans the door")
        else:
            hint = "the beam counted fewer: check that the beam is not blocked or misaligned"
        warnings.append({
            "code": "door_disagreement",
            "door": door,
            "camera": camera,
            "beam": beam,
            "agreement": ratio,
            "message": (f"door {door!r}: camera {camera['in']} in / {camera['out']} out, beam {beam['in']} in / "
                        f"{beam['out']} out over the last {window_minutes} min (agreement {ratio:.2f}); {hint}"),
        })
    return warnings
