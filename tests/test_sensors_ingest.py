"""Sensor ingestion on a real mosquitto: simulated ESPHome nodes, lost and
duplicated messages, restarts, and a fuzzer throwing thousands of bad messages."""

from __future__ import annotations

import json
import random
import sqlite3
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.config import load_config
from edge_agent.mosquitto import Mosquitto
from edge_agent.sensors.ingest import MAX_UNKNOWN_NODES, SensorIngestion
from edge_agent.sensors.simulate import DoorBeamNode, PirNode, ShelfScaleNode
from edge_agent.storage import Store

NODES = [
    {"id": "door-1", "kind": "door_beam", "door": "main"},
    {"id": "pir-1", "kind": "pir", "zone": "aisle-3"},
    {"id": "shelf-1", "kind": "shelf_scale", "zone": "snacks", "product": "Crisps"},
]


def wait_until(predicate, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def broker(tmp_path):
    # Deep queues so a fuzzer's thousands of QoS 1 messages all reach the agent.
    with Mosquitto(workdir=tmp_path / "broker", extra="max_queued_messages 100000") as server:
        yield server


class Harness:
    def __init__(self, tmp_path, broker, **sensors):
        self.tmp_path, self.broker = tmp_path, broker
        self.db_path = tmp_path / "agent.db"
        self.config = load_config(storage={"path": str(self.db_path)},
                                  sensors={"broker": {"port": broker.port}, "nodes": NODES, **sensors})
        self.store = Store(self.db_path)
        self.ingestion: SensorIngestion | None = None
        self.made: list = []

    def start(self) -> SensorIngestion:
        self.ingestion = SensorIngestion(self.config.sensors, self.store, self.config.cameras)
        self.ingestion.start()
        assert wait_until(lambda: self.ingestion.connected), "ingestion did not connect"
        time.sleep(0.2)  # subscription acknowledged
        return self.ingestion

    def node(self, cls, node_id, **kwargs):
        node = cls(node_id, self.broker.port, **kwargs).connect()
        self.made.append(node)
        return node

    def node_health(self, node_id) -> dict:
        return next(n for n in self.ingestion.health()["nodes"] if n["id"] == node_id)

    def rows(self, sql, args=()):
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(sql, args).fetchall()

    def close(self):
        for node in self.made:
            try:
                node.client.disconnect()
                node.client.loop_stop()
            except Exception:
                pass
        if self.ingestion is not None:
            self.ingestion.stop()
        self.store.close()


@pytest.fixture
def harness(tmp_path, broker):
    made = []

    def factory(**sensors) -> Harness:
        h = Harness(tmp_path, broker, **sensors)
        made.append(h)
        return h

    yield factory
    for h in made:
        h.close()


def test_door_beam_node_counts_in_and_out(harness):
    h = harness()
    ingestion = h.start()
    door = h.node(DoorBeamNode, "door-1")
    for direction in ["in", "in", "out", "in", "out"]:
        assert door.walk(direction) is not None
    # Legs: beam A breaks twice before B, then both clear: one person, one count.
    door.beam("a", True), door.beam("a", False), door.beam("a", True), door.beam("b", True)
    door.beam("b", False), door.beam("b", True), door.beam("a", False), door.beam("b", False)
    # Someone steps into beam A and back out: nothing.
    door.beam("a", True), door.beam("a", False)
    door.state()
    door.diag(up=3600, rssi=-67)
    assert wait_until(lambda: ingestion.health()["stored_readings"] >= 6)

    assert h.rows("SELECT direction, recovered, seq FROM sensor_events WHERE node_id = 'door-1' ORDER BY id") == [
        ("in", 0, 1), ("in", 0, 2), ("out", 0, 3), ("in", 0, 4), ("out", 0, 5), ("in", 0, 6)]
    # No camera covers this door: the beam's crossings are the door's counts in `events`.
    assert h.rows("SELECT camera_id, line_id, direction, COUNT(*) FROM events GROUP BY direction ORDER BY direction") == [
        ("sensors", "main", "in", 4), ("sensors", "main", "out", 2)]
    readings = dict(h.rows("SELECT kind, value FROM sensor_readings WHERE node_id = 'door-1'"))
    assert readings == {"in_total": 4, "out_total": 2, "beam_a_broken": 0, "beam_b_broken": 0,
                        "uptime_s": 3600, "rssi": -67}
    node = h.node_health("door-1")
    assert node["online"] and node["status"] == "online"
    assert node["rssi"] == -67 and node["uptime_s"] == 3600
    assert node["events"] == 6 and node["errors"] == {} and node["missed_events"] == 0
    assert node["reading"] == {"in_total": 4, "out_total": 2, "a_broken": False, "b_broken": False}
    assert node["messages"] == 8 + 1  # 6 events, state, diag, and the (not retained) birth
    assert node["messages_per_min"] == node["messages"]


def test_pir_and_battery(harness):
    h = harness()
    ingestion = h.start()
    pir = h.node(PirNode, "pir-1")
    pir.set_motion(True)
    pir.set_motion(False)
    pir.set_motion(True)
    pir.state()
    pir.battery(3.914)
    assert wait_until(lambda: ingestion.health()["stored_readings"] >= 2)
    assert h.rows("SELECT zone_id, motion, seq FROM sensor_events ORDER BY id") == [
        ("aisle-3", 1, 1), ("aisle-3", 0, 2), ("aisle-3", 1, 3)]
    node = h.node_health("pir-1")
    assert node["battery_v"] == 3.91 and node["reading"] == {"motion": True}
    assert dict(h.rows("SELECT kind, value FROM sensor_readings")) == {"motion": 1.0, "battery_v": 3.91}


def test_shelf_scale_pick_up_and_put_back(harness):
    h = harness()
    ingestion = h.start()
    shelf = h.node(ShelfScaleNode, "shelf-1", item_weight_g=100, pickup_threshold_g=40)
    assert shelf.place(1000.0) is None  # first settled weight: the baseline
    assert shelf.place(1012.0) is None  # drift below the threshold: no event
    assert json.loads(shelf.place(611.0))["type"] == "pick_up"  # four 100 g bags
    assert json.loads(shelf.place(712.0))["type"] == "put_back"
    # A hand resting on the shelf and lifted again never settles: no event.
    for grams in (1500, 900, 1400, 712, 712, 712, 712, 712):
        shelf.reading(grams)
    shelf.state()
    assert wait_until(lambda: ingestion.health()["stored_readings"] >= 1)
    assert h.rows("SELECT type, delta_g, weight_g, items, zone_id FROM sensor_events ORDER BY id") == [
        ("pick_up", -401.0, 611.0, 4, "snacks"), ("put_back", 101.0, 712.0, 1, "snacks")]
    assert h.rows("SELECT kind, value FROM sensor_readings") == [("weight_g", 712.0)]
    assert h.node_health("shelf-1")["reading"] == {"weight_g": 712.0}


def test_lost_crossings_are_recovered_and_duplicates_stored_once(harness):
    h = harness()
    ingestion = h.start()
    door = h.node(DoorBeamNode, "door-1")
    door.walk("in")
    door.offline = True  # Wi-Fi down: two events never arrive
    door.walk("in")
    door.walk("out")
    door.offline = False
    payload = door.walk("in")
    assert wait_until(lambda: ingestion.stored_events >= 4)
    # The same event delivered again (QoS 1 re-send after a reconnect).
    door.publish("event", payload, qos=1)
    door.offline = True
    door.walk("out")
    door.offline = False
    door.state()  # its totals reveal the last lost crossing
    assert wait_until(lambda: ingestion.stored_events >= 5)
    time.sleep(0.3)
    rows = h.rows("SELECT direction, recovered FROM sensor_events ORDER BY id")
    assert sorted(rows) == sorted([("in", 0), ("in", 1), ("out", 1), ("in", 0), ("out", 1)])
    assert h.rows("SELECT direction, COUNT(*) FROM events GROUP BY direction") == [("in", 3), ("out", 2)]
    node = h.node_health("door-1")
    assert node["duplicates"] == 1 and node["recovered"] == 3
    assert node["missed_events"] == 2  # seq 2 and 3 never came (seq 5's loss shows only in totals)

    # A reboot: new boot id, counters from zero; nothing is recovered across it.
    door.reboot()
    door.walk("out")
    door.walk("in")
    assert wait_until(lambda: ingestion.stored_events >= 7)
    assert h.node_health("door-1")["reboots"] == 1
    assert h.rows("SELECT direction, COUNT(*) FROM events GROUP BY direction") == [("in", 4), ("out", 3)]


def test_birth_and_last_will_mark_a_node_offline(harness):
    h = harness(offline_after_seconds=60)
    ingestion = h.start()
    pir = PirNode("pir-1", h.broker.port).connect()
    assert wait_until(lambda: h.node_health("pir-1")["status"] == "online")
    pir.crash()  # power cut: the broker publishes the retained last will
    assert wait_until(lambda: h.node_health("pir-1")["status"] == "offline")
    assert not h.node_health("pir-1")["online"]
    codes = {(w["code"], w["node"]) for w in ingestion.check() if "node" in w}
    assert ("node_offline", "pir-1") in codes
    assert ("node_silent", "door-1") in codes  # never heard from


def test_events_published_while_the_agent_is_down_arrive_after_restart(harness):
    h = harness()
    ingestion = h.start()
    door = h.node(DoorBeamNode, "door-1")
    door.walk("in")
    assert wait_until(lambda: ingestion.stored_events == 1)
    ingestion.stop()  # the broker keeps the session (session expiry) and queues QoS 1 events
    for direction in ("in", "out", "in"):
        door.walk(direction)
    again = h.start()
    assert wait_until(lambda: again.stored_events == 3)
    door.walk("out")
    assert wait_until(lambda: again.stored_events == 4)
    time.sleep(0.3)
    assert h.rows("SELECT seq, recovered FROM sensor_events ORDER BY seq") == [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]
    assert h.node_health("door-1")["duplicates"] == 0


# -- fuzzing ----------------------------------------------------------------------------------
def _malformed(rng: random.Random) -> list[tuple[str, bytes, str, str]]:
    """(node, payload, leaf, expected category) — every one must be refused and counted."""
    good_crossing = {"type": "crossing", "direction": "in", "in_total": 1, "out_total": 0, "boot": 5, "seq": 1}
    good_pick = {"type": "pick_up", "delta_g": -100.0, "weight_g": 500.0, "items": 1, "boot": 5, "seq": 1}

    def variant(base: dict, **changes) -> bytes:
        body = {**base, **changes}
        return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()

    cases = []
    invalid_json = [b"", b"{", b"not json", b"\xff\xfe\x00", b"[1, 2]", b'"text"', b"42", b"null",
                    b'{"boot": 1, "seq": NaN}', b'{"seq": Infinity}', b"[" * 3000, b'{"a":' * 1500]
    for _ in range(20):
        invalid_json.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))).replace(b"{", b"("))
    for payload in invalid_json:
        cases.append(("door-1", payload, "event", "too_large" if len(payload) > 4096 else "invalid_json"))
    invalid_payload = [
        variant(good_crossing, seq="1"), variant(good_crossing, boot=True), variant(good_crossing, direction=5),
        variant(good_crossing, direction="sideways"), variant(good_crossing, in_total=...),
        variant(good_crossing, type="explode"), variant(good_crossing, type=None), variant(good_crossing, in_total=1.5),
        variant(good_crossing, out_total=[1]), variant(good_crossing, seq={"n": 1}), b"{}",
    ]
    cases += [("door-1", p, "event", "invalid_payload") for p in invalid_payload]
    cases += [("shelf-1", variant(good_pick, delta_g=100.0), "event", "invalid_payload"),  # pick-up that got heavier
              ("shelf-1", variant(good_pick, items="3"), "event", "invalid_payload"),
              ("pir-1", json.dumps({"type": "motion", "state": "on", "boot": 1, "seq": 1}).encode(), "event",
               "invalid_payload"),
              ("pir-1", b"maybe", "status", "invalid_payload"),
              ("door-1", json.dumps({"in_total": "3", "out_total": 1, "boot": 1, "seq": 0}).encode(), "state",
               "invalid_payload")]
    out_of_range = [
        ("door-1", variant(good_crossing, in_total=-1)), ("door-1", variant(good_crossing, in_total=10**40)),
        ("door-1", variant(good_crossing, boot=2**33)), ("door-1", variant(good_crossing, seq=0)),
        ("shelf-1", variant(good_pick, delta_g=-1e300)), ("shelf-1", variant(good_pick, items=0)),
        ("shelf-1", b'{"type":"pick_up","delta_g":-1e400,"weight_g":1,"items":1,"boot":1,"seq":1}'),
    ]
    cases += [(node, p, "event", "out_of_range") for node, p in out_of_range]
    cases += [("door-1", json.dumps({"boot": 1, "rssi": 40}).encode(), "diag", "out_of_range"),
              ("pir-1", json.dumps({"boot": 1, "battery_v": -3.0}).encode(), "diag", "out_of_range")]
    cases += [("door-1", json.dumps({"type": "motion", "state": True, "boot": 1, "seq": 1}).encode(), "event",
               "wrong_kind"),
              ("shelf-1", variant(good_crossing), "event", "wrong_kind")]
    cases += [("pir-1", b'{"boot":1}', "firmware", "bad_topic"), ("pir-1", b"{}", "event/extra", "bad_topic")]
    cases += [("door-1", json.dumps({**good_crossing, "pad": "x" * 5000}).encode(), "event", "too_large")]
    return cases


