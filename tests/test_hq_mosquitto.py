"""HQ on an MQTT 5 broker: simulated stores (real SQLite outbox + real uplink each) →
mosquitto → K ingest workers on a shared subscription → PostgreSQL.

Real processes on loopback; each test ends comparing every store's outbox with
PostgreSQL: equal, nothing twice. One PostgreSQL and one mosquitto serve the
module; each test has its own database, topic prefix and share group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
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
    REPO,
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
            # HQ's own commands to a device share the topic tree: counted as ignored only.
            "ignored": [("t3/v1/sim-org/store-9999/box-1/cmd/ping", b'{"request_id": "r1"}')] * 3,
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
        assert sum(runs[-1]["rejected"].get("ignored", 0) for runs in stats.values()) == 3
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        ingest.stop()


def publish_rollups(port: int, prefix: str, count: int, store: str = "s1", tls_ca: str | None = None) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    if tls_ca:
        client.tls_set(ca_certs=tls_ca)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for i in range(count):
            start = f"2026-11-20T12:{i // 60:02d}:{i % 60:02d}.000Z"
            body = {"schema": "smartstore.rollup/1", "id": f"o/{store}/d/c/minute/{start}", "seq": i + 1,
                    "org": "o", "store": store, "device": "d", "camera": "c", "granularity": "minute",
                    "start": start, "end": start, "frames": 1, "lines": {"door": {"in": 1, "out": 0}}}
            client.publish(f"{prefix}/o/{store}/d/rollup/minute", json.dumps(body), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def test_scaling_down_with_end_session_strands_nothing(postgres, hq_broker, tmp_path):
    """A slot stopped for good with --end-session leaves the group: the stream goes to
    the slots still running. (Without it, the stopped slot keeps receiving its share,
    held for its return: the documented reason to keep every slot running. Checked:
    this test then ends with 70 of 100 rows.)"""
    dsn = fresh_database(postgres.dsn, "scaledown")
    common = ["--db", dsn, "--mqtt", f"127.0.0.1:{hq_broker.port}", "--topic-prefix", "t4/v1", "--group", "t4"]
    ingest = Ingest(dsn, ["--mqtt", f"127.0.0.1:{hq_broker.port}", "--topic-prefix", "t4/v1"], workers=1,
                    group="t4", log_dir=tmp_path)  # slot 0, supervised
    try:
        leaving = subprocess.Popen([sys.executable, "-m", "edge_agent.hq", "ingest", *common, "--slot", "1",
                                    "--end-session"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ingest.wait_ready(2)
        publish_rollups(hq_broker.port, "t4/v1", 40, store="before")
        assert wait_for_rows(dsn, 40, timeout=30) == 40
        leaving.send_signal(signal.SIGTERM)
        assert leaving.wait(30) == 0
        publish_rollups(hq_broker.port, "t4/v1", 60, store="after")
        assert wait_for_rows(dsn, 100, timeout=30) == 100
        stats = ingest.stats()
        assert stats["t4-0"][-1]["received"] >= 60  # all of "after" went to the slot still running
    finally:
        ingest.stop()


def test_workers_verify_the_broker_over_tls(postgres, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (apt-get install openssl)")

    def ssl(*args):
        subprocess.run([openssl, *args], cwd=tmp_path, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    # As root, mosquitto switches to its own user unless told otherwise: it could not read the key here.
    user = "user root\n" if os.geteuid() == 0 else ""
    tls = (f"cafile {tmp_path / 'ca.pem'}\ncertfile {tmp_path / 'server.pem'}\nkeyfile {tmp_path / 'server.key'}\n"
           f"{user}{HQ_BROKER_CONFIG}")
    dsn = fresh_database(postgres.dsn, "tls")
    with Mosquitto(workdir=tmp_path / "broker", extra=tls) as broker:  # a TLS-only listener
        ingest = Ingest(dsn, ["--mqtt", f"127.0.0.1:{broker.port}", "--cafile", str(tmp_path / "ca.pem")], workers=1,
                        group="t5", log_dir=tmp_path)
        try:
            publish_rollups(broker.port, "smartstore/v1", 20, tls_ca=str(tmp_path / "ca.pem"))
            assert wait_for_rows(dsn, 20, timeout=30) == 20
        finally:
            ingest.stop()
