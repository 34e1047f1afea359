"""``edge-agent hq ingest``: the fleet's messages → PostgreSQL, K workers, nothing lost or doubled.

One worker: fetch a batch from the broker → parse and route each message →
one database transaction (de-duplicating insert) → acknowledge the batch to the
broker. With ``--workers K`` this process supervises K worker processes (slots
0…K-1) and restarts any that dies, under the same slot name, so an MQTT
broker's persistent session for that slot is picked up again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import click

from . import require
from .messages import Reject, Row, parse

log = logging.getLogger(__name__)


@dataclass
class IngestOptions:
    db: str
    mqtt: str | None = None  # host:port
    amqp: tuple[str, ...] = ()
    topic_prefix: str = "smartstore/v1"
    group: str = "hq-ingest"
    queue: str = "smartstore.ingest"
    batch_size: int = 500
    batch_wait: float = 0.2
    username: str | None = None
    password: str | None = None
    end_session: bool = False
    stats_every: float = 30.0
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    def worker_name(self, slot: int) -> str:
        return f"{self.group}-{slot}"


def make_source(options: IngestOptions, slot: int):
    from .sources import AmqpSource, MqttSource

    topic = f"{options.topic_prefix}/#"
    if options.amqp:
        return AmqpSource(list(options.amqp), options.queue, topic, prefetch=max(2 * options.batch_size, 100))
    host, _, port = (options.mqtt or "127.0.0.1:1883").rpartition(":")
    return MqttSource(host or "127.0.0.1", int(port), topic, options.group, client_id=options.worker_name(slot),
                      receive_maximum=min(65535, max(2 * options.batch_size, 100)), username=options.username,
                      password=options.password, end_session=options.end_session, cafile=options.cafile,
                      certfile=options.certfile, keyfile=options.keyfile)


class Worker:
    def __init__(self, options: IngestOptions, slot: int = 0) -> None:
        from .sink import PostgresSink

        self.options = options
        self.name = options.worker_name(slot)
        self.source = make_source(options, slot)
        self.sink = PostgresSink(options.db, worker=self.name)
        self.received = 0
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.source.stop()

    def _extra_stats(self) -> dict:
        return {"received": self.received, "redelivered": self.source.redelivered}

    def stats(self) -> dict:
        return {"worker": self.name, "received": self.received, "redelivered": self.source.redelivered,
                **self.sink.stats_dict()}

    def run(self, max_idle: float | None = None) -> dict:
        """Until stopped (or ``max_idle`` seconds pass with nothing to do)."""
        self.sink.connect()  # fail fast on a wrong --db; migrations run here
        self.source.start()
        if self.source.wait_ready(30):
            self.sink.write([], keep_going=self.source.keep_going, extra_stats=self._extra_stats())
            log.info("worker %s ready", self.name)
        else:
            log.warning("worker %s: not subscribed after 30 s; still trying", self.name)
        last_stats = last_work = time.monotonic()
        try:
            while not self._stopping.is_set():
                batch = self.source.fetch(self.options.batch_size, self.options.batch_wait)
                now = time.monotonic()
                if batch:
                    self._commit(batch)
                    last_work = now
                elif max_idle is not None and now - last_work > max_idle:
                    break
                if now - last_stats >= self.options.stats_every:
                    log.info("stats %s", json.dumps(self.stats()))
                    last_stats = now
        except InterruptedError:
            log.info("stopped with an uncommitted batch; the broker keeps it for redelivery")
        finally:
            self.source.close()
            self.sink.close()
        log.info("final stats %s", json.dumps(self.stats()))
        return self.stats()

    def _commit(self, batch) -> None:
        rows: list[Row] = []
        rejects: list[Reject] = []
        for delivery in batch:
            parsed = parse(delivery.topic, delivery.payload, self.options.topic_prefix)
            (rows if isinstance(parsed, Row) else rejects).append(parsed)
        for reject in rejects:
            log.debug("skipped %s message on %s: %s", reject.kind, reject.topic, reject.reason)
        self.received += len(batch)
        self.sink.write(rows, rejects, keep_going=self.source.keep_going, extra_stats=self._extra_stats())
        self.source.ack(batch)


def run_worker(options: IngestOptions, slot: int, max_idle: float | None = None) -> dict:
    worker = Worker(options, slot)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    return worker.run(max_idle=max_idle)


def worker_argv(options: IngestOptions, slot: int) -> list[str]:
    argv = [sys.executable, "-m", "edge_agent.hq", "ingest", "--db", options.db, "--slot", str(slot),
            "--topic-prefix", options.topic_prefix, "--group", options.group, "--queue", options.queue,
            "--batch-size", str(options.batch_size), "--batch-wait", str(options.batch_wait),
            "--stats-every", str(options.stats_every)]
    if options.mqtt:
        argv += ["--mqtt", options.mqtt]
    for url in options.amqp:
        argv += ["--amqp", url]
    if options.username:
        argv += ["--username", options.username]
    if options.end_session:
        argv.append("--end-session")
    for flag, value in (("--cafile", options.cafile), ("--certfile", options.certfile),
                        ("--keyfile", options.keyfile)):
        if value:
            argv += [flag, value]
    return argv


def supervise(options: IngestOptions, workers: int) -> None:
    """Run K worker processes; restart a dead one in its slot; stop them all on SIGTERM/SIGINT."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    env = dict(os.environ)
    if options.password:
        env["EDGE_AGENT_HQ_MQTT_PASSWORD"] = options.password
    procs: dict[int, subprocess.Popen] = {}
    backoff: dict[int, float] = {}
    restart_at: dict[int, float] = {}

    def launch(slot: int) -> None:
        procs[slot] = subprocess.Popen(worker_argv(options, slot), env=env)
        log.info("worker %s started (pid %d)", options.worker_name(slot), procs[slot].pid)

    for slot in range(workers):
        launch(slot)
    while not stopping.is_set():
        for slot, proc in list(procs.items()):
            code = proc.poll()
            if code is None:
                continue
            if slot not in restart_at:
                # Quick restarts first (a killed worker's slot holds its share of the stream).
                backoff[slot] = min(backoff.get(slot, 0.25) * 2, 30.0)
                restart_at[slot] = time.monotonic() + backoff[slot]
                log.warning("worker %s exited with %s; restarting in %.1f s", options.worker_name(slot), code,
                            backoff[slot])
            elif time.monotonic() >= restart_at[slot]:
                del restart_at[slot]
                launch(slot)
        stopping.wait(0.2)
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


