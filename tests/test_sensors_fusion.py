"""Sensors beside the cameras: door agreement, shelf pick-ups with people, presence,
the disagreement warning, the registry's config checks, and a sensor-only store
end to end (beams → SQLite → rollup → MQTT uplink)."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import supervision as sv

from edge_agent.config import ConfigError, TrackerConfig, load_config
from edge_agent.mosquitto import Mosquitto
from edge_agent.pipeline import CameraAnalytics
from edge_agent.rollup import Identity, Window, close_minutes
from edge_agent.runtime import Agent
from edge_agent.sensors.fusion import agreement, attribute_pick_up, merged_seconds, sensors_section
from edge_agent.sensors.ingest import SensorIngestion
from edge_agent.sensors.simulate import DoorBeamNode, PirNode, ShelfScaleNode
from edge_agent.storage import Store, minute_of

IDENTITY = Identity("org", "store1", "box1")
CAMERAS = [{
    "id": "entrance",
    "source": "rtsp://camera.invalid/stream",
    "lines": [{"id": "main-door", "points": [[0.0, 0.5], [1.0, 0.5]]}],  # down the picture = in
    "zones": [{"id": "snacks", "kind": "shelf", "product": "Crisps",
               "polygon": [[0.6, 0.1], [0.9, 0.1], [0.9, 0.4], [0.6, 0.4]]}],
}]


def wait_until(predicate, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def broker(tmp_path):
    with Mosquitto(workdir=tmp_path / "broker") as server:
        yield server


def sensors_config(port, nodes, **extra):
    return {"broker": {"port": port}, "nodes": nodes, **extra}


class CameraScript:
    """Drives the real per-camera analytics (ByteTrack + line counter) with
    synthetic person boxes and commits crossings through the Store, as the agent does."""

    def __init__(self, config, store: Store, camera_id="entrance", fps=10.0):
        self.analytics = CameraAnalytics(config.camera(camera_id), TrackerConfig(), fps)
        self.store, self.camera_id, self.fps = store, camera_id, fps
        self.ts = time.time()

    def walk(self, direction: str, x: float = 0.3) -> list:
        """One person walks across the door line (top → bottom is in)."""
        ys = np.linspace(0.2, 0.8, 12) if direction == "in" else np.linspace(0.8, 0.2, 12)
        crossings = []
        # Then 1.5 s with nobody: the counting rules hold a crossing for their 1 s
        # cooldown (against jitter) before it is committed, as the live agent's next frames would.
        for y in list(ys) + [None] * 15:
            self.ts += 1 / self.fps
            if y is None:
                detections = sv.Detections.empty()
            else:
                x1, x2, y2 = x * 640 - 30, x * 640 + 30, y * 480
                detections = sv.Detections(xyxy=np.array([[x1, y2 - 150, x2, y2]], dtype=np.float32),
                                           confidence=np.array([0.9], dtype=np.float32),
                                           class_id=np.array([0]))
            result = self.analytics.process(detections, (480, 640, 3), self.ts)
            self.store.record(self.camera_id, self.ts, result.crossings)
            crossings += result.crossings
        self.ts += 3.0  # the tracker forgets the person before the next one
        return crossings


def rollups(db_path, camera=None) -> list[dict]:
    with sqlite3.connect(db_path) as conn:
        payloads = [json.loads(p) for (p,) in conn.execute("SELECT payload FROM outbox ORDER BY seq")]
    return [p for p in payloads if camera is None or p["camera"] == camera]


def test_agreement_rule():
    assert agreement({"in": 10, "out": 8}, {"in": 10, "out": 6}) == round(16 / 18, 3)
    assert agreement({"in": 0, "out": 0}, {"in": 0, "out": 0}) is None
    assert agreement({"in": 5, "out": 0}, {"in": 0, "out": 5}) == 0.0  # swapped directions do not agree
    assert agreement({"in": 3, "out": 3}, {"in": 3, "out": 3}) == 1.0


def test_door_rollup_carries_camera_beam_and_agreement(tmp_path, broker):
    config = load_config(cameras=CAMERAS, storage={"path": str(tmp_path / "a.db")}, sensors=sensors_config(
        broker.port, [{"id": "door-main", "kind": "door_beam", "door": "main", "line": "main-door"}]))
    store = Store(tmp_path / "a.db")
    ingestion = SensorIngestion(config.sensors, store, config.cameras)
    ingestion.start()
    try:
        assert wait_until(lambda: ingestion.connected)
        time.sleep(0.2)
        door = DoorBeamNode("door-main", broker.port).connect()
        camera = CameraScript(config, store)
        camera_script = ["in"] * 6 + ["out"] * 4
        beam_script = ["in"] * 6 + ["out"] * 3  # the beam missed one person going out
        counted = [c.direction for d in camera_script for c in camera.walk(d)]
        assert counted == camera_script  # the scripted tracks really crossed the camera's line
        for direction in beam_script:
            door.walk(direction)
        assert wait_until(lambda: ingestion.stored_events == len(beam_script))
        close_minutes(store, IDENTITY, {"entrance": ["main-door"]}, now=time.time() + 300)
        payloads = rollups(tmp_path / "a.db", "entrance")
        assert payloads
        totals = {"camera": {"in": 0, "out": 0}, "beam": {"in": 0, "out": 0}}
        for payload in payloads:
            entry = payload["sensors"]["doors"]["main"]
            assert entry["line"] == "main-door"
            assert entry["agreement"] == agreement(entry["camera"], entry["beam"])
            assert entry["camera"] == payload["lines"]["main-door"]  # the same camera counts as `lines`
            for side in totals:
                for direction in ("in", "out"):
                    totals[side][direction] += entry[side][direction]
        assert totals == {"camera": {"in": 6, "out": 4}, "beam": {"in": 6, "out": 3}}
        assert agreement(totals["camera"], totals["beam"]) == 0.9
        # Beam crossings of a door a camera counts are not copied into `events`.
        with store.lock:
            assert store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 10
        door.client.disconnect()
    finally:
        ingestion.stop()
        store.close()


def test_persistent_door_disagreement_raises_a_health_warning(tmp_path, broker):
    config = load_config(cameras=CAMERAS, storage={"path": str(tmp_path / "a.db")}, sensors=sensors_config(
        broker.port, [{"id": "door-main", "kind": "door_beam", "door": "main", "camera": "entrance",
                       "line": "main-door"}], door={"window_minutes": 10, "min_crossings": 8, "warn_below": 0.7}))
    store = Store(tmp_path / "a.db")
    ingestion = SensorIngestion(config.sensors, store, config.cameras)
    ingestion.start()
    try:
        assert wait_until(lambda: ingestion.connected)
        time.sleep(0.2)
        door = DoorBeamNode("door-main", broker.port).connect()
        door.diag()
        assert wait_until(lambda: ingestion.health()["nodes"][0]["messages"] >= 2)

        # A bumped camera: the beam counts people, the camera (almost) nobody.
        for _ in range(10):
            door.walk("in")
        camera = CameraScript(config, store)
        camera.walk("in")
        assert wait_until(lambda: ingestion.stored_events == 10)
        (warning,) = ingestion.check()
        assert warning["code"] == "door_disagreement" and warning["door"] == "main"
        assert warning["camera"] == {"in": 1, "out": 0} and warning["beam"] == {"in": 10, "out": 0}
        assert "camera counted fewer" in warning["message"] and "'entrance'" in warning["message"]
        assert ingestion.health()["warnings"] == [warning]

        # Ten minutes later the window has moved on: the warning clears by itself.
        later = ingestion.check(now=time.time() + 11 * 60)
        assert [w["code"] for w in later] == ["node_silent"]  # and, by then, a silent node

        # A blocked beam: the camera counts, the beam does not (and reports a beam broken).
        for _ in range(9):
            camera.walk("out")
        door.beam("a", True)
        door.state()
        assert wait_until(lambda: ingestion.health()["nodes"][0]["reading"].get("a_broken") is True)
        warnings = {w["code"]: w for w in ingestion.check(now=time.time() + 1)}
        assert "beam counted fewer" in warnings["door_disagreement"]["message"]
        assert "beam_blocked" not in warnings
        later = {w["code"] for w in ingestion.check(now=time.time() + config.sensors.blocked_beam_seconds + 5)}
        assert "beam_blocked" in later
        door.client.disconnect()
    finally:
        ingestion.stop()
        store.close()


def test_pick_up_attribution_rules(tmp_path):
    store = Store(tmp_path / "a.db")
    t = datetime(2026, 11, 25, 10, 0, 30, tzinfo=UTC).timestamp()
    db = store.db
    with store.transaction():
        db.execute("INSERT INTO camera_minutes (camera_id, minute, frames) VALUES ('cam', ?, 300)", [minute_of(t)])
        visits = [  # (zone, track, enter, exit, kind)
            ("snacks", 1, t - 20, t - 3, "visitor"),  # left 3 s before the scale settled: within 5 s
            ("drinks", 2, t - 20, t - 8, "visitor"),  # left 8 s before: too early
            ("cheese", 3, t - 60, t + 10, "staff"),  # restocking
            ("wine", 4, t - 10, None, "visitor"),  # still there
            ("beer", 5, t - 7200, None, "visitor"),  # a track never closed two hours ago: ignored
            ("tea", 6, t + 1, t + 30, "visitor"),  # arrived 1 s after: within the 2 s after
        ]
        db.conn.executemany("INSERT INTO zone_visits (zone_id, track_id, enter_ts, exit_ts, kind, camera_id) "
                            "VALUES (?, ?, ?, ?, ?, 'cam')", visits)
    rule = lambda zone, camera="cam": attribute_pick_up(db, camera, zone, t, 5.0, 2.0)  # noqa: E731
    assert rule("snacks") == "visitor"
    assert rule("drinks") == "nobody"  # the camera ran and saw nobody then
    assert rule("cheese") == "staff"
    assert rule("wine") == "visitor"
    assert rule("beer") == "nobody"
    assert rule("tea") == "visitor"
    assert rule("snacks", camera=None) == "unwatched"
    assert attribute_pick_up(db, "cam", "snacks", t + 3600, 5.0, 2.0) == "unwatched"  # camera not running then
    store.close()


def test_shelf_pick_ups_in_the_rollup(tmp_path, broker):
    config = load_config(cameras=CAMERAS, storage={"path": str(tmp_path / "a.db")}, sensors=sensors_config(
        broker.port, [{"id": "shelf-snacks", "kind": "shelf_scale", "zone": "snacks"},
                      {"id": "shelf-back", "kind": "shelf_scale", "zone": "backroom", "product": "Water 6-pack"}],
        shelf={"match_before_seconds": 0, "match_after_seconds": 0}))
    store = Store(tmp_path / "a.db")
    ingestion = SensorIngestion(config.sensors, store, config.cameras)
    ingestion.start()
    try:
        assert wait_until(lambda: ingestion.connected)
        time.sleep(0.2)
        shelf = ShelfScaleNode("shelf-snacks", broker.port, item_weight_g=100).connect()
        back = ShelfScaleNode("shelf-back", broker.port, item_weight_g=1000).connect()
        shelf.place(2000.0)
        back.place(9000.0)
        for grams in (1800.0, 1700.0, 1400.0, 1300.0):  # four pick-ups, 2+1+3+1 bags
            shelf.place(grams)
            time.sleep(0.05)
        shelf.place(1400.0)  # one bag put back
        back.place(6000.0)  # three packs from a shelf no camera sees
        assert wait_until(lambda: ingestion.stored_events == 6)
        with store.lock:
            picks = store.db.execute("SELECT ts FROM sensor_events WHERE node_id = 'shelf-snacks' "
                                     "AND type = 'pick_up' ORDER BY ts").fetchall()
        (t1,), (t2,), (t3,), (t4,) = picks
        camera = CameraScript(config, store)
        for ts in (t1 - 1, t2, t3, t4):  # the camera was running (frames in every minute the picks fall in)
            store.record("entrance", ts, [])
        with store.transaction() as db:
            db.conn.executemany(
                "INSERT INTO zone_visits (camera_id, zone_id, track_id, enter_ts, exit_ts, kind) VALUES (?,?,?,?,?,?)",
                [("entrance", "snacks", 1, t1 - 5, t1 + 0.001, "visitor"),  # a shopper at pick-up 1
                 ("entrance", "snacks", 2, t2 - 0.001, t2 + 0.001, "staff"),  # staff at 2; nobody at 3
                 ("entrance", "snacks", 3, t4 - 0.001, None, "visitor")],  # a shopper, still there, at 4
            )
        del camera
        close_minutes(store, IDENTITY, {"entrance": ["main-door"]}, now=time.time() + 300)
        total: dict[str, int] = {}
        for payload in rollups(tmp_path / "a.db", "entrance"):
            for zone, entry in payload["sensors"]["shelves"].items():
                assert zone == "snacks" and entry["product"] == "Crisps"  # the camera zone's label
                for key, value in entry.items():
                    if key != "product":
                        total[key] = total.get(key, 0) + value
        assert total == {"pick_ups": 4, "items_picked": 7, "put_backs": 1, "items_returned": 1,
                         "with_visitor": 2, "with_staff": 1, "nobody_seen": 1, "unwatched": 0}
        (sensor_only,) = [p for p in rollups(tmp_path / "a.db", "sensors") if p["sensors"]["shelves"]["backroom"]["pick_ups"]]
        assert sensor_only["sensors"]["shelves"]["backroom"] == {
            "product": "Water 6-pack", "pick_ups": 1, "items_picked": 3, "put_backs": 0, "items_returned": 0,
            "with_visitor": 0, "with_staff": 0, "nobody_seen": 0, "unwatched": 1}
        shelf.client.disconnect()
        back.client.disconnect()
    finally:
        ingestion.stop()
        store.close()


def test_presence_seconds_from_pir_events(tmp_path):
    store = Store(tmp_path / "a.db")
    start = datetime(2026, 11, 25, 10, 0, tzinfo=UTC).timestamp()
    rows = [  # node, ts, motion: pir-a on from before the minute, pir-b overlapping it, then a short one
        ("pir-a", start - 20, 1), ("pir-a", start + 10, 0),
        ("pir-b", start + 5, 1), ("pir-b", start + 15, 0),
        ("pir-a", start + 40, 1), ("pir-a", start + 45, 0),
        ("pir-b", start + 55, 1),  # still on at the end of the minute
    ]
    with store.transaction() as db:
        for node in ("pir-a", "pir-b"):
            db.execute("INSERT INTO sensor_nodes (node_id, kind, source, zone_id, updated_at) "
                       "VALUES (?, 'pir', 'sensors', 'aisle', 0)", [node])
        for i, (node, ts, motion) in enumerate(rows):
            db.execute("INSERT INTO sensor_events (node_id, ts, bucket, source, type, zone_id, motion, boot, seq) "
                       "VALUES (?, ?, ?, 'sensors', 'motion', 'aisle', ?, 1, ?)", [node, ts, minute_of(ts), motion, i])
    section = sensors_section(store.db, Window("sensors", minute_of(start), minute_of(start + 60)))
    # 0-15 s (a, then b), 40-45 s, 55-60 s: 25 s; activations counted in this minute: b, a, b.
    assert section["presence"] == {"aisle": {"activations": 3, "motion_s": 25.0}}
    assert section["doors"] == {} and section["shelves"] == {}
    assert merged_seconds([(0, 10), (5, 12), (20, 25), (24, 30)], 2, 28) == 18
    # A camera without sensors gets an empty section.
    assert sensors_section(store.db, Window("other-camera", minute_of(start), minute_of(start + 60))) == {}
    store.close()


# -- config --------------------------------------------------------------------------------
@pytest.mark.parametrize("nodes, message", [
    ([{"id": "door-1", "kind": "door_beam"}], "needs door"),
    ([{"id": "door-1", "kind": "door_beam", "door": "main", "camera": "nope", "line": "x"}], "no camera 'nope'"),
    ([{"id": "door-1", "kind": "door_beam", "door": "main", "line": "side-door"}], "line 'side-door'"),
    ([{"id": "door-1", "kind": "door_beam", "door": "main", "camera": "entrance"}], "needs line"),
    ([{"id": "pir-1", "kind": "pir"}], "needs zone"),
    ([{"id": "pir-1", "kind": "pir", "zone": "a", "door": "main"}], "door/line/swap_direction are for door_beam"),
    ([{"id": "shelf-1", "kind": "shelf_scale", "zone": "wine", "camera": "entrance"}],
     "camera 'entrance' has no zone 'wine'"),
    ([{"id": "Door_1", "kind": "door_beam", "door": "main"}], "sensors.nodes[0] (id 'Door_1').id"),
    ([{"id": "pir-1", "kind": "pir", "zone": "a"}, {"id": "pir-1", "kind": "pir", "zone": "b"}], "used twice"),
    ([{"id": "pir-1", "kind": "radar", "zone": "a"}], "kind"),
])
def test_registry_errors_name_the_field_and_the_fix(nodes, message):
    with pytest.raises(ConfigError) as error:
        load_config(cameras=CAMERAS, sensors={"nodes": nodes})
    assert message in str(error.value)


def test_registry_resolves_cameras_and_env_overrides(monkeypatch):
    monkeypatch.setenv("EDGE_AGENT_SENSORS__BROKER__PORT", "18830")
    config = load_config(cameras=CAMERAS + [{**CAMERAS[0], "id": "disabled-cam", "enabled": False,
                                             "lines": [], "zones": [{"id": "tills", "polygon": [[0, 0], [1, 0], [1, 1]]}]}],
                         sensors={"nodes": [
                             {"id": "door-1", "kind": "door_beam", "door": "main", "line": "main-door"},
                             {"id": "door-2", "kind": "door_beam", "door": "side"},
                             {"id": "shelf-1", "kind": "shelf_scale", "zone": "snacks"},
                             {"id": "pir-1", "kind": "pir", "zone": "tills"}]})
    assert config.sensors.broker.port == 18830
    from edge_agent.sensors.config import resolve_nodes

    nodes = resolve_nodes(config.sensors, config.cameras)
    assert (nodes["door-1"].source, nodes["door-1"].camera, nodes["door-1"].line) == ("entrance", "entrance", "main-door")
    assert (nodes["door-2"].source, nodes["door-2"].camera) == ("sensors", None)
    assert (nodes["shelf-1"].camera, nodes["shelf-1"].product) == ("entrance", "Crisps")
    assert (nodes["pir-1"].source, nodes["pir-1"].camera) == ("sensors", None)  # its camera is disabled
    with pytest.raises(ConfigError, match="source_id"):
        load_config(cameras=[{**CAMERAS[0], "id": "sensors"}], sensors={"nodes": []})


# -- a store with sensors and no camera ---------------------------------------------------------
def test_sensor_only_store_end_to_end(tmp_path, broker, subscribe):
    subscriber = subscribe(broker.port, "smartstore/v1/o1/s1/d1/#")
    config = load_config(
        assets_dir=tmp_path / "no-models-here",
        storage={"path": str(tmp_path / "agent.db")},
        mqtt={"port": broker.port, "org": "o1", "store_id": "s1", "device_id": "d1"},
        dashboard={"enabled": False},
        rollup={"interval_seconds": 0.5},
        sensors=sensors_config(broker.port, [
            {"id": "door-main", "kind": "door_beam", "door": "main"},
            {"id": "door-side", "kind": "door_beam", "door": "side", "swap_direction": True},
            {"id": "aisle-pir", "kind": "pir", "zone": "aisle-3"},
            {"id": "shelf-1", "kind": "shelf_scale", "zone": "snacks", "product": "Crisps"}]),
    )
    agent = Agent(config)
    agent.start()  # no camera: no detector is loaded (there is no model in assets_dir)
    try:
        assert wait_until(lambda: agent.sensors.connected)
        time.sleep(0.2)
        main = DoorBeamNode("door-main", broker.port).connect()
        side = DoorBeamNode("door-side", broker.port).connect()
        pir = PirNode("aisle-pir", broker.port).connect()
        shelf = ShelfScaleNode("shelf-1", broker.port).connect()
        for direction in ("in", "in", "in", "out"):
            main.walk(direction)
        side.walk("in")  # mounted the other way round: an "out"
        pir.set_motion(True)
        shelf.place(1000.0)
        shelf.place(800.0)
        assert wait_until(lambda: agent.sensors.stored_events == 7)
        agent.rollup_now(now=time.time() + 120)

        def received():
            lines = {"main": {"in": 0, "out": 0}, "side": {"in": 0, "out": 0}}
            picks = 0
            for body in subscriber.payloads("rollup/minute"):
                assert body["camera"] == "sensors" and body["frames"] == 0
                for door, counts in body["lines"].items():
                    for direction in ("in", "out"):
                        lines[door][direction] += counts[direction]
                        assert body["sensors"]["doors"][door]["beam"] == counts
                picks += sum(s["pick_ups"] for s in body["sensors"]["shelves"].values())
            return lines, picks

        assert wait_until(lambda: received() == ({"main": {"in": 3, "out": 1}, "side": {"in": 0, "out": 1}}, 1))
        body = subscriber.payloads("rollup/minute")[0]
        assert body["id"].startswith("o1/s1/d1/sensors/minute/")
        assert set(body["sensors"]) == {"doors", "shelves", "presence"}
        assert body["sensors"]["doors"]["main"]["camera"] is None

        health = agent.health()
        assert health["cameras"] == [] and health["detector"]["backend"] is None
        sensors = health["sensors"]
        assert sensors["connected"] and sensors["stored_events"] == 7
        assert {n["id"]: n["online"] for n in sensors["nodes"]} == {
            "door-main": True, "door-side": True, "aisle-pir": True, "shelf-1": True}
        for node in (main, side, pir, shelf):
            node.client.disconnect()
    finally:
        agent.shutdown()
    with sqlite3.connect(tmp_path / "agent.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0] == 0
        assert conn.execute("SELECT line_id, direction, COUNT(*) FROM events GROUP BY line_id, direction "
                            "ORDER BY line_id, direction").fetchall() == [("main", "in", 3), ("main", "out", 1),
                                                                          ("side", "out", 1)]


def test_example_store_config_registers_its_sensors():
    from pathlib import Path

    from edge_agent.sensors.config import resolve_nodes

    config = load_config(Path(__file__).resolve().parent.parent / "examples" / "store.yaml")
    nodes = resolve_nodes(config.sensors, config.cameras)
    assert (nodes["door-main"].source, nodes["door-main"].line) == ("entrance", "main-door")
    assert nodes["aisle-3-pir"].source == "sensors"
    assert (nodes["shelf-snacks"].camera, nodes["shelf-snacks"].product) == ("aisle-3", "Snacks / crisps")
