#!/usr/bin/env python3
"""HQ ingest benchmark: end-to-end messages/s with 1, 2 and 4 workers on each engine,
and the time to drain a fleet's 24-hour backlog after an HQ outage.

Two measurements per engine and worker count:

* **workers**: HQ's ingest was down while the broker stayed up, so the broker holds
  the backlog (in the workers' persistent sessions / the quorum queue); timed from the
  K workers' start to the last row committed. This is HQ's capacity. The backlog is
  handed to the broker by a fast replay of the stores' outboxes (one QoS 1 publisher
  per broker node), which is not timed.
* **end to end**: the whole HQ side was down; simulated stores (the agent's real
  SQLite outbox and uplink each) reconnect with their backlog → broker → K workers →
  PostgreSQL, timed from the reconnect to the last row. On one machine the simulated
  stores compete with the brokers and workers for the same cores (1000 simulated
  stores are 10 processes and ~3000 threads), so this figure is a floor: a real fleet
  pushes from 1000 separate boxes.

The 24-hour backlog of the whole fleet is drained the first way (1000 stores × 1440
minute rollups by default).

  * mosquitto (MQTT 5, shared subscription ``$share/<group>/…``);
  * 2-node RabbitMQ cluster (stores publish MQTT 3.1.1 to either node's MQTT plugin;
    workers consume one quorum queue over AMQP).

The backlog is built once per size (``fleet simulate --backlog-only``) and copied
for each run, so every run drains the same messages. Everything runs on this
machine on loopback (servers, stores and workers share its cores), so the figures
are for the whole pipeline on one box, not for a broker alone.

    python bench/bench_hq.py                       # 100 stores × 24 h for the curve, 1000 × 24 h drain
    python bench/bench_hq.py --backlog-stores 200 --engines mosquitto
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from edge_agent.hq.servers import Postgres, RabbitCluster  # noqa: E402
from edge_agent.hq.sources import AmqpSource  # noqa: E402
from edge_agent.mosquitto import Mosquitto  # noqa: E402

START = "2026-11-20T00:00Z"


def build_backlog(workdir: Path, stores: int, hours: float, prefix: str) -> int:
    minutes = int(hours * 60)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent", "fleet", "simulate", "--stores", str(stores), "--minutes", str(minutes),
         "--backlog-only", "--offline-fraction", "0", "--resend-fraction", "0", "--start", START,
         "--topic-prefix", prefix, "--workdir", str(workdir), "--processes", str(max(2, os.cpu_count() or 2))],
        cwd=REPO, capture_output=True, text=True, check=True)
    summary = json.loads(result.stdout)
    print(f"  backlog: {stores} stores × {hours:g} h = {summary['messages']} messages "
          f"(built in {time.monotonic() - started:.0f} s)", file=sys.stderr)
    return summary["messages"]


def fresh_db(pg: Postgres, name: str) -> str:
    with psycopg.connect(pg.dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    return pg.dsn.rsplit("/", 1)[0] + "/" + name


def rows(dsn: str) -> int:
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM rollups").fetchone()[0]
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return 0


def workers_ready(dsn: str, count: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                if conn.execute("SELECT COUNT(*) FROM ingest_workers").fetchone()[0] >= count:
                    return
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
            pass
        time.sleep(0.2)
    raise TimeoutError("ingest workers did not become ready")


def start_ingest(dsn: str, ingest_args: list[str], workers: int, group: str, prefix: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent.hq", "ingest", "--db", dsn, *ingest_args, "--workers", str(workers),
         "--group", group, "--topic-prefix", prefix, "--batch-size", "500", "--stats-every", "600"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(60)


def run_fleet(backlog: Path, stores_dir: Path, brokers: list[str], protocol: str, prefix: str,
              timeout: float) -> subprocess.Popen:
    plan = json.loads((backlog / "plan.json").read_text())
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "fleet", "simulate", "--stores", str(plan["stores"]), "--minutes",
         str(plan["minutes"]), *[a for b in brokers for a in ("--broker", b)], "--protocol", protocol,
         "--offline-fraction", "0", "--resend-fraction", "0", "--start", START, "--topic-prefix", prefix,
         "--workdir", str(stores_dir), "--drain-timeout", str(timeout)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_rows(dsn: str, expected: int, started: float, timeout: float) -> float:
    while (count := rows(dsn)) < expected:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"only {count}/{expected} rows after {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def preload(backlog: Path, brokers: list[str], protocol: str) -> float:
    """Hand every message in the stores' outboxes to the broker (the backlog a broker
    holds for HQ's workers while they are down). One fast publisher per broker node,
    QoS 1 with a wide in-flight window; returns once every PUBACK is in."""
    import sqlite3
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    messages = []
    for path in sorted(backlog.glob("store-*.db")):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            messages.extend(conn.execute("SELECT topic, payload FROM outbox ORDER BY seq").fetchall())
    started = time.monotonic()

    def push(part: list, broker: str) -> None:
        host, _, port = broker.rpartition(":")
        version = MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-preload-{port}", protocol=version)
        client.max_inflight_messages_set(1000)
        client.connect(host, int(port))
        client.loop_start()
        # paho numbers messages with 16-bit ids: keep well under 65535 outstanding.
        for first in range(0, len(part), 20_000):
            infos = [client.publish(topic, payload, qos=1) for topic, payload in part[first:first + 20_000]]
            for info in infos:
                info.wait_for_publish(600)
                if not info.is_published():
                    raise RuntimeError("the broker did not acknowledge the preload")
        client.loop_stop()
        client.disconnect()

    errors: list[BaseException] = []

    def run(part: list, broker: str) -> None:
        try:
            push(part, broker)
        except BaseException as exc:  # reported below: a short preload would hang the drain
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(messages[i::len(brokers)], broker))
               for i, broker in enumerate(brokers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started


def drain(backlog: Path, expected: int, dsn: str, ingest_args: list[str], brokers: list[str], protocol: str,
          workers: int, group: str, prefix: str, timeout: float, mode: str) -> float:
    """``end-to-end``: seconds from 'HQ is back' (workers ready, stores reconnect) to the
    last row committed. ``ingest``: the stores first hand their backlog to the broker
    (the workers' sessions / the queue hold it), then the workers start: seconds from
    their start to the last row — the workers' own rate."""
    stores_dir = Path(tempfile.mkdtemp(prefix="bench-stores-"))
    shutil.copytree(backlog, stores_dir, dirs_exist_ok=True)
    ingest = start_ingest(dsn, ingest_args, workers, group, prefix)
    try:
        workers_ready(dsn, workers)
        if mode == "ingest":
            stop(ingest)  # the broker keeps their subscriptions (persistent sessions / durable queue)
            seconds = preload(backlog, brokers, protocol)
            print(f"  preloaded the broker in {seconds:.0f} s", file=sys.stderr)
            started = time.monotonic()
            ingest = start_ingest(dsn, ingest_args, workers, group, prefix)
            elapsed = wait_rows(dsn, expected, started, timeout)
        else:
            started = time.monotonic()
            fleet = run_fleet(backlog, stores_dir, brokers, protocol, prefix, timeout)
            elapsed = wait_rows(dsn, expected, started, timeout)
            fleet.wait(120)
        assert rows(dsn) == expected
        return elapsed
    finally:
        if ingest.poll() is None:
            stop(ingest)
        shutil.rmtree(stores_dir, ignore_errors=True)


def delete_queue(url: str, queue: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_delete(queue)
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curve-stores", type=int, default=100)
    parser.add_argument("--curve-hours", type=float, default=24.0)
    parser.add_argument("--backlog-stores", type=int, default=1000)
    parser.add_argument("--backlog-hours", type=float, default=24.0)
    parser.add_argument("--backlog-workers", type=int, default=4)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--engines", default="mosquitto,rabbitmq")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--backlog-dir", default=None,
                        help="Keep the built backlogs here and reuse them on the next run (they take minutes).")
    args = parser.parse_args()
    worker_counts = [int(k) for k in args.workers.split(",")]
    engines = args.engines.split(",")
    root = Path(args.backlog_dir) if args.backlog_dir else Path(tempfile.mkdtemp(prefix="bench-hq-"))
    prefix = "bench/v1"
    backlogs = {}
    for name, stores, hours in (("curve", args.curve_stores, args.curve_hours),
                                ("day", args.backlog_stores, args.backlog_hours)):
        directory = root / f"{stores}x{hours:g}h"
        plan = {"stores": stores, "minutes": int(hours * 60)}
        if (directory / "plan.json").exists() and json.loads((directory / "plan.json").read_text()) == plan:
            expected = plan["stores"] * plan["minutes"]
            print(f"  backlog: reusing {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)
            expected = build_backlog(directory, stores, hours, prefix)
            (directory / "plan.json").write_text(json.dumps(plan))
        backlogs[name] = (directory, expected, stores, hours)

    results = []
    pg = Postgres().start()
    try:
        for engine in engines:
            if engine == "mosquitto":
                server = Mosquitto(extra="max_queued_messages 0\n").start()
                brokers, protocol = [f"127.0.0.1:{server.port}"], "5"
                source_args = ["--mqtt", brokers[0]]
            else:
                server = RabbitCluster(2).start()
                brokers, protocol = [f"127.0.0.1:{node.mqtt_port}" for node in server.nodes], "3.1.1"
                source_args = [a for url in server.amqp_urls for a in ("--amqp", url)]
            try:
                runs = ([("curve", k, "ingest") for k in worker_counts]
                        + [("curve", k, "end-to-end") for k in worker_counts]
                        + [("day", args.backlog_workers, "ingest")])
                for number, (backlog_name, workers, mode) in enumerate(runs):
                    directory, expected, stores, hours = backlogs[backlog_name]
                    group = f"{engine}-{number}"
                    extra = []
                    if engine == "rabbitmq":
                        queue = f"bench.{number}"
                        extra = ["--queue", queue]
                        declare = AmqpSource(server.amqp_urls, queue, f"{prefix}/#")
                        declare.start()
                        declare.wait_ready(30)
                        declare.close()
                    dsn = fresh_db(pg, f"bench_{engine}_{number}")
                    print(f"{engine}: {mode}, {workers} worker(s), {expected} messages …", file=sys.stderr)
                    seconds = drain(directory, expected, dsn, source_args + extra, brokers, protocol, workers, group,
                                    prefix, args.timeout, mode)
                    results.append((engine, mode, backlog_name, stores, hours, workers, expected, seconds))
                    print(f"  {seconds:.1f} s, {expected / seconds:,.0f} msgs/s", file=sys.stderr)
                    if engine == "rabbitmq":
                        # A drained run's queue stays bound to the fleet topics: delete it, or every later
                        # run's messages are also written into it (n-fold disk and publish work).
                        delete_queue(server.amqp_urls[0], queue)
            finally:
                server.stop() if engine == "mosquitto" else server.remove()
    finally:
        pg.remove()
        if not args.backlog_dir:
            shutil.rmtree(root, ignore_errors=True)

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"\nmachine: {os.cpu_count()} cores, {cpu}; Python {platform.python_version()}; "
          "servers, stores and workers all on this machine (loopback)\n")
    print("| engine | measured | backlog | workers | messages | seconds | msgs/s |")
    print("|---|---|---|---:|---:|---:|---:|")
    for engine, mode, _, stores, hours, workers, expected, seconds in results:
        label = f"{stores} stores × {hours:g} h"
        what = "workers: broker backlog → PostgreSQL" if mode == "ingest" else "end to end: stores → PostgreSQL"
        print(f"| {engine} | {what} | {label} | {workers} | {expected:,} | {seconds:.1f} | {expected / seconds:,.0f} |")


if __name__ == "__main__":
    main()
