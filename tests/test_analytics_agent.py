"""The running agent on real footage writes zone visits, heatmaps and the
analytics rollup sections (PETS09-S2L1, 150 frames, no broker needed)."""

from __future__ import annotations

import json
import sqlite3

import time

import pytest

from edge_agent.config import load_config
from edge_agent.rollup import close_minutes
from edge_agent.runtime import Agent, identity_from
from edge_agent.storage import Store

pytestmark = pytest.mark.slow

FRAMES = 150


def test_agent_writes_visits_heatmap_and_rollup_sections(tmp_path, assets_dir):
    config = load_config(
        assets_dir=assets_dir,
        cameras=[{
            "id": "square",
            "source": str(assets_dir / "vtest.avi"),
            "lines": [{"id": "east-west", "points": [[0.0, 0.55], [1.0, 0.55]]}],
            "zones": [
                {"id": "centre", "polygon": [[0.3, 0.3], [0.7, 0.3], [0.7, 0.8], [0.3, 0.8]]},
                {"id": "kiosk", "kind": "shelf", "product": "Newspapers",
                 "polygon": [[0.5, 0.3], [1.0, 0.3], [1.0, 0.7], [0.5, 0.7]]},
            ],
        }],
        storage={"path": str(tmp_path / "agent.db")},
        mqtt={"enabled": False},
        dashboard={"enabled": False},
        rollup={"interval_seconds": 0.5},
        analytics={"interaction_min_seconds": 1.0},
    )
    agent = Agent(config, realtime=False, max_frames=FRAMES)
    agent.start()
    agent.run(duration=120)
    agent.shutdown()  # decides held crossings, closes open visits, writes the last heatmap minute
    assert agent.cameras["square"].frames_processed == FRAMES
    # the minutes are still open (the run took seconds): close them as the next start would
    store = Store(config.storage.path)
    close_minutes(store, identity_from(config), agent.lines_by_camera(), now=time.time() + 3600)
    store.close()

    with sqlite3.connect(config.storage.path) as conn:
        visits = conn.execute("SELECT zone_id, exit_ts, closed_by, dwell_s, enter_bucket FROM zone_visits").fetchall()
        heat = conn.execute("SELECT SUM(frames), cols, rows, cells FROM heatmap_hours").fetchone()
        payloads = [json.loads(p) for (p,) in conn.execute("SELECT payload FROM outbox ORDER BY seq")]
        layout = conn.execute("SELECT zone_id, kind, product FROM camera_zones ORDER BY zone_id").fetchall()
    assert {zone for zone, *_ in visits} == {"centre", "kiosk"}, "people walk through both zones in these frames"
    assert all(exit_ts is not None and closed_by in ("exit", "shutdown") for _, exit_ts, closed_by, _, _ in visits)
    assert all(bucket is not None for *_, bucket in visits)
    assert layout == [("centre", "zone", None), ("kiosk", "shelf", "Newspapers")]
    frames, cols, rows, cells = heat
    assert (frames, cols, rows) == (FRAMES, 32, 18)
    assert sum(map(sum, json.loads(cells))) > FRAMES  # several people per frame on average

    assert payloads, "rollups were written"
    entries = sum(p["zones"].get("centre", {}).get("entries", 0) for p in payloads)
    assert entries == sum(1 for zone, *_ in visits if zone == "centre")
    finished_kiosk = [v for v in visits if v[0] == "kiosk" and v[2] == "exit"]
    assert sum(p["shelves"]["kiosk"]["passers_by"] for p in payloads) == len(finished_kiosk)
    assert all(p["shelves"]["kiosk"]["product"] == "Newspapers" for p in payloads)
    for payload in payloads:
        store = payload["occupancy"]["store"]
        assert store["now"] >= 0 and store["peak"] >= store["now"]
        assert set(payload["occupancy"]["zones"]) == {"centre", "kiosk"}
