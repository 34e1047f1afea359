"""Sensor tables (migration 0200_sensors, listed in storage.MIGRATIONS).

Times are epoch seconds UTC (REAL), like ``zone_visits``; ``bucket`` is the
minute an event is accounted in, as in ``events``.
"""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    # Periodic values, one per row (the storage migration may have created it
    # already with the same columns; retention prunes it by ts).
    db.execute(
        """CREATE TABLE IF NOT EXISTS sensor_readings (
            id INTEGER PRIMARY KEY,
            node_id TEXT NOT NULL,
            ts REAL NOT NULL,             -- epoch seconds UTC, when the agent received it
            kind TEXT NOT NULL,           -- in_total, out_total, beam_a_broken, beam_b_broken, motion,
                                          -- weight_g, rssi, uptime_s, battery_v
            value REAL,
            payload TEXT                  -- the node's whole message (JSON)
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS sensor_readings_ts ON sensor_readings (ts)")
    db.execute("CREATE INDEX IF NOT EXISTS sensor_readings_node ON sensor_readings (node_id, kind, ts)")
    # Everything a node reports as an event, with where it happened at that time.
    db.execute(
        """CREATE TABLE sensor_events (
            id INTEGER PRIMARY KEY,
            node_id TEXT NOT NULL,
            ts REAL NOT NULL,             -- epoch seconds UTC, when the agent received it
            bucket TEXT NOT NULL,         -- the minute it is accounted in (UTC), per source
            source TEXT NOT NULL,         -- the rollup it belongs to: a camera id or the sensors source id
            type TEXT NOT NULL CHECK (type IN ('crossing', 'motion', 'pick_up', 'put_back')),
            door_id TEXT,                 -- crossing
            direction TEXT CHECK (direction IN ('in', 'out')),
            zone_id TEXT,                 -- motion, pick_up, put_back
            camera_id TEXT,               -- the camera that sees the door/zone, if any
            motion INTEGER,               -- motion: 1 on, 0 off
            delta_g REAL,                 -- pick_up / put_back
            weight_g REAL,
            items INTEGER,
            boot INTEGER NOT NULL,
            seq INTEGER,                  -- NULL for crossings recovered from the node's totals
            in_total INTEGER,             -- crossing: the node's totals after this crossing
            out_total INTEGER,
            recovered INTEGER NOT NULL DEFAULT 0,
            payload TEXT
        )"""
    )
    # A message delivered twice (QoS 1 after a reconnect) is stored once.
    db.execute("CREATE UNIQUE INDEX sensor_events_once ON sensor_events (node_id, boot, seq)")
    db.execute("CREATE INDEX sensor_events_bucket ON sensor_events (source, bucket)")
    db.execute("CREATE INDEX sensor_events_ts ON sensor_events (ts)")
    db.execute("CREATE INDEX sensor_events_zone ON sensor_events (zone_id, ts)")
    # The registry as configured at the last start: rollup sections read it.
    db.execute(
        """CREATE TABLE sensor_nodes (
            node_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            source TEXT NOT NULL,
            door_id TEXT,
            zone_id TEXT,
            camera_id TEXT,
            line_id TEXT,
            product TEXT,
            enabled INTEGER NOT NULL DEFAULT 1,
            updated_at REAL NOT NULL
        )"""
    )
