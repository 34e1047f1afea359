"""Analytics rows in a real SQLite file and the rollup sections built from them."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import numpy as np
import supervision as sv

from edge_agent.analytics.heatmap import HeatmapChunk
from edge_agent.analytics.recorder import AnalyticsRecorder
from edge_agent.analytics.zones import ZoneEvent
from edge_agent.config import load_config
from edge_agent.counting import Crossing
from edge_agent.pipeline import FrameResult
from edge_agent.rollup import SECTIONS, Identity, Window, close_minutes
from edge_agent.storage import Store

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC).timestamp()
IDENTITY = Identity("org", "store1", "box1")
SQUARE = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]]


def make_config(tmp_path, **analytics):
    return load_config(
        cameras=[
            {"id": "door", "source": "rtsp://x", "lines": [
                {"id": "entrance", "points": [[0, 0.5], [1, 0.5]]},
                {"id": "inner", "points": [[0.5, 0], [0.5, 1]], "entrance": False},
            ]},
            {"id": "aisle", "source": "rtsp://y", "zones": [
                {"id": "snacks", "polygon": SQUARE, "kind": "shelf", "product": "Snacks / crisps"},
                {"id": "floor", "polygon": SQUARE},
                {"id": "backroom", "polygon": SQUARE, "kind": "staff"},
            ]},
        ],
        storage={"path": str(tmp_path / "agent.db")},
        analytics=analytics,
    )


def frame(camera, ts, zone_events=(), heatmap=None):
    empty = sv.Detections.empty()
    return FrameResult(camera, ts, empty, [], list(zone_events), heatmap)


def visit(zone, track, enter, leave, interaction=False, reaches=0, staff=False):
    return [ZoneEvent("enter", zone, track, enter, staff=staff),
            ZoneEvent("exit", zone, track, enter, leave, staff, interaction, reaches)]


def payloads(path):
    with sqlite3.connect(path) as conn:
        return [json.loads(p) for (p,) in conn.execute("SELECT payload FROM outbox ORDER BY seq")]


def test_minute_rollup_carries_occupancy_dwell_and_shelf_interactions(tmp_path):
    config = make_config(tmp_path, closing_time="00:00")
    store = Store(config.storage.path)
    recorder = AnalyticsRecorder(store)
    recorder.sync_layout(config)
    door = [Crossing("entrance", 1, "in", T0 + 1), Crossing("entrance", 2, "in", T0 + 2),
            Crossing("entrance", 3, "in", T0 + 3), Crossing("entrance", 1, "out", T0 + 40),
            Crossing("entrance", 9, "in", T0 + 5, "staff"),
            Crossing("inner", 4, "in", T0 + 6), Crossing("inner", 5, "in", T0 + 7)]
    store.record("door", T0 + 41, door)
    events = (visit("snacks", 1, T0 + 1, T0 + 3) + visit("snacks", 2, T0 + 2, T0 + 12, interaction=True)
              + visit("snacks", 2, T0 + 20, T0 + 21, reaches=1, interaction=True)
              + visit("floor", 3, T0 + 1, T0 + 41) + visit("floor", 8, T0 + 2, T0 + 50, staff=True))
    recorder.record("aisle", frame("aisle", T0 + 50, events))
    # one person still inside the shelf area when the minute ends
    recorder.record("aisle", frame("aisle", T0 + 55, [ZoneEvent("enter", "snacks", 7, T0 + 55)]))
    store.record("aisle", T0 + 55, [])
    store.record("door", T0 + 61, [])
    store.record("aisle", T0 + 61, [])
    # `now` is the data's time, not the wall clock (minutes silent by wall time would close too)
    assert close_minutes(store, IDENTITY, {"door": ["entrance", "inner"], "aisle": []}, now=T0 + 61) == 2

    by_camera = {p["camera"]: p for p in payloads(config.storage.path)}
    door_payload, aisle_payload = by_camera["door"], by_camera["aisle"]
    assert door_payload["lines"] == {"entrance": {"in": 3, "out": 1}, "inner": {"in": 2, "out": 0}}
    assert door_payload["staff"] == {"lines": {"entrance": {"in": 1, "out": 0}}}
    store_occupancy = door_payload["occupancy"]["store"]
    # only the entrance line moves store occupancy; staff excluded: 3 in, 1 out
    assert store_occupancy == {"now": 2, "peak": 3, "in": 3, "out": 1, "imbalance": 2,
                               "since_reset": {"in": 3, "out": 1, "imbalance": 2, "clamped_outs": 0}}
    assert aisle_payload["occupancy"]["store"] == store_occupancy  # a store-wide figure
    assert aisle_payload["occupancy"]["zones"] == {"floor": {"now": 0, "peak": 1},
                                                   "snacks": {"now": 1, "peak": 2}}
    zones = aisle_payload["zones"]
    # snacks: 4 entries (one still inside); finished dwells 2, 10, 1 → median 2, p90 = 2 + 0.8 * 8 = 8.4
    assert zones["snacks"] == {"entries": 4, "visits": 3, "dwell_median_s": 2.0, "dwell_p90_s": 8.4,
                               "passing": 2, "browsing": 1, "engaged": 0}
    assert zones["floor"]["entries"] == 1 and zones["floor"]["engaged"] == 1  # the staff visit is left out
    assert "backroom" not in zones
    assert aisle_payload["shelves"] == {"snacks": {"product": "Snacks / crisps", "passers_by": 3, "interactions": 2,
                                                   "unique_visitors": 2, "reaches": 1,
                                                   "interaction_rate": 0.6667}}
    assert aisle_payload["heatmap"] is None  # minute rollups carry no heatmap
    store.close()


def test_occupancy_resets_at_closing_time_and_shows_drift(tmp_path):
    config = make_config(tmp_path, closing_time="10:01")  # UTC store: resets at T0 + 60
    store = Store(config.storage.path)
    AnalyticsRecorder(store).sync_layout(config)
    store.record("door", T0 + 30, [Crossing("entrance", 1, "in", T0 + 10), Crossing("entrance", 2, "in", T0 + 20)])
    # after the reset two people leave: occupancy stays at 0, both outs are visible as drift
    store.record("door", T0 + 90, [Crossing("entrance", 1, "out", T0 + 70), Crossing("entrance", 2, "out", T0 + 80)])
    store.record("door", T0 + 121, [])
    close_minutes(store, IDENTITY, {"door": ["entrance"]}, now=T0 + 121)
    first, second = (p["occupancy"]["store"] for p in payloads(config.storage.path))
    assert (first["now"], first["peak"], first["since_reset"]["imbalance"]) == (2, 2, 2)
    assert (second["now"], second["peak"]) == (0, 0)
    assert second["since_reset"] == {"in": 0, "out": 2, "imbalance": -2, "clamped_outs": 2}
    store.close()


def test_visits_left_open_by_a_crash_are_closed_and_not_counted(tmp_path):
    config = make_config(tmp_path)
    store = Store(config.storage.path)
    recorder = AnalyticsRecorder(store)
    recorder.sync_layout(config)
    recorder.record("aisle", frame("aisle", T0 + 5, [ZoneEvent("enter", "snacks", 1, T0 + 5)]))
    store.close()  # the agent dies here
    store = Store(config.storage.path)
    assert AnalyticsRecorder(store).sync_layout(config) == 1
    with sqlite3.connect(config.storage.path) as conn:
        assert conn.execute("SELECT closed_by, exit_ts - enter_ts FROM zone_visits").fetchall() == [("restart", 0)]
    window = Window("aisle", "2026-11-25T10:00Z", "2026-11-25T10:01Z")
    assert SECTIONS["zones"](store.db, window)["snacks"]["visits"] == 0
    assert SECTIONS["occupancy"](store.db, window)["zones"]["snacks"] == {"now": 0, "peak": 0}
    store.close()


def test_a_visit_that_ends_in_a_closed_minute_is_accounted_in_the_next_one(tmp_path):
    config = make_config(tmp_path)
    store = Store(config.storage.path)
    recorder = AnalyticsRecorder(store)
    recorder.sync_layout(config)
    recorder.record("aisle", frame("aisle", T0 + 50, [ZoneEvent("enter", "floor", 1, T0 + 50)]))
    store.record("aisle", T0 + 61, [])
    close_minutes(store, IDENTITY, {"aisle": []}, now=T0 + 61)  # 10:00 is closed and sent
    # the exit is decided late (grace period) but happened at 10:00:59
    recorder.record("aisle", frame("aisle", T0 + 62, visit("floor", 1, T0 + 50, T0 + 59)[1:]))
    store.record("aisle", T0 + 121, [])
    close_minutes(store, IDENTITY, {"aisle": []}, now=T0 + 121)
    first, second = payloads(config.storage.path)
    assert first["zones"]["floor"]["entries"] == 1 and first["zones"]["floor"]["visits"] == 0
    assert second["zones"]["floor"]["entries"] == 0 and second["zones"]["floor"]["visits"] == 1
    store.close()


def test_heatmap_is_stored_per_hour_and_summed_over_whole_hours(tmp_path):
    config = make_config(tmp_path)
    store = Store(config.storage.path)
    recorder = AnalyticsRecorder(store)
    cells = np.zeros((18, 32), dtype=np.int64)
    cells[9, 16] = 5
    for minute in (0, 1, 65):  # two minutes of 10:00 and one of 11:00
        recorder.record("aisle", frame("aisle", T0, heatmap=HeatmapChunk(T0 + 60 * minute, 32, 18, 10, cells)))
    with sqlite3.connect(config.storage.path) as conn:
        rows = conn.execute("SELECT hour, frames, cells FROM heatmap_hours ORDER BY hour").fetchall()
    assert [(hour, frames) for hour, frames, _ in rows] == [("2026-11-25T10:00Z", 20), ("2026-11-25T11:00Z", 10)]
    assert json.loads(rows[0][2])[9][16] == 10 and len(json.loads(rows[0][2])) == 18
    hour = SECTIONS["heatmap"](store.db, Window("aisle", "2026-11-25T10:00Z", "2026-11-25T11:00Z"))
    assert (hour["frames"], hour["cells"][9][16], hour["hours"]) == (20, 10, ["2026-11-25T10:00Z"])
    day = SECTIONS["heatmap"](store.db, Window("aisle", "2026-11-25T00:00Z", "2026-11-26T00:00Z"))
    assert (day["frames"], day["cells"][9][16]) == (30, 15)
    assert SECTIONS["heatmap"](store.db, Window("aisle", "2026-11-25T10:00Z", "2026-11-25T10:01Z")) is None
    store.close()
