"""SQLite tables of the store analytics (migration 0100_analytics).

``zone_visits`` exists since 0001_core (its columns are the contract sensor
fusion and the dashboard read); this migration adds the columns the rollups
need. Documented in docs/analytics.md.
"""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    # Minute buckets as for events: a visit confirmed after its minute was rolled
    # up is accounted in the next open minute, never lost and never counted twice.
    db.execute("ALTER TABLE zone_visits ADD COLUMN enter_bucket TEXT")
    db.execute("ALTER TABLE zone_visits ADD COLUMN exit_bucket TEXT")
    db.execute("ALTER TABLE zone_visits ADD COLUMN dwell_s REAL")
    db.execute("ALTER TABLE zone_visits ADD COLUMN interaction INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE zone_visits ADD COLUMN reaches INTEGER NOT NULL DEFAULT 0")
    # 'exit' (left the zone), 'shutdown' (agent stopped), 'restart' (found open at start)
    db.execute("ALTER TABLE zone_visits ADD COLUMN closed_by TEXT")
    db.execute("CREATE INDEX zone_visits_enter_bucket ON zone_visits (camera_id, enter_bucket)")
    db.execute("CREATE INDEX zone_visits_exit_bucket ON zone_visits (camera_id, exit_bucket)")
    db.execute("CREATE INDEX zone_visits_open ON zone_visits (camera_id, exit_ts)")
    db.execute(
        """CREATE TABLE heatmap_hours (
            camera_id TEXT NOT NULL,
            hour TEXT NOT NULL,            -- UTC hour, e.g. 2026-11-25T10:00Z
            cols INTEGER NOT NULL,
            rows INTEGER NOT NULL,
            frames INTEGER NOT NULL,       -- frames processed in that hour
            cells TEXT NOT NULL,           -- JSON: rows lists of cols person-frame counts, top row first
            PRIMARY KEY (camera_id, hour)
        )"""
    )
    # The layout the agent runs with (written at start): rollups and the dashboard
    # know each camera's lines and zones even in a minute where nothing happened.
    db.execute(
        """CREATE TABLE camera_lines (
            camera_id TEXT NOT NULL,
            line_id TEXT NOT NULL,
            points TEXT NOT NULL,          -- JSON [[x1, y1], [x2, y2]], 0-1
            in_side TEXT NOT NULL,
            entrance INTEGER NOT NULL,     -- 1: its crossings change store occupancy
            count_on_exit INTEGER NOT NULL,
            PRIMARY KEY (camera_id, line_id)
        )"""
    )
    db.execute(
        """CREATE TABLE camera_zones (
            camera_id TEXT NOT NULL,
            zone_id TEXT NOT NULL,
            kind TEXT NOT NULL,            -- zone | shelf | staff
            product TEXT,
            polygon TEXT NOT NULL,         -- JSON [[x, y], ...], 0-1
            PRIMARY KEY (camera_id, zone_id)
        )"""
    )
