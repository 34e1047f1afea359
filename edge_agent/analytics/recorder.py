"""Writes what the pipeline found (zone visits, heatmap minutes) and the
layout the agent runs with into SQLite, next to the events ``Store.record``
commits.

Call :meth:`AnalyticsRecorder.record` *before* ``Store.record`` for the same
frame: that call advances the camera's watermark, after which the minute may be
rolled up, so everything a minute's rollup reads is committed before it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from ..storage import Store
from .heatmap import HeatmapChunk

log = logging.getLogger(__name__)

SETTINGS_KEY = "analytics.settings"


def hour_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:00Z")


class AnalyticsRecorder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._open: dict[tuple[str, str, int], int] = {}  # (camera, zone, track) → zone_visits.id

    def sync_layout(self, config) -> int:
        """Record the cameras' lines and zones and the analytics settings; close
        visits left open by a previous run that did not stop cleanly. Returns how
        many such visits were closed."""
        with self.store.transaction() as db:
            for camera in config.cameras:
                db.execute("DELETE FROM camera_lines WHERE camera_id = ?", [camera.id])
                db.execute("DELETE FROM camera_zones WHERE camera_id = ?", [camera.id])
                db.conn.executemany(
                    "INSERT INTO camera_lines (camera_id, line_id, points, in_side, entrance, count_on_exit) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(camera.id, line.id, json.dumps([list(p) for p in line.points]), line.in_side,
                      int(line.entrance), int(line.count_on_exit)) for line in camera.lines],
                )
                db.conn.executemany(
                    "INSERT INTO camera_zones (camera_id, zone_id, kind, product, polygon) VALUES (?, ?, ?, ?, ?)",
                    [(camera.id, zone.id, zone.kind, zone.product, json.dumps([list(p) for p in zone.polygon]))
                     for zone in camera.zones],
                )
            settings = {"timezone": config.timezone, **config.analytics.model_dump(mode="json")}
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [SETTINGS_KEY, json.dumps(settings)])
            cursor = db.execute(
                "UPDATE zone_visits SET exit_ts = enter_ts, dwell_s = NULL, closed_by = 'restart' "
                "WHERE exit_ts IS NULL"
            )
            dangling = cursor.rowcount
        if dangling:
            log.warning("closed %d zone visits left open by the previous run (not counted in dwell)", dangling)
        return dangling

    def record(self, camera_id: str, result) -> None:
        """Commit a frame's zone visit changes and a finished heatmap minute."""
        if not result.zone_events and result.heatmap is None:
            return
        with self.store.transaction() as db:
            for event in result.zone_events:
                self._write_visit(db, camera_id, event)
            if result.heatmap is not None:
                self._add_heatmap(db, camera_id, result.heatmap)

    def _write_visit(self, db, camera_id: str, event) -> None:
        key = (camera_id, event.zone_id, event.track_id)
        kind = "staff" if event.staff else "visitor"
        if event.event == "enter":
            cursor = db.execute(
                "INSERT INTO zone_visits (camera_id, zone_id, track_id, enter_ts, kind, enter_bucket) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [camera_id, event.zone_id, event.track_id, event.enter_ts, kind,
                 self.store.account(camera_id, event.enter_ts)],
            )
            self._open[key] = cursor.lastrowid
            return
        exit_bucket = self.store.account(camera_id, event.exit_ts)
        values = [event.exit_ts, exit_bucket, event.dwell, int(event.interaction), event.reaches, event.closed_by]
        row_id = self._open.pop(key, None)
        if row_id is not None:
            db.execute(
                "UPDATE zone_visits SET exit_ts = ?, exit_bucket = ?, dwell_s = ?, interaction = ?, reaches = ?, "
                "closed_by = ?, kind = CASE WHEN ? = 'staff' THEN 'staff' ELSE kind END WHERE id = ?",
                [*values, kind, row_id],
            )
        else:  # its enter was written by an earlier run
            db.execute(
                "INSERT INTO zone_visits (camera_id, zone_id, track_id, enter_ts, kind, enter_bucket, exit_ts, "
                "exit_bucket, dwell_s, interaction, reaches, closed_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [camera_id, event.zone_id, event.track_id, event.enter_ts, kind,
                 self.store.account(camera_id, event.enter_ts), *values],
            )

    def _add_heatmap(self, db, camera_id: str, chunk: HeatmapChunk) -> None:
        hour = hour_of(chunk.start_ts)
        row = db.execute("SELECT cols, rows, frames, cells FROM heatmap_hours WHERE camera_id = ? AND hour = ?",
                         [camera_id, hour]).fetchone()
        cells = chunk.cells.tolist()
        frames = chunk.frames
        if row is not None and (row[0], row[1]) == (chunk.cols, chunk.rows):
            old = json.loads(row[3])
            cells = [[a + b for a, b in zip(old_row, new_row)] for old_row, new_row in zip(old, cells)]
            frames += row[2]
        db.execute(
            "INSERT OR REPLACE INTO heatmap_hours (camera_id, hour, cols, rows, frames, cells) VALUES (?, ?, ?, ?, ?, ?)",
            [camera_id, hour, chunk.cols, chunk.rows, frames, json.dumps(cells, separators=(",", ":"))],
        )

