"""POS receipts for conversion: a real mosquitto topic and a real CSV drop folder,
into real SQLite; duplicates count once, bad input is counted and never fatal."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.config import ConfigError, load_config
from edge_agent.runtime import Agent
from tests.dashboard_support import NoDetector, login, make_accounts

TOPIC = "store/pos/receipts"


def receipts(path) -> dict[str, tuple]:
    with sqlite3.connect(path) as conn:
        return {row[0]: row[1:] for row in conn.execute("SELECT receipt_id, ts, total, items, source FROM pos_receipts")}


def wait_until(predicate, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_pos_config_needs_a_source():
    with pytest.raises(ConfigError, match="pos.mqtt_topic and/or pos.csv_dir"):
        load_config(pos={"enabled": True})
    with pytest.raises(ConfigError, match="without wildcards"):
        load_config(pos={"enabled": True, "mqtt_topic": "store/#"})


def test_receipts_over_mqtt_count_once_and_bad_ones_are_counted(tmp_path, broker):
    config = load_config(storage={"path": str(tmp_path / "agent.db")}, timezone="Asia/Shanghai",
                         mqtt={"enabled": False, "port": broker.port},
                         dashboard={"port": 0},
                         pos={"enabled": True, "mqtt_topic": TOPIC})
    make_accounts(config)
    agent = Agent(config, detector=NoDetector())
    agent.start()
    till = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    try:
        assert wait_until(lambda: agent.pos.stats.connected)
        time.sleep(0.2)  # the subscription is sent right after CONNACK
        till.connect("127.0.0.1", broker.port)
        till.loop_start()
        now = time.time()
        messages = [
            {"receipt_id": "R-1", "ts": "2026-03-02T10:15:00+08:00", "total": 59.0, "items": 3},
            {"receipt_id": "R-1", "ts": "2026-03-02T10:15:00+08:00", "total": 59.0},  # re-sent by the till
            [{"receipt_id": "R-2", "ts": "2026-03-02T10:20:00"}, {"receipt_id": "R-3"}],  # local time; no time
            {"receipt_id": "", "total": 1},  # empty id
            {"receipt_id": "R-4", "total": -5},  # negative total
            "not json at all",
            {"ts": "2026-03-02T10:00:00Z"},  # no id
        ]
        for body in messages:
            payload = body if isinstance(body, str) else json.dumps(body)
            till.publish(TOPIC, payload, qos=1).wait_for_publish(5)
        assert wait_until(lambda: agent.pos.stats.rejected == 4 and agent.pos.stats.received == 4)
        stored = receipts(config.storage.path)
        assert set(stored) == {"R-1", "R-2", "R-3"}
        assert stored["R-1"][0] == pytest.approx(1772417700.0) and stored["R-1"][1:3] == (59.0, 3)
        assert stored["R-2"][0] == pytest.approx(1772418000.0)  # 10:20 in Asia/Shanghai
        assert stored["R-3"][0] >= now - 1  # no time: when it arrived
        assert agent.pos.stats.duplicates == 1
        with login(agent.dashboard.url) as client:
            pos = client.get("/api/health").json()["pos"]
            assert pos["stored"] == 3 and pos["rejected"] == 4 and pos["connected"] is True
            today = client.get("/api/summary").json()["today"]
            assert today["conversion"]["configured"] is True and today["conversion"]["receipts"] == 1  # R-3 only
    finally:
        till.loop_stop()
        till.disconnect()
        agent.shutdown()


def test_receipts_from_a_csv_drop_folder(tmp_path):
    folder = tmp_path / "till"
    folder.mkdir()
    config = load_config(storage={"path": str(tmp_path / "agent.db")}, mqtt={"enabled": False},
                         dashboard={"enabled": False}, pos={"enabled": True, "csv_dir": str(folder)})
    agent = Agent(config, detector=NoDetector())
    agent.start()
    try:
        old = time.time() - 60
        good = folder / "monday.csv"
        good.write_text("\ufeffreceipt_id,ts,total,items\nA1,2026-03-02T10:00:00Z,10.5,2\nA2,2026-03-02T10:05:00Z,,\n"
                        "A2,2026-03-02T10:05:00Z,,\nA3,yesterday,1,1\nA4,2026-03-02T11:00:00Z,-1,\n", encoding="utf-8")
        os.utime(good, (old, old))
        no_header = folder / "broken.csv"
        no_header.write_text("1,2,3\n", encoding="utf-8")
        os.utime(no_header, (old, old))
        fresh = folder / "still-writing.csv"
        fresh.write_text("receipt_id\nB1\n", encoding="utf-8")

        assert agent.pos.scan_csv() == 2
        assert set(receipts(config.storage.path)) == {"A1", "A2"}
        assert receipts(config.storage.path)["A1"][1:] == (10.5, 2, "csv:monday.csv")
        assert agent.pos.stats.rejected == 3  # A3 (time), A4 (total), broken.csv (header)
        assert fresh.exists(), "a file changed in the last seconds may be half written: left for later"
        assert (folder / "processed" / "monday.csv").exists() and not good.exists()
        # The same file dropped again counts nothing twice.
        again = folder / "monday.csv"
        again.write_text("receipt_id,ts\nA1,2026-03-02T10:00:00Z\n", encoding="utf-8")
        os.utime(again, (old, old))
        assert agent.pos.scan_csv() == 0
        assert (folder / "processed").is_dir() and len(list((folder / "processed").iterdir())) == 3
        assert agent.pos.scan_csv(now=time.time() + 10) == 1  # B1, once settled
        assert "pos-csv" in agent.jobs
    finally:
        agent.shutdown()