def test_fuzzed_messages_are_counted_per_node_and_never_stored(harness):
    h = harness(max_messages_per_second=10000, burst=100000)
    ingestion = h.start()
    rng = random.Random(5)
    cases = _malformed(rng)
    expected: dict[tuple[str, str], int] = {}
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer", protocol=MQTTProtocolVersion.MQTTv5)
    publisher.connect("127.0.0.1", h.broker.port)
    publisher.loop_start()
    door = h.node(DoorBeamNode, "door-1")
    sent = 0
    walks = 0
    infos = []
    for round_ in range(60):  # thousands of bad messages, with real crossings in between
        for node, payload, leaf, category in cases:
            infos.append(publisher.publish(f"sensors/{node}/{leaf}", payload, qos=1))
            expected[(node, category)] = expected.get((node, category), 0) + 1
            sent += 1
        for i in range(40):  # unknown nodes and topics that are not node ids
            infos.append(publisher.publish(f"sensors/ghost-{round_}-{i}/event", b"{}", qos=1))
            sent += 1
        infos.append(publisher.publish("sensors/NOT A NODE/event", b"{}", qos=1))
        infos.append(publisher.publish("sensors", b"{}", qos=1))
        sent += 2
        door.walk("in" if round_ % 3 else "out")
        walks += 1
    for info in infos:
        info.wait_for_publish(10)
    publisher.loop_stop()
    publisher.disconnect()
    assert sent > 5000

    def counted() -> int:
        health = ingestion.health()
        errors = sum(sum(n["errors"].values()) for n in health["nodes"])
        return errors + sum(health["unknown_nodes"].values()) + sum(health["errors"].values())

    assert wait_until(lambda: counted() == sent and ingestion.stored_events == walks, timeout=60), \
        (counted(), sent, ingestion.stored_events, walks)
    health = ingestion.health()
    for node in health["nodes"]:
        got = node["errors"]
        want = {category: n for (node_id, category), n in expected.items() if node_id == node["id"]}
        assert got == want, node["id"]
        if want:
            assert node["last_error"]["category"] in want
    # Unknown nodes: counted, but only MAX_UNKNOWN_NODES ids remembered (bounded memory).
    assert len(health["unknown_nodes"]) == MAX_UNKNOWN_NODES + 1
    assert sum(health["unknown_nodes"].values()) == 60 * 40
    assert health["errors"] == {"bad_topic": 120}
    # Nothing malformed was stored; every real crossing was, once.
    assert h.rows("SELECT COUNT(*) FROM sensor_events") == [(walks,)]
    assert h.rows("SELECT COUNT(*) FROM events") == [(walks,)]
    assert h.rows("SELECT COUNT(*) FROM sensor_readings") == [(0,)]
    assert h.rows("PRAGMA integrity_check") == [("ok",)]
    assert h.node_health("door-1")["events"] == walks
    # Still running and still counting.
    assert ingestion.connected and ingestion._writer.is_alive()
    door.walk("in")
    assert wait_until(lambda: ingestion.stored_events == walks + 1)


