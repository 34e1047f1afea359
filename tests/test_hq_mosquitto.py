"""HQ on an MQTT 5 broker: simulated stores (real SQLite outbox + real uplink each) →
mosquitto → K ingest workers on a shared subscription → PostgreSQL.

Real processes on loopback; each test ends comparing every store's outbox with
PostgreSQL: equal, nothing twice. One PostgreSQL and one mosquitto serve the
module; each test has its own database, topic prefix and share group.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime

import pytest

psycopg = pytest.importorskip("psycopg")

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

from edge_agent.fleet import SHELVES, committed_messages  # noqa: E402
from edge_agent.hq import report  # noqa: E402
from edge_agent.hq.servers import Postgres  # noqa: E402
from edge_agent.mosquitto import Mosquitto  # noqa: E402
from hq_fleet import (  # noqa: E402
    Fleet,
    Ingest,
    assert_hq_holds_exactly_what_the_stores_committed,
    count_rows,
    fresh_database,
    kill,
    lock_rollups_until_workers_wait,
    wait_for_rows,
)

# HQ's broker must queue without a limit for a worker slot that is down (mosquitto's
# default drops QoS 1 messages beyond 1000 per client, after acknowledging them).
HQ_BROKER_CONFIG = "max_queued_messages 0\n"


@pytest.fixture(scope="module")
def postgres():
    with Postgres() as server:
        yield server


@pytest.fixture(scope="module")
def hq_broker(tmp_path_factory):
    with Mosquitto(workdir=tmp_path_factory.mktemp("hq-broker"), extra=HQ_BROKER_CONFIG) as broker:
        yield broker


def test_thousand_stores_two_workers_one_killed_mid_batch(postgres, hq_broker, tmp_path):
    dsn = fresh_database(postgres.dsn, "fleet1000")
    broker = f"127.0.0.1:{hq_broker.port}"
    ingest = Ingest(dsn, ["--mqtt", broker, "--topic-prefix", "t1/v1", "--batch-size", "200"], workers=2,
                    group="t1", log_dir=tmp_path)
    try:
        # Half the stores speak MQTT 5, half 3.1.1; 10 % go offline and come back, 10 % re-send.
        # A simulated minute at most every 2 s, so the fleet is still publishing when the worker dies.
        fleet = Fleet(tmp_path / "stores", [broker], stores=1000, minutes=3, prefix="t1/v1", protocol="mixed",
                      extra=["--broken-fraction", "0.03", "--tick", "2"])
        assert wait_for_rows(dsn, 300, timeout=180) >= 300, ingest.log_text()
        victim = ingest.pid_of("t1-0")
        locker = lock_rollups_until_workers_wait(dsn, "edge-agent-hq-t1-0")
        assert fleet.process.poll() is None, "the fleet finished before the fault"
        kill(victim)  # mid-batch: its batch is fetched, its transaction open, nothing acknowledged
        locker.rollback()
        locker.close()
        ingest.wait_ready(3)  # the supervisor restarted slot 0 under the same name
        summary = fleet.result()
        assert summary["stores"] == 1000 and summary["pending"] == 0
        assert summary["offline_episodes"] > 50 and summary["resent"] > 50
        total = assert_hq_holds_exactly_what_the_stores_committed(dsn, tmp_path / "stores")
        assert total == 3000
        stats = ingest.stats()
        restarted = stats["t1-0"][-1]
        assert restarted["redelivered"] > 0, stats  # the killed worker's batch came back to its slot
        assert sum(s["duplicates"] for runs in stats.values() for s in runs) > 0  # re-sends were ignored
        assert ingest.process.poll() is None
        with psycopg.connect(dsn) as conn:
            stores_online = conn.execute("SELECT COUNT(DISTINCT store) FROM device_status").fetchone()[0]
        assert stores_online == 1000
        check_reports_against_the_outboxes(dsn, tmp_path / "stores", summary["broken"])
    finally:
        ingest.stop()


def check_reports_against_the_outboxes(dsn, workdir, broken: dict[str, str]) -> None:
    """The report's numbers, recomputed from what the stores sent."""
    payloads = [json.loads(p) for p in committed_messages(workdir).values()]
    with report.connect(dsn) as conn:
        day = report.visitors(conn, "day", across=True)
        assert [(r["period"], r["stores"]) for r in day] == [(date(2026, 11, 20), 1000)]
        assert day[0]["visitors_in"] == sum(line["in"] for p in payloads for line in p["lines"].values())
        ranking = report.livestream(conn, as_of=date(2026, 11, 21), top=None)
        interactions = {}
        for p in payloads:
            for shelf in p["shelves"].values():
                interactions[shelf["product"]] = interactions.get(shelf["product"], 0) + shelf["interactions"]
        assert {r["product"]: r["interactions"] for r in ranking} == interactions
        # The simulator makes each shelf more popular than the one before it.
        assert [r["product"] for r in ranking] == [product for _, product in reversed(SHELVES)]
        problems = report.broken(conn, as_of=datetime(2026, 11, 21, tzinfo=UTC), min_visitors=1)
    dark = {r["store"] for r in problems if r["problem"] == "dark_camera"}
    assert dark == {store for store, kind in broken.items() if kind == "dark-camera"} != set()
    beams: dict[str, list[int]] = {}
    for p in payloads:
        front = p["sensors"]["doors"]["front"]
        totals = beams.setdefault(p["store"], [0, 0])
        totals[0] += front["camera"]["in"]
        totals[1] += front["beam"]["in"]
    disagreeing = {store for store, (cam, beam) in beams.items() if abs(cam - beam) / max(cam, beam, 1) > 0.15}
    assert disagreeing and disagreeing <= {store for store, kind in broken.items() if kind == "bumped-camera"}
    assert {r["store"] for r in problems if r["problem"] == "camera_beam_disagreement"} == disagreeing