@click.command("ingest")
@click.option("--db", required=True, envvar="EDGE_AGENT_HQ_DB",
              help="PostgreSQL connection string, e.g. postgresql://hq@db.example/hq (env EDGE_AGENT_HQ_DB).")
@click.option("--mqtt", "mqtt_address", metavar="HOST:PORT",
              help="MQTT 5 broker with shared subscriptions (mosquitto, EMQX, HiveMQ…).")
@click.option("--amqp", "amqp_urls", multiple=True, metavar="URL",
              help="RabbitMQ node, e.g. amqp://user:pw@rabbit1:5672/%2F; repeat for each node of the cluster.")
@click.option("--topic-prefix", default="smartstore/v1", show_default=True)
@click.option("--group", default="hq-ingest", show_default=True,
              help="Shared-subscription group; workers are named <group>-<slot>.")
@click.option("--queue", default="smartstore.ingest", show_default=True, help="RabbitMQ quorum queue name.")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes to run and keep running (slots 0…K-1).")
@click.option("--slot", type=click.IntRange(0, 255), default=None,
              help="Run only this worker slot in this process (for systemd/Kubernetes doing the supervising).")
@click.option("--batch-size", type=click.IntRange(1, 10000), default=500, show_default=True)
@click.option("--batch-wait", type=click.FloatRange(0.0, 10.0), default=0.2, show_default=True,
              help="Seconds to wait for a batch to fill once its first message arrived.")
@click.option("--username", default=None, help="MQTT user name (password from env EDGE_AGENT_HQ_MQTT_PASSWORD).")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="MQTT over TLS: verify the broker with this CA file.")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="MQTT over TLS: client certificate (with --keyfile).")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--end-session", is_flag=True,
              help="MQTT: on exit leave the group and end this slot's session (use when scaling down).")
@click.option("--stats-every", type=float, default=30.0, show_default=True, help="Seconds between stats log lines.")
@click.option("--exit-when-idle", type=float, default=None, metavar="SECONDS",
              help="Exit after this long with nothing to ingest (one worker only; drains and benchmarks).")
def ingest(db, mqtt_address, amqp_urls, topic_prefix, group, queue, workers, slot, batch_size, batch_wait,
           username, cafile, certfile, keyfile, end_session, stats_every, exit_when_idle) -> None:
    """Write the fleet's rollup, status and health messages into PostgreSQL.

    Each message is de-duplicated on its id and acknowledged to the broker only
    after its database commit, so a killed worker or database outage loses nothing.
    """
    if bool(mqtt_address) == bool(amqp_urls):
        raise click.UsageError("give exactly one of --mqtt HOST:PORT or --amqp URL (repeatable)")
    require("psycopg")
    if amqp_urls:
        require("pika")
    options = IngestOptions(db=db, mqtt=mqtt_address, amqp=tuple(amqp_urls), topic_prefix=topic_prefix.strip("/"),
                            group=group, queue=queue, batch_size=batch_size, batch_wait=batch_wait,
                            username=username, password=os.environ.get("EDGE_AGENT_HQ_MQTT_PASSWORD"),
                            end_session=end_session, stats_every=stats_every, cafile=cafile, certfile=certfile,
                            keyfile=keyfile)
    if slot is None and workers > 1:
        supervise(options, workers)
        return
    try:
        stats = run_worker(options, slot or 0, max_idle=exit_when_idle)
    except Exception as exc:  # psycopg.OperationalError on a wrong --db, etc.
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    click.echo(json.dumps(stats), err=True)
