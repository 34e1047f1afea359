"""Sensor ingestion throughput on a real mosquitto: how many node messages per
second the agent validates and commits to SQLite (synchronous=FULL), and how fast
it throws away malformed ones. Prints a table; run standalone:

    python bench/sensors_ingest.py [--messages 5000]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.config import load_config
from edge_agent.mosquitto import Mosquitto
from edge_agent.sensors.ingest import SensorIngestion
from edge_agent.storage import Store


def wait(predicate, timeout=300.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError("ingestion did not finish")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    n = args.messages
    work = Path(tempfile.mkdtemp(prefix="bench-sensors-"))
    process = psutil.Process()
    rows = []
    with Mosquitto(workdir=work / "broker", extra="max_queued_messages 1000000") as broker:
        config = load_config(storage={"path": str(work / "a.db")}, sensors={
            "broker": {"port": broker.port}, "max_messages_per_second": 10000, "burst": 100000,
            "nodes": [{"id": f"door-{i}", "kind": "door_beam", "door": f"d{i}"} for i in range(10)]
            + [{"id": "pir-1", "kind": "pir", "zone": "aisle"}]})
        store = Store(work / "a.db")
        ingestion = SensorIngestion(config.sensors, store)
        ingestion.start()
        wait(lambda: ingestion.connected)
        time.sleep(0.3)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench", protocol=MQTTProtocolVersion.MQTTv5)
        client.max_inflight_messages_set(100)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        rss_before = process.memory_info().rss

        def run(name: str, messages, done) -> None:
            started = time.perf_counter()
            infos = [client.publish(topic, payload, qos=qos) for topic, payload, qos in messages]
            for info in infos:
                info.wait_for_publish(60)
            wait(done)
            seconds = time.perf_counter() - started
            rows.append((name, len(infos), seconds, len(infos) / seconds,
                         (process.memory_info().rss - rss_before) / 2**20))

        totals = {i: 0 for i in range(10)}

        def crossings():
            for k in range(n):
                i = k % 10
                totals[i] += 1
                yield (f"sensors/door-{i}/event", json.dumps(
                    {"type": "crossing", "direction": "in", "in_total": totals[i], "out_total": 0, "boot": 1,
                     "seq": totals[i]}), 1)

        run("door events, QoS 1, 10 nodes (stored)", list(crossings()), lambda: ingestion.stored_events >= n)
        run("PIR state, QoS 0 (stored readings)",
            [("sensors/pir-1/state", json.dumps({"motion": k % 2 == 0, "boot": 1, "seq": 0}), 0) for k in range(n)],
            lambda: ingestion.stored_readings >= n)

        def refused() -> int:
            return sum(sum(node["errors"].values()) for node in ingestion.health()["nodes"])

        run("malformed JSON / wrong types, QoS 1 (refused)",
            [("sensors/door-0/event", b"{not json" if k % 2 else b'{"type":"crossing","seq":"x"}', 1)
             for k in range(n)], lambda: refused() >= n)
        unknown = lambda: sum(ingestion.health()["unknown_nodes"].values())  # noqa: E731
        run("unknown nodes, QoS 1 (counted)", [(f"sensors/ghost-{k}/event", b"{}", 1) for k in range(n)],
            lambda: unknown() >= n)
        client.loop_stop()
        client.disconnect()
        ingestion.stop()
        store.close()
    print(f"machine: {platform.node()} {psutil.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"SQLite synchronous=FULL (WAL)")
    print(f"{'scenario':48} {'messages':>9} {'seconds':>8} {'msg/s':>8} {'RSS +MB':>8}")
    for name, count, seconds, rate, rss in rows:
        print(f"{name:48} {count:9d} {seconds:8.2f} {rate:8.0f} {rss:8.1f}")


if __name__ == "__main__":
    main()