def test_database_restarted_during_the_run(postgres, hq_broker, tmp_path):
    dsn = fresh_database(postgres.dsn, "dbrestart")
    broker = f"127.0.0.1:{hq_broker.port}"
    ingest = Ingest(dsn, ["--mqtt", broker, "--topic-prefix", "t2/v1"], workers=2, group="t2", log_dir=tmp_path)
    try:
        fleet = Fleet(tmp_path / "stores", [broker], stores=200, minutes=6, prefix="t2/v1", protocol="5",
                      extra=["--tick", "1"])
        assert wait_for_rows(dsn, 100) >= 100
        assert fleet.process.poll() is None, "the fleet finished before the fault"
        postgres.restart("immediate")  # no shutdown checkpoint: crash recovery on start
        time.sleep(1)
        postgres.restart("fast")
        summary = fleet.result()
        assert summary["pending"] == 0
        assert assert_hq_holds_exactly_what_the_stores_committed(dsn, tmp_path / "stores") == 1200
        stats = ingest.stats()
        assert sum(s["retries"] for runs in stats.values() for s in runs) > 0, stats
        assert ingest.process.poll() is None
    finally:
        ingest.stop()


def test_malformed_and_foreign_messages_are_counted_and_skipped(postgres, hq_broker, tmp_path):
    dsn = fresh_database(postgres.dsn, "garbage")
    broker = f"127.0.0.1:{hq_broker.port}"
    ingest = Ingest(dsn, ["--mqtt", broker, "--topic-prefix", "t3/v1"], workers=2, group="t3", log_dir=tmp_path)
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    publisher.connect("127.0.0.1", hq_broker.port)
    publisher.loop_start()
    try:
        fleet = Fleet(tmp_path / "stores", [broker], stores=50, minutes=4, prefix="t3/v1", protocol="5",
                      extra=["--tick", "0.5"])
        topic = "t3/v1/sim-org/store-0001/box-1/rollup/minute"
        good = {"schema": "smartstore.rollup/1", "id": "x", "camera": "c", "granularity": "minute",
                "start": "2026-11-20T12:00:00Z", "end": "2026-11-20T12:01:00Z", "lines": {}}
        garbage = {
            "malformed": [(topic, b"{not json")] * 10 + [(topic, b"\xff\xfe\xfd")] * 3
            + [(topic, json.dumps({**good, "lines": {"door": {"in": "many"}}}).encode())] * 5
            + [(topic, json.dumps({**good, "camera": "a\u0000b"}).encode())] * 2
            + [(topic, json.dumps({**good, "store": "store-9999"}).encode())] * 2,
            "foreign": [(topic, json.dumps({"temperature": 21.5}).encode())] * 6
            + [(topic, json.dumps({"schema": "acme.pos/2", "id": "1"}).encode())] * 4
            + [("t3/v1/just/two", json.dumps(good).encode())] * 3,
        }
        for messages in garbage.values():
            for garbage_topic, payload in messages:
                publisher.publish(garbage_topic, payload, qos=1).wait_for_publish(10)
        summary = fleet.result()
        assert summary["pending"] == 0
        assert assert_hq_holds_exactly_what_the_stores_committed(dsn, tmp_path / "stores") == 200
        deadline = time.time() + 30
        while count_rows(dsn, "ingest_rejects") < 35 and time.time() < deadline:
            time.sleep(0.2)
        with psycopg.connect(dsn) as conn:
            counted = dict(conn.execute("SELECT kind, COUNT(*) FROM ingest_rejects GROUP BY kind").fetchall())
            samples = conn.execute("SELECT reason FROM ingest_rejects WHERE kind = 'malformed'").fetchall()
        assert counted == {"malformed": 22, "foreign": 13}
        assert any("lines.door.in" in reason for (reason,) in samples)
        stats = ingest.stats()
        assert len(stats) == 2 and all(len(runs) == 1 for runs in stats.values()), "a worker restarted"
        assert sum(runs[-1]["rejected"].get("malformed", 0) for runs in stats.values()) == 22
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        ingest.stop()