def test_a_flooding_node_is_rate_limited_without_starving_the_others(harness):
    h = harness(max_messages_per_second=50, burst=100)
    h.start()
    pir = h.node(PirNode, "pir-1")
    shelf = h.node(ShelfScaleNode, "shelf-1")
    shelf.place(1000.0)
    flood = 3000
    infos = []
    for i in range(flood):
        pir.seq += 1
        infos.append(pir.client.publish("sensors/pir-1/event", json.dumps(
            {"type": "motion", "state": bool(i % 2), "boot": pir.boot, "seq": pir.seq}), qos=1))
        if i % 500 == 0:
            shelf.place(1000.0 - 100 * (i // 500 + 1))  # a real pick-up during the flood
    for info in infos:
        info.wait_for_publish(10)

    def settled():
        node = h.node_health("pir-1")
        return node["events"] + node["errors"].get("rate_limited", 0) == flood

    assert wait_until(settled, timeout=60)
    node = h.node_health("pir-1")
    assert node["errors"]["rate_limited"] > flood // 2
    assert node["events"] >= 90  # about the burst (the birth message took a token too)
    assert h.rows("SELECT COUNT(*) FROM sensor_events WHERE node_id = 'pir-1'") == [(node["events"],)]
    assert wait_until(lambda: h.node_health("shelf-1")["events"] == 6)  # the other node lost nothing
    assert h.node_health("shelf-1")["errors"] == {}


def test_write_queue_is_bounded_when_sqlite_is_stuck(harness):
    h = harness(queue_size=20, max_messages_per_second=10000, burst=100000)
    ingestion = h.start()
    pir = h.node(PirNode, "pir-1")
    sent = 300
    with h.store.lock:  # SQLite busy (e.g. a slow card): the writer cannot commit
        for _ in range(sent):
            pir.state()  # QoS 0: nothing holds these back at the broker
        assert wait_until(lambda: h.node_health("pir-1")["errors"].get("overflow", 0) >= sent - 2 * 20)
        assert len(ingestion._queue) <= 20
    overflow = lambda: h.node_health("pir-1")["errors"]["overflow"]  # noqa: E731
    assert wait_until(lambda: ingestion.stored_readings + overflow() == sent)
    assert h.rows("SELECT COUNT(*) FROM sensor_readings")[0][0] == sent - overflow()
    pir.set_motion(True)
    assert wait_until(lambda: ingestion.stored_events == 1)


def test_disabled_node_messages_are_counted_not_stored(tmp_path, broker):
    nodes = [dict(NODES[1], enabled=False)]
    config = load_config(storage={"path": str(tmp_path / "a.db")}, sensors={"broker": {"port": broker.port},
                                                                            "nodes": nodes})
    store = Store(tmp_path / "a.db")
    ingestion = SensorIngestion(config.sensors, store)
    ingestion.start()
    try:
        assert wait_until(lambda: ingestion.connected)
        time.sleep(0.2)
        pir = PirNode("pir-1", broker.port).connect()
        pir.set_motion(True)
        assert wait_until(lambda: ingestion.health()["nodes"][0]["errors"].get("disabled") == 2)  # birth + event
        assert ingestion.stored_events == 0
        pir.client.disconnect()
    finally:
        ingestion.stop()
        store.close()


def test_cli_lists_the_registry_and_simulates_every_node(harness, tmp_path):
    from click.testing import CliRunner

    from edge_agent.cli import main

    h = harness()
    ingestion = h.start()
    config_file = tmp_path / "store.yaml"
    config_file.write_text(json.dumps({"storage": {"path": str(tmp_path / "other.db")},
                                       "sensors": {"broker": {"port": h.broker.port}, "nodes": NODES}}))
    runner = CliRunner()
    listed = runner.invoke(main, ["sensors", "nodes", "--config", str(config_file)])
    assert listed.exit_code == 0, listed.output
    assert "door-1" in listed.output and "rollup sensors" in listed.output and "sensors/shelf-1/#" in listed.output
    result = runner.invoke(main, ["sensors", "simulate", "--config", str(config_file), "--count", "3"])
    assert result.exit_code == 0, result.output
    assert wait_until(lambda: ingestion.stored_events == 9)
    assert h.rows("SELECT node_id, type, COUNT(*) FROM sensor_events GROUP BY node_id, type ORDER BY node_id, type") == [
        ("door-1", "crossing", 3), ("pir-1", "motion", 3), ("shelf-1", "pick_up", 2), ("shelf-1", "put_back", 1)]
    assert all(not n["errors"] for n in ingestion.health()["nodes"])
    bad = runner.invoke(main, ["sensors", "simulate", "--config", str(config_file), "--node", "ghost"])
    assert bad.exit_code != 0 and "not in sensors.nodes" in bad.output


def test_documented_broker_acl_stops_a_node_speaking_for_another(tmp_path):
    """docs/sensors.md's mosquitto setup: each node logs in as its id and may
    only publish under sensors/<its id>/; the agent reads everything."""
    import subprocess

    work = tmp_path / "acl-broker"
    work.mkdir()
    passwords = work / "passwd"
    for user, secret in (("edge-agent", "agent-pw"), ("door-1", "node-pw"), ("pir-1", "node-pw")):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if not passwords.exists() else []), str(passwords),
                        user, secret], check=True, capture_output=True)
    acl = work / "acl"
    acl.write_text("user edge-agent\ntopic read sensors/#\n\npattern readwrite sensors/%u/#\n")
    # (Mosquitto() keeps a root-run broker as root, so it can read pytest's tmp dirs.)
    with Mosquitto(workdir=work, allow_anonymous=False,
                   extra=f"password_file {passwords}\nacl_file {acl}\n") as broker:
        config = load_config(storage={"path": str(tmp_path / "a.db")}, sensors={
            "broker": {"port": broker.port, "username": "edge-agent", "password": "agent-pw"}, "nodes": NODES})
        store = Store(tmp_path / "a.db")
        ingestion = SensorIngestion(config.sensors, store)
        ingestion.start()
        try:
            assert wait_until(lambda: ingestion.connected)
            time.sleep(0.2)
            door = DoorBeamNode("door-1", broker.port, password="node-pw").connect()
            pir = PirNode("pir-1", broker.port, password="node-pw").connect()
            door.walk("in")
            # pir-1 pretends to be door-1: the broker drops it (MQTT 3.1.1: silently).
            pir.client.publish("sensors/door-1/event", json.dumps(
                {"type": "crossing", "direction": "in", "in_total": 50, "out_total": 0, "boot": door.boot,
                 "seq": 2}), qos=1).wait_for_publish(5)
            pir.set_motion(True)
            assert wait_until(lambda: ingestion.stored_events == 2)
            time.sleep(0.3)
            with store.lock:
                stored = sorted(store.db.execute("SELECT node_id, type FROM sensor_events").fetchall())
            assert stored == [("door-1", "crossing"), ("pir-1", "motion")]
            door.client.disconnect()
            pir.client.disconnect()
        finally:
            ingestion.stop()
            store.close()


