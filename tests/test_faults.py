"""Fault tests with real processes: a real mosquitto, real agent processes
(``edge-agent simulate``: the real Store, rollups, outbox and uplink with
synthetic crossings on a fast clock) and the real ``edge-agent hq tail`` as HQ.

Each test ends by comparing what HQ received (after de-duplication) with what
the agent's SQLite holds: every outbox message at HQ once with the same
payload, nothing at HQ that SQLite does not hold, and the rollups adding up to
the stored events.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.hq.tail import gaps
from edge_agent.mosquitto import Mosquitto, free_port

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
BASE = "smartstore/v1/o1/s1/d1"

pytestmark = pytest.mark.faults

# HQ's persistent session must be allowed to queue a whole outage's backlog: mosquitto's
# default (1000 per client) drops the rest silently (see docs/mqtt-contract.md).
HQ_BROKER = "max_queued_messages 1000000\n"


def write_config(tmp_path: Path, port: int, protocol: str = "5", **storage) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({
        "storage": {"path": str(tmp_path / "agent.db"), "prune_interval_seconds": 1, **storage},
        "mqtt": {"port": port, "org": "o1", "store_id": "s1", "device_id": "d1", "reconnect_min_seconds": 0.2,
                 "reconnect_max_seconds": 1.0, "health_interval_seconds": 1, "max_inflight": 50,
                 "protocol": protocol},
        "rollup": {"interval_seconds": 0.2},
        "dashboard": {"enabled": False},
    }))
    return path


class AgentProcess:
    def __init__(self, config: Path, rate: float, speed: float, duration: float | None = None,
                 cameras: int = 4, drain_timeout: float = 60) -> None:
        args = [sys.executable, "-m", "edge_agent", "simulate", "--config", str(config), "--rate", str(rate),
                "--speed", str(speed), "--cameras", str(cameras), "--drain-timeout", str(drain_timeout)]
        if duration is not None:
            args += ["--duration", str(duration)]
        self.log = open(config.parent / "agent.log", "a")
        self.process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.process.stdout.readline()
        assert '"started"' in line, f"agent did not start: {line!r} (see {config.parent / 'agent.log'})"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def wait(self, timeout: float) -> dict:
        out, _ = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, f"agent exited {self.process.returncode}"
        return json.loads(out.strip().splitlines()[-1])


def start_tail(port: int, db: Path, protocol: str = "5") -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "hq", "tail", "--port", str(port), "--db", str(db), "--client-id",
         "hq-faults", "--protocol", protocol, "--validate", "--quiet"],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 15
    while time.time() < deadline and not db.exists():
        time.sleep(0.05)
    time.sleep(1.0)  # connected and subscribed (its session persists from here on)
    return proc


def stop_tail(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=15)
    return stderr


def query(path: Path, sql: str, params=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def wait_for_hq(agent_db: Path, hq_db: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        want = {r[0] for r in query(agent_db, "SELECT id FROM outbox")}
        got = {r[0] for r in query(hq_db, "SELECT id FROM messages")}
        if want <= got:
            return
        time.sleep(0.2)


def compare(agent_db: Path, hq_db: Path, check_events: bool = True) -> dict:
    """HQ after de-dup == SQLite: returns counts for the report."""
    assert query(agent_db, "PRAGMA integrity_check") == [("ok",)]
    assert query(agent_db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL") == [(0,)], "outbox not drained"
    outbox = dict(query(agent_db, "SELECT id, payload FROM outbox"))
    hq = dict(query(hq_db, "SELECT id, payload FROM messages WHERE schema != 'smartstore.status/1'"))
    missing = set(outbox) - set(hq)
    foreign = set(hq) - set(outbox)
    assert not missing, f"{len(missing)} messages never reached HQ, e.g. {sorted(missing)[:3]}"
    assert not foreign, f"HQ holds {len(foreign)} messages SQLite does not, e.g. {sorted(foreign)[:3]}"
    assert {k: json.loads(v) for k, v in hq.items()} == {k: json.loads(v) for k, v in outbox.items()}
    assert query(hq_db, "SELECT COUNT(*) FROM counters WHERE name = 'schema_errors'") == [(0,)]
    totals = {}
    if check_events:
        events = Counter()
        for camera, line, direction, n in query(agent_db, "SELECT camera_id, line_id, direction, COUNT(*) FROM events "
                                                          "GROUP BY 1, 2, 3"):
            events[(camera, line, direction)] = n
        for granularity in ("minute", "hour", "day"):
            got = Counter()
            for (payload,) in query(hq_db, "SELECT payload FROM messages WHERE topic LIKE ?", [f"%/rollup/{granularity}"]):
                body = json.loads(payload)
                for line, counts in body["lines"].items():
                    for direction in ("in", "out"):
                        if counts[direction]:
                            got[(body["camera"], line, direction)] += counts[direction]
            assert got == events, f"{granularity} rollups at HQ do not add up to SQLite's events"
        totals["events"] = sum(events.values())
        assert gaps(hq_db) == {}, "HQ sees holes in the device's seq"
    totals["messages"] = len(outbox)
    totals["duplicates_at_hq"] = dict(query(hq_db, "SELECT name, value FROM counters")).get("duplicates", 0)
    return totals


def report(name: str, text: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"{name}.txt").write_text(text + "\n")
    print(text)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_broker_restarted_many_times_during_a_steady_stream(tmp_path, protocol):
    """Also on MQTT 3.1.1 (HQ on RabbitMQ): no reason codes, same guarantee for outages."""
    broker = Mosquitto(workdir=tmp_path / "broker", persistence=True, extra=HQ_BROKER).start()
    config = write_config(tmp_path, broker.port, protocol=protocol)
    tail = start_tail(broker.port, tmp_path / "hq.db", protocol=protocol)
    agent = AgentProcess(config, rate=150, speed=600, duration=10)
    rng = random.Random(4)
    restarts = 0
    try:
        deadline = time.time() + 9
        while time.time() < deadline:
            time.sleep(rng.uniform(0.5, 1.2))
            broker.stop()  # SIGTERM: mosquitto saves HQ's persistent session on the way down
            time.sleep(rng.uniform(0.2, 0.8))
            broker.start()
            restarts += 1
        summary = agent.wait(timeout=90)
        assert summary["pending"] == 0
        wait_for_hq(tmp_path / "agent.db", tmp_path / "hq.db")
    finally:
        stderr = stop_tail(tail)
        broker.stop()
    totals = compare(tmp_path / "agent.db", tmp_path / "hq.db")
    reconnects = query(tmp_path / "agent.db", "SELECT COUNT(*) FROM device_log WHERE event = 'connected'")[0][0]
    assert restarts >= 6 and reconnects >= restarts
    report(f"fault-broker-restarts-mqtt{protocol}",
           f"MQTT {protocol}, broker restarts {restarts}: {totals}; tail: {stderr.strip().splitlines()[-1]}")


def test_agent_sigkilled_many_times_then_restarted_on_the_same_database(tmp_path, broker):
    config = write_config(tmp_path, broker.port)
    tail = start_tail(broker.port, tmp_path / "hq.db")
    db = tmp_path / "agent.db"
    kills = []
    rng = random.Random(11)
    try:
        for round_ in range(10):
            agent = AgentProcess(config, rate=400, speed=3600)
            if round_ % 2:
                # Mid-publish: as soon as the outbox holds unsent messages.
                deadline = time.time() + 10
                while time.time() < deadline and not query(db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")[0][0]:
                    time.sleep(0.005)
            else:
                time.sleep(rng.uniform(0.3, 1.5))  # wherever it is: the generator commits every 50 ms
            pending = query(db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")[0][0]
            agent.kill()
            kills.append(pending)
            assert query(db, "PRAGMA integrity_check") == [("ok",)]
        summary = AgentProcess(config, rate=100, speed=3600, duration=2).wait(timeout=90)
        assert summary["pending"] == 0
        wait_for_hq(db, tmp_path / "hq.db")
    finally:
        stderr = stop_tail(tail)
    totals = compare(db, tmp_path / "hq.db")
    assert len(kills) == 10 and sum(1 for p in kills if p) >= 5, kills
    report("fault-agent-sigkill", f"SIGKILLs {len(kills)} (unsent messages at each kill {kills}): {totals}; "
                                  f"tail: {stderr.strip().splitlines()[-1]}")


def test_long_outage_backlog_drains(tmp_path):
    port = free_port()
    broker = Mosquitto(port=port, workdir=tmp_path / "broker", persistence=True, extra=HQ_BROKER).start()
    tail = start_tail(port, tmp_path / "hq.db")
    broker.stop()  # HQ's session (and the tail) wait on the broker
    config = write_config(tmp_path, port)
    db = tmp_path / "agent.db"
    # 8 cameras, up to 6 simulated hours in 3 s: ~2,880 minute buckets (+ hours) while the broker is
    # away; a busy machine generates somewhat fewer, still thousands.
    agent = AgentProcess(config, rate=400, speed=7200, duration=3, cameras=8, drain_timeout=120)
    try:
        deadline = time.time() + 60
        # Generation over and every window closed (the day rollups come last): the backlog is complete.
        while query(db, "SELECT COUNT(*) FROM outbox WHERE topic LIKE '%/rollup/day'")[0][0] < 8:
            assert time.time() < deadline and agent.process.poll() is None
            time.sleep(0.2)
        backlog = query(db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")[0][0]
        minutes = query(db, "SELECT COUNT(*) FROM outbox WHERE topic LIKE '%/rollup/minute'")[0][0]
        assert minutes >= 2000, minutes
        started = time.monotonic()
        broker.start()
        while query(db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")[0][0]:
            assert time.monotonic() - started < 90, "backlog not drained in 90 s"
            time.sleep(0.05)
        drained = time.monotonic() - started
        wait_for_hq(db, tmp_path / "hq.db", timeout=90)
        at_hq = time.monotonic() - started
        agent.wait(timeout=30)
    finally:
        stop_tail(tail)
        broker.stop()
    totals = compare(db, tmp_path / "hq.db")
    report("fault-long-outage", f"backlog {backlog} messages ({minutes} minute rollups, 8 cameras): drained from the "
                                f"device in {drained:.1f} s, all at HQ (tail, SQLite) {at_hq:.1f} s after the broker "
                                f"came back; {totals}")


def test_disk_budget_reached_during_an_outage(tmp_path):
    port = free_port()
    broker = Mosquitto(port=port, workdir=tmp_path / "broker", persistence=True, extra=HQ_BROKER).start()
    tail = start_tail(port, tmp_path / "hq.db")
    broker.stop()
    config = write_config(tmp_path, port, disk_budget_mb=1, min_free_disk_mb=0)
    db = tmp_path / "agent.db"
    agent = AgentProcess(config, rate=600, speed=3600, duration=5, cameras=8, drain_timeout=60)
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not query(db, "SELECT COUNT(*) FROM meta WHERE key LIKE "
                                                       "'counter.dropped_unsent_messages'")[0][0]:
            time.sleep(0.2)
        time.sleep(4)
        broker.start()
        summary = agent.wait(timeout=90)
        wait_for_hq(db, tmp_path / "hq.db")
    finally:
        stop_tail(tail)
        broker.stop()
    counters = dict(query(db, "SELECT key, value FROM meta WHERE key LIKE 'counter.%'"))
    dropped = int(counters["counter.dropped_unsent_messages"])
    last_seq = query(db, "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")[0][0]
    assert summary["last_seq"] == last_seq
    hq_seqs = sorted(r[0] for r in query(tmp_path / "hq.db", "SELECT seq FROM messages "
                                                             "WHERE schema != 'smartstore.status/1'"))
    # Every message the agent ever made either reached HQ (once) or is counted as dropped;
    # the broker was down until after the drops, so the dropped ones are the oldest.
    assert dropped > 0 and len(hq_seqs) == len(set(hq_seqs))
    assert len(hq_seqs) + dropped == last_seq
    assert hq_seqs[0] > dropped // 2 and hq_seqs[-1] == last_seq
    logged = sum(json.loads(d)["count"] for (d,) in query(db, "SELECT detail FROM device_log "
                                                              "WHERE event LIKE 'dropped unsent%'"))
    assert logged == dropped
    health = [json.loads(p) for (p,) in query(tmp_path / "hq.db", "SELECT payload FROM messages WHERE topic LIKE "
                                                                  "'%/health' ORDER BY seq")]
    assert health[-1]["storage"]["dropped_unsent_messages"] == dropped  # reported to HQ, not silent
    totals = compare(db, tmp_path / "hq.db", check_events=False)
    report("fault-disk-budget", f"budget 1 MB: dropped {dropped} oldest unsent messages (counted, logged, in health), "
                                f"{counters.get('counter.dropped_unsummarised_events', 0)} unsummarised events; "
                                f"{totals}")


def test_malformed_commands_never_crash_a_running_agent(tmp_path, broker):
    config = write_config(tmp_path, broker.port)
    tail = start_tail(broker.port, tmp_path / "hq.db")
    agent = AgentProcess(config, rate=50, speed=60)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()

    def send(name, raw):
        client.publish(f"{BASE}/cmd/{name}", raw, qos=1).wait_for_publish(5)

    def result(name, request_id, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            rows = query(tmp_path / "hq.db", "SELECT payload FROM messages WHERE id = ?",
                         [f"o1/s1/d1/cmd/{name}/{request_id}"])
            if rows:
                return json.loads(rows[0][0])
            time.sleep(0.1)
        raise AssertionError(f"no result for {name}/{request_id}")

    try:
        time.sleep(1.0)
        rng = random.Random(3)
        garbage = [b"", b"{", b"null", b"42", b'"text"', b"[]", b'{"request_id": 5}', bytes(rng.randrange(256)
                   for _ in range(300)), b'{"request_id": "x", "from": "2026-13-45T99:00Z"}',
                   b'{"request_id": "y", "from_seq": -1}', json.dumps({"request_id": "z" * 500}).encode(),
                   b"\xff\xfe" * 50, json.dumps({"request_id": "q", "kinds": ["everything"],
                                                 "from_seq": 1}).encode()]
        for i, raw in enumerate(garbage):
            send(["ping", "resend", "reload-config", "nope"][i % 4], raw)
        send("ping", json.dumps({"request_id": "alive"}))
        assert result("ping", "alive")["ok"] is True
        errors = query(tmp_path / "hq.db", "SELECT COUNT(*) FROM messages WHERE topic LIKE '%/result' "
                                           "AND json_extract(payload, '$.ok') = 0")[0][0]
        assert errors == len(garbage)
        # reload-config applies a changed file in place.
        data = yaml.safe_load(config.read_text())
        data["mqtt"]["live_events"] = True
        config.write_text(yaml.safe_dump(data))
        send("reload-config", json.dumps({"request_id": "reload-1"}))
        reloaded = result("reload-config", "reload-1")
        assert reloaded["ok"] and reloaded["result"]["applied"] == ["mqtt.live_events"], reloaded
        deadline = time.time() + 20
        while time.time() < deadline and not query(tmp_path / "hq.db", "SELECT COUNT(*) FROM messages "
                                                                      "WHERE topic LIKE '%/event'")[0][0]:
            time.sleep(0.1)
        # A broken file changes nothing and says why.
        config.write_text("mqtt: {port: nonsense}\n")
        send("reload-config", json.dumps({"request_id": "reload-2"}))
        broken = result("reload-config", "reload-2")
        assert not broken["ok"] and "mqtt.port" in broken["error"]
        assert agent.process.poll() is None, "the agent died"
        agent.process.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        wait_for_hq(tmp_path / "agent.db", tmp_path / "hq.db")
    finally:
        client.loop_stop()
        if agent.process.poll() is None:
            agent.kill()
        stop_tail(tail)
    compare(tmp_path / "agent.db", tmp_path / "hq.db")
    assert query(tmp_path / "hq.db", "SELECT COUNT(*) FROM messages WHERE topic LIKE '%/event'")[0][0] > 0
