"""Storage and uplink benchmark: prints a markdown table.

    python bench/bench_storage.py            # full run (~1 minute)
    python bench/bench_storage.py --quick    # smaller sizes

1. Events/s committed to SQLite: ``Store.record`` (one transaction per call, the
   camera path) with synchronous FULL and NORMAL, and ``Store.record_many`` (one
   transaction per batch).
2. Outbox messages/s drained to a local mosquitto at QoS 1 (marked sent on PUBACK),
   with no subscriber and with one QoS 1 subscriber (HQ).
3. A 24-hour backlog of minute rollups for 8 cameras (11,520 minutes, plus hours
   and days) built from events, then drained once the broker is reachable.

Targets (issue 4): >= 20k events/s, >= 2k msg/s, 24-hour backlog drained < 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

from edge_agent.config import MqttConfig  # noqa: E402
from edge_agent.counting import Crossing  # noqa: E402
from edge_agent.mosquitto import Mosquitto  # noqa: E402
from edge_agent.rollup import Identity, close_minutes, close_periods  # noqa: E402
from edge_agent.storage import Store  # noqa: E402
from edge_agent.uplink import Uplink  # noqa: E402

IDENTITY = Identity("bench-org", "bench-store", "box1")
T0 = 1_789_999_200.0  # a fixed past moment, on the hour (2026-09-21T14:00Z)


def crossing(i: int, ts: float) -> Crossing:
    return Crossing("door", i, "in" if i % 2 else "out", ts)


def bench_record(workdir: Path, synchronous: str, n: int) -> float:
    store = Store(workdir / f"record-{synchronous}.db", synchronous=synchronous)
    started = time.perf_counter()
    for i in range(n):
        ts = T0 + i * 0.05
        store.record("cam1", ts, [crossing(i, ts)])
    elapsed = time.perf_counter() - started
    store.close()
    return n / elapsed


def bench_record_many(workdir: Path, n: int, batch: int) -> float:
    store = Store(workdir / "record-many.db")
    started = time.perf_counter()
    for first in range(0, n, batch):
        entries = []
        for i in range(first, min(n, first + batch)):
            ts = T0 + i * 0.01
            entries.append((f"cam{i % 8 + 1}", ts, [crossing(i, ts)]))
        store.record_many(entries)
    elapsed = time.perf_counter() - started
    store.close()
    return n / elapsed


class Counter:
    """An HQ subscriber at QoS 1 counting unique ids."""

    def __init__(self, port: int) -> None:
        self.ids: set[str] = set()
        self.done = threading.Event()
        self.expected = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("smartstore/v1/+/+/+/rollup/#", qos=1)
        self.client.loop_start()
        subscribed.wait(10)

    def _on_message(self, client, userdata, message) -> None:
        self.ids.add(json.loads(message.payload)["id"])
        if self.expected and len(self.ids) >= self.expected:
            self.done.set()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def fill_outbox(store: Store, n: int) -> None:
    payload = {"schema": "smartstore.rollup/1", "org": "bench-org", "store": "bench-store", "device": "box1",
               "camera": "cam1", "granularity": "minute", "start": "", "end": "", "frames": 600,
               "lines": {"door": {"in": 3, "out": 2}, "side": {"in": 0, "out": 1}}}
    with store.transaction() as db:
        for i in range(n):
            message_id = f"bench-org/bench-store/box1/cam1/minute/{i}"
            store.enqueue(db, message_id, IDENTITY.topic("rollup/minute"), {**payload, "id": message_id})


def drain(store: Store, port: int, max_inflight: int, timeout: float = 300) -> float:
    uplink = Uplink(MqttConfig(port=port, org=IDENTITY.org, store_id=IDENTITY.store, device_id=IDENTITY.device,
                               max_inflight=max_inflight), store, IDENTITY)
    started = time.perf_counter()
    uplink.start()
    try:
        while store.pending_count():
            if time.perf_counter() - started > timeout:
                raise TimeoutError("outbox not drained")
            time.sleep(0.01)
        return time.perf_counter() - started
    finally:
        uplink.stop()


def bench_drain(workdir: Path, port: int, n: int, max_inflight: int, with_subscriber: bool) -> tuple[float, int]:
    store = Store(workdir / f"drain-{max_inflight}-{with_subscriber}.db")
    fill_outbox(store, n)
    counter = Counter(port) if with_subscriber else None
    if counter:
        counter.expected = n
    elapsed = drain(store, port, max_inflight)
    received = 0
    if counter:
        counter.done.wait(60)
        received = len(counter.ids)
        counter.close()
    store.close()
    return n / elapsed, received


def bench_backlog(workdir: Path, port: int, cameras: int, hours: int, per_minute: int) -> dict:
    store = Store(workdir / "backlog.db")
    rng = random.Random(1)
    started = time.perf_counter()
    track = 0
    for hour in range(hours):
        entries = []
        for minute in range(60):
            for camera in range(cameras):
                base = T0 + (hour * 60 + minute) * 60
                crossings = []
                for _ in range(per_minute):
                    track += 1
                    crossings.append(crossing(track, base + rng.random() * 59))
                entries.append((f"cam{camera + 1}", base + 59.5, sorted(crossings, key=lambda c: c.ts)))
        store.record_many(entries)
    events_s = time.perf_counter() - started
    lines = {f"cam{c + 1}": ["door"] for c in range(cameras)}
    started = time.perf_counter()
    minutes = close_minutes(store, IDENTITY, lines, now=T0 + (hours + 48) * 3600)
    periods = close_periods(store, IDENTITY, lines, "UTC", now=T0 + (hours + 48) * 3600)
    close_s = time.perf_counter() - started
    pending = store.pending_count()
    counter = Counter(port)
    counter.expected = pending
    drain_s = drain(store, port, 50)
    counter.done.wait(120)
    received = len(counter.ids)
    counter.close()
    store.close()
    return {"events": track, "events_s": events_s, "minutes": minutes, "periods": periods, "close_s": close_s,
            "messages": pending, "drain_s": drain_s, "received": received}


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir; "
                        "put it on the SD card / disk you want to measure)")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    workdir = Path(tempfile.mkdtemp(prefix="bench-storage-", dir=args.dir))
    rows = []

    n = int(3000 * scale)
    rows.append(("events/s, `record()` per event, synchronous=FULL", f"{bench_record(workdir, 'FULL', n):,.0f}",
                 "one commit + fsync per crossing (the camera path)"))
    rows.append(("events/s, `record()` per event, synchronous=NORMAL", f"{bench_record(workdir, 'NORMAL', n):,.0f}",
                 ""))
    n = int(200_000 * scale)
    rate = bench_record_many(workdir, n, 1000)
    rows.append(("events/s, `record_many()` batches of 1000, FULL", f"{rate:,.0f}", "target >= 20,000"))

    # mosquitto's default max_queued_messages (1000 per client) drops messages for a
    # subscriber that falls behind; an HQ broker must raise it (docs/mqtt-contract.md).
    with Mosquitto(workdir=workdir / "broker", extra="max_queued_messages 1000000\n") as broker:
        n = int(20_000 * scale)
        for inflight, subscriber in ((50, False), (50, True), (200, True)):
            rate, received = bench_drain(workdir, broker.port, n, inflight, subscriber)
            note = f"{received:,} of {n:,} received by a QoS 1 subscriber" if subscriber else "no subscriber"
            rows.append((f"outbox msg/s drained at QoS 1, max_inflight {inflight}", f"{rate:,.0f}",
                         note + (" (target >= 2,000)" if inflight == 50 and not subscriber else "")))
        hours = 24 if not args.quick else 6
        backlog = bench_backlog(workdir, broker.port, cameras=8, hours=hours, per_minute=10)
    rows.append((f"backlog: {backlog['events']:,} events of {hours} h x 8 cameras committed", f"{backlog['events_s']:.1f} s",
                 "record_many, one batch per hour"))
    rows.append((f"backlog: close {backlog['minutes']:,} minutes + {backlog['periods']} hours/days",
                 f"{backlog['close_s']:.1f} s", "rollups built by the sections, queued in the outbox"))
    rows.append((f"backlog: drain {backlog['messages']:,} messages to the broker", f"{backlog['drain_s']:.1f} s",
                 f"{backlog['received']:,} received by HQ's subscriber; target < 60 s"))

    print(f"\nStorage / uplink benchmark — {machine()}; SQLite in {workdir}; "
          f"mosquitto on 127.0.0.1 with max_queued_messages 1000000\n")
    print("| measure | result | note |")
    print("|---|---|---|")
    for measure, result, note in rows:
        print(f"| {measure} | {result} | {note} |")


if __name__ == "__main__":
    main()
