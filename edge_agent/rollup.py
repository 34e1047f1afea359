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

import sqlite_utils

from .storage import Store, iso_utc, minute_start, next_minute

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


@section("lines")
def line_counts(db: sqlite_utils.Database, window: Window) -> dict:
    counts = {line_id: {"in": 0, "out": 0} for line_id in window.lines}
    for line_id, direction, count in db.execute(
        "SELECT line_id, direction, COUNT(*) FROM events WHERE camera_id = ? AND bucket >= ? AND bucket < ? "
        "AND kind = 'visitor' GROUP BY line_id, direction",
        [window.camera_id, window.start, window.end],
    ).fetchall():
        counts.setdefault(line_id, {"in": 0, "out": 0})[direction] = count
    return counts


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
    store.flush()
    closed = 0
    with store.transaction() as db:
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


# Store analytics sections (occupancy, zones, shelves, heatmap, staff) register themselves.
from .analytics import sections as _analytics_sections  # noqa: E402,F401