def test_a_message_that_fails_to_store_is_dropped_without_blocking_the_others(harness):
    """The writer's fallback: a failing batch is retried one message at a time; the
    one that still fails is counted (store_error) and the rest are committed."""
    h = harness()
    ingestion = h.start()
    real_apply = ingestion._apply

    def apply(db, item):
        real_apply(db, item)  # writes first, so the rollback is what keeps it out
        if item.node_id == "pir-1" and item.message.seq == 2:
            raise sqlite3.OperationalError("disk I/O error (simulated)")

    ingestion._apply = apply
    pir = h.node(PirNode, "pir-1")
    door = h.node(DoorBeamNode, "door-1")
    with h.store.lock:  # let all of them queue up into one batch
        for on in (True, False, True):
            pir.set_motion(on)
        door.walk("in")
        assert wait_until(lambda: h.node_health("pir-1")["messages"] == 4 and h.node_health("door-1")["messages"] == 2)
    assert wait_until(lambda: ingestion.stored_events == 3)
    assert h.rows("SELECT node_id, seq FROM sensor_events ORDER BY node_id, seq") == [
        ("door-1", 1), ("pir-1", 1), ("pir-1", 3)]
    assert h.node_health("pir-1")["errors"] == {"store_error": 1}
    assert h.rows("PRAGMA integrity_check") == [("ok",)]
    door.walk("out")
    assert wait_until(lambda: ingestion.stored_events == 4)


def test_an_unreachable_store_broker_is_reported_not_counted_as_zero(tmp_path):
    from edge_agent.mosquitto import free_port

    port = free_port()
    config = load_config(storage={"path": str(tmp_path / "a.db")}, sensors={"broker": {"port": port}, "nodes": NODES})
    store = Store(tmp_path / "a.db")
    ingestion = SensorIngestion(config.sensors, store)
    ingestion.start()

    def minutes() -> int:
        with store.lock:
            return store.db.execute("SELECT COUNT(*) FROM camera_minutes").fetchone()[0]

    try:
        assert wait_until(lambda: ingestion.last_error is not None, timeout=10)
        assert f"cannot reach the store broker 127.0.0.1:{port}" in ingestion.health()["last_error"]
        time.sleep(1.0)
        # No data is not zero: no sensor-only minute is opened while the broker is away.
        assert minutes() == 0
        with Mosquitto(port=port, workdir=tmp_path / "late-broker"):
            assert wait_until(lambda: ingestion.connected, timeout=40)
            assert wait_until(lambda: minutes() == 1)
    finally:
        ingestion.stop()
        store.close()
