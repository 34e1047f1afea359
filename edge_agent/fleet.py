"""``edge-agent fleet simulate``: N stores, each running the agent's real SQLite store,
rollup job, outbox and MQTT uplink, fed with synthetic counts instead of cameras.

Every simulated store is what a real box is from the rollup onwards: crossings
are committed with :meth:`Store.record`, minutes are closed by
:func:`close_minutes` (rollup + outbox message in one transaction) and an
:class:`Uplink` per store (its own paho client) drains the outbox. Only the
people are made up. Some stores lose their uplink and come back later, some
re-send part of what the broker already acknowledged (a box restored from a
backup, or an HQ re-send command) once everything was delivered, so
HQ's de-duplication is exercised; a few have broken data on purpose (a bumped
camera that disagrees with the door beam, a one-way door line that drifts, a
dark camera) so the HQ report has something to find.

Stores are spread over worker processes (``--processes``); each process drives
its stores' minutes in one loop while every store's uplink runs its own paho
threads. The outboxes are the ground truth: when the run ends every store's
outbox has been acknowledged by the broker, and HQ must hold exactly those
messages.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import queue
import random
import resource
import sqlite3
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click

log = logging.getLogger(__name__)

# paho's network loop uses select(), which only takes file descriptors below 1024;
# a simulated store holds about six (SQLite file, WAL and shm; paho's socket pair
# and its connection), so one process hosts at most ~150 stores. Measured here:
# with 250 stores in one process exactly the first 88 could connect.
MAX_STORES_PER_PROCESS = 100

SHELVES = [  # (zone, product), least to most popular
    ("shelf-a", "oolong-tea-500ml"),
    ("shelf-b", "matcha-kitkat"),
    ("shelf-c", "sunscreen-spf50"),
    ("shelf-d", "phone-charger-20w"),
    ("shelf-e", "instant-ramen-5pack"),
]


@dataclass
class FleetPlan:
    stores: int
    minutes: int = 10
    cameras: int = 1
    brokers: list[tuple[str, int]] = field(default_factory=lambda: [("127.0.0.1", 1883)])
    protocol: str = "5"  # "5", "3.1.1" or "mixed" (alternating)
    org: str = "sim-org"
    topic_prefix: str = "smartstore/v1"
    start: float | None = None  # epoch seconds of the first simulated minute
    tick: float = 0.0  # wall seconds between simulated minutes (0: as fast as possible)
    offline_fraction: float = 0.1
    resend_fraction: float = 0.1
    broken_fraction: float = 0.0
    processes: int = 2
    workdir: Path = Path("fleet")
    seed: int = 1
    connect: bool = True  # False: only fill the outboxes (a backlog for a later drain)
    drain_timeout: float = 300.0
    store_offset: int = 0

    def store_id(self, index: int) -> str:
        return f"store-{index + self.store_offset:04d}"


@dataclass
class StoreReport:
    store: str
    messages: int = 0  # rows in the outbox: what this store committed for HQ
    pending: int = 0  # not acknowledged by the broker when the run ended
    resent: int = 0
    offline_episodes: int = 0
    broken: str | None = None


# -- synthetic data -------------------------------------------------------------
def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def diurnal(hour: float) -> float:
    """Relative foot traffic over a day (store-local time ~ UTC here): closed at night,
    peaks at lunch and after work."""
    if hour < 8 or hour >= 22:
        return 0.05
    return 0.4 + 0.8 * math.exp(-((hour - 12.5) ** 2) / 3) + math.exp(-((hour - 18.5) ** 2) / 4)


SIM_TABLES = """
CREATE TABLE IF NOT EXISTS sim_shelf (
    camera_id TEXT NOT NULL, minute TEXT NOT NULL, zone TEXT NOT NULL, product TEXT,
    passers_by INTEGER, interactions INTEGER, unique_visitors INTEGER, pick_ups INTEGER, with_visitor INTEGER,
    PRIMARY KEY (camera_id, minute, zone));
CREATE TABLE IF NOT EXISTS sim_door (
    camera_id TEXT NOT NULL, minute TEXT NOT NULL, door TEXT NOT NULL,
    beam_in INTEGER, beam_out INTEGER, camera_in INTEGER, camera_out INTEGER,
    PRIMARY KEY (camera_id, minute, door));
"""


def register_sim_sections() -> None:
    """Rollup sections for what the simulation makes up besides line crossings.

    A simulated store has no shelf zones or sensor nodes configured, so the
    agent's own ``shelves`` (docs/analytics.md) and ``sensors`` (docs/sensors.md)
    sections would be empty. In simulator processes only, these take their place:
    same names and payload shapes, read from the simulator's tables over the
    rollup's window exactly as the real ones read theirs.
    """
    from .rollup import SECTIONS, Window

    def shelves(db, window: Window) -> dict:
        rows = db.execute(
            "SELECT zone, product, SUM(passers_by), SUM(interactions), SUM(unique_visitors) FROM sim_shelf "
            "WHERE camera_id = ? AND minute >= ? AND minute < ? GROUP BY zone, product ORDER BY zone",
            [window.camera_id, window.start, window.end]).fetchall()
        return {zone: {"product": product, "passers_by": p, "interactions": i, "unique_visitors": u, "reaches": 0,
                       "interaction_rate": round(i / p, 4) if p else None} for zone, product, p, i, u in rows}

    def sensors(db, window: Window) -> dict:
        doors = db.execute(
            "SELECT door, SUM(beam_in), SUM(beam_out), SUM(camera_in), SUM(camera_out) FROM sim_door "
            "WHERE camera_id = ? AND minute >= ? AND minute < ? GROUP BY door ORDER BY door",
            [window.camera_id, window.start, window.end]).fetchall()
        picks = db.execute(
            "SELECT zone, product, SUM(pick_ups), SUM(with_visitor) FROM sim_shelf "
            "WHERE camera_id = ? AND minute >= ? AND minute < ? GROUP BY zone, product ORDER BY zone",
            [window.camera_id, window.start, window.end]).fetchall()
        out: dict = {}
        if doors:
            out["doors"] = {}
            for door, beam_in, beam_out, cam_in, cam_out in doors:
                most = max(cam_in, beam_in) + max(cam_out, beam_out)
                agreement = (min(cam_in, beam_in) + min(cam_out, beam_out)) / most if most else None
                out["doors"][door] = {"beam": {"in": beam_in, "out": beam_out}, "recovered": 0,
                                      "camera": {"in": cam_in, "out": cam_out}, "line": "door",
                                      "agreement": None if agreement is None else round(agreement, 4)}
        if picks:
            out["shelves"] = {zone: {"product": product, "pick_ups": k, "with_visitor": v,
                                     "nobody_seen": k - v} for zone, product, k, v in picks}
        return out

    SECTIONS["shelves"] = shelves
    SECTIONS["sensors"] = sensors


class SimulatedStore:
    """One store box: the real Store + rollups + Uplink, with made-up people."""

    def __init__(self, plan: FleetPlan, index: int) -> None:
        from .config import MqttConfig
        from .rollup import Identity
        from .storage import Store

        self.plan = plan
        self.index = index
        self.rng = random.Random(plan.seed * 100_003 + index)
        self.store_id = plan.store_id(index)
        self.identity = Identity(plan.org, self.store_id, "box-1", plan.topic_prefix)
        self.cameras = [f"cam-{c + 1}" for c in range(plan.cameras)]
        host, port = plan.brokers[index % len(plan.brokers)]
        protocol = plan.protocol if plan.protocol != "mixed" else ("5" if index % 2 == 0 else "3.1.1")
        self.mqtt = MqttConfig(host=host, port=port, protocol=protocol, org=plan.org, store_id=self.store_id,
                               device_id="box-1", topic_prefix=plan.topic_prefix, keepalive=30, max_inflight=100)
        # Durability of the simulated box's card is not under test: NORMAL keeps the
        # simulation from spending its time in fsync (the agent itself runs FULL).
        self.store = Store(Path(plan.workdir) / f"{self.store_id}.db", synchronous="NORMAL")
        self.store.db.conn.executescript(SIM_TABLES)
        self.uplink = None
        self.size = 0.3 + 1.7 * self.rng.random()  # visitors per minute at a quiet hour
        self.report = StoreReport(self.store_id)
        # Behaviour drawn once per store (deterministic from the seed).
        draw = self.rng.random()
        self.goes_offline = draw < plan.offline_fraction
        self.resends = plan.offline_fraction <= draw < plan.offline_fraction + plan.resend_fraction
        if plan.broken_fraction and self.rng.random() < plan.broken_fraction:
            self.report.broken = ("bumped-camera", "door-drift", "dark-camera")[index % 3]
        third = max(1, plan.minutes // 3)
        self.offline_from, self.offline_until = third, 2 * third
        # A restarted box carries on from its own database: minutes already closed
        # are not produced again, track ids continue.
        self.minutes_done = self.store.db.execute(
            "SELECT COUNT(*) FROM camera_minutes WHERE camera_id = ? AND rolled = 1", [self.cameras[0]]).fetchone()[0]
        self.next_track = 1 + (self.store.db.execute("SELECT MAX(track_id) FROM events").fetchone()[0] or 0)

    # -- uplink -----------------------------------------------------------------
    def connect(self) -> None:
        from .uplink import Uplink

        if self.uplink is None and self.plan.connect:
            self.uplink = Uplink(self.mqtt, self.store, self.identity)
            self.uplink.start()

    def disconnect(self) -> None:
        if self.uplink is not None:
            self.uplink.stop(timeout=2.0)
            self.uplink = None

    # -- one simulated minute --------------------------------------------------------
    def produce(self, minute_index: int, minute_start: float) -> None:
        from .counting import Crossing
        from .storage import minute_of

        hour = (minute_start % 86400) / 3600
        for camera in self.cameras:
            mean = self.size * diurnal(hour)
            true_in = _poisson(self.rng, mean)
            true_out = _poisson(self.rng, mean)
            seen_in, seen_out = true_in, true_out
            if self.report.broken == "bumped-camera":
                seen_in, seen_out = round(true_in * 0.5), round(true_out * 0.5)
            elif self.report.broken == "door-drift":
                seen_out = round(true_out * 0.6)
            crossings = []
            for direction, count in (("in", seen_in), ("out", seen_out)):
                for _ in range(count):
                    ts = minute_start + self.rng.uniform(0.0, 59.0)
                    crossings.append(Crossing("door", self.next_track, direction, ts))
                    self.next_track += 1
            crossings.sort(key=lambda c: c.ts)
            frames = 0 if self.report.broken == "dark-camera" else 600
            minute = minute_of(minute_start)
            with self.store.transaction() as db:
                db.conn.execute("INSERT OR REPLACE INTO sim_door VALUES (?, ?, 'front', ?, ?, ?, ?)",
                                [camera, minute, true_in, true_out, seen_in, seen_out])
                rows = []
                for rank, (zone, product) in enumerate(SHELVES):
                    popularity = 1.0 + rank * 0.35
                    passers = _poisson(self.rng, mean * 1.5)
                    interactions = min(passers, _poisson(self.rng, mean * 0.25 * popularity))
                    pick_ups = _poisson(self.rng, mean * 0.1 * popularity)
                    with_visitor = min(pick_ups, interactions)
                    rows.append((camera, minute, zone, product, passers, interactions,
                                 max(0, interactions - (interactions > 2)), pick_ups, with_visitor))
                db.conn.executemany("INSERT OR REPLACE INTO sim_shelf VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self.store.record(camera, minute_start + 59.5, crossings, frames=frames, flush_every=0)
        if self.plan.connect:
            self.close_minutes(minute_start + 60)

    def close_minutes(self, until: float) -> int:
        """The agent's rollup job, run as if ``until`` had passed (every minute before it closes)."""
        from .rollup import close_minutes

        return close_minutes(self.store, self.identity, {camera: ["door"] for camera in self.cameras},
                             now=until + 31, stale_after=30)

    def step(self, minute_index: int, minute_start: float) -> None:
        """Produce one minute, and take the uplink down or up as this store's story says."""
        if minute_index < self.minutes_done:
            return
        if self.goes_offline and minute_index == self.offline_from and self.uplink is not None:
            self.disconnect()
            self.report.offline_episodes += 1
        if self.goes_offline and minute_index == self.offline_until:
            self.connect()
        self.produce(minute_index, minute_start)

    def resend(self) -> None:
        """Mark up to a third of what was already acknowledged as unsent and reconnect:
        the broker and HQ get those ids a second time."""
        self.disconnect()
        with self.store.transaction() as db:
            sent = [row[0] for row in db.execute("SELECT seq FROM outbox WHERE sent_at IS NOT NULL ORDER BY seq")]
            chosen = self.rng.sample(sent, k=max(1, len(sent) // 3)) if sent else []
            db.conn.executemany("UPDATE outbox SET sent_at = NULL WHERE seq = ?", [(seq,) for seq in chosen])
        self.report.resent += len(chosen)
        self.connect()

    def finish(self) -> StoreReport:
        self.report.pending = self.store.pending_count()
        self.report.messages = self.store.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        return self.report

    def close(self) -> None:
        self.disconnect()
        self.store.close()


# -- processes --------------------------------------------------------------------
def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def _wait_drained(stores: list[SimulatedStore], deadline: float) -> None:
    while time.monotonic() < deadline:
        if all(store.store.pending_count() == 0 for store in stores):
            return
        time.sleep(0.2)


def _run_part(plan: FleetPlan, number: int, indexes: list[int], result_queue) -> None:
    """One process: its stores, minute by minute, then wait for their outboxes to drain.

    When the process is killed (a power cut for all its boxes), :func:`simulate`
    starts it again on the same SQLite files, and each store carries on."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("edge_agent.uplink").setLevel(logging.ERROR)  # offline stores are expected
    _raise_fd_limit()
    register_sim_sections()
    stores = [SimulatedStore(plan, index) for index in indexes]
    try:
        for store in stores:
            store.connect()
        start = plan.start
        for minute_index in range(plan.minutes):
            began = time.monotonic()
            for store in stores:
                store.step(minute_index, start + 60 * minute_index)
            if plan.tick:
                time.sleep(max(0.0, plan.tick - (time.monotonic() - began)))
        if not plan.connect:
            # A backlog (HQ unreachable all along): the boxes rolled every minute up as
            # usual; closing them in one go at the end leaves the same outbox, faster.
            for store in stores:
                store.close_minutes(start + 60 * plan.minutes)
        for store in stores:  # anyone still offline comes back for the end of the run
            store.connect()
        deadline = time.monotonic() + plan.drain_timeout
        if plan.connect:
            _wait_drained(stores, deadline)
            # Re-senders send a share of what the broker already acknowledged once more.
            for store in stores:
                if store.resends:
                    store.resend()
            _wait_drained(stores, deadline)
        reports = [asdict(store.finish()) for store in stores]
    finally:
        # Stopping an uplink waits for its "offline" status ack: stop them side by side.
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(lambda store: store.close(), stores))
    result_queue.put((number, reports))


def _align(ts: float) -> float:
    return ts - ts % 60


def simulate(plan: FleetPlan) -> dict:
    """Run the fleet to the end (all outboxes acknowledged, or ``drain_timeout``)."""
    plan.workdir = Path(plan.workdir)
    plan.workdir.mkdir(parents=True, exist_ok=True)
    if plan.start is None:
        plan.start = _align(time.time()) - 60 * plan.minutes
    processes = max(1, min(plan.stores, max(plan.processes, math.ceil(plan.stores / MAX_STORES_PER_PROCESS))))
    parts = [list(range(p, plan.stores, processes)) for p in range(processes)]
    # spawn, not fork: the caller may have threads (a fork would copy their held locks).
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    began = time.monotonic()
    procs: dict[int, multiprocessing.Process] = {}
    restarts = 0
    pid_file = plan.workdir / "fleet-parts.json"

    def launch(number: int) -> None:
        procs[number] = context.Process(target=_run_part, args=(plan, number, parts[number], results), daemon=True)
        procs[number].start()
        pid_file.write_text(json.dumps({str(n): p.pid for n, p in procs.items()}))

    for number in range(len(parts)):
        launch(number)
    collected: dict[int, list[dict]] = {}
    while len(collected) < len(parts):
        try:
            number, part_reports = results.get(timeout=0.5)
            collected[number] = part_reports
            continue
        except queue.Empty:
            pass
        for number, proc in list(procs.items()):
            if number in collected or proc.exitcode is None or proc.exitcode == 0:
                continue
            if proc.exitcode > 0 or restarts >= 10 * len(parts):
                raise RuntimeError(f"fleet process {number} failed (exit code {proc.exitcode})")
            # Killed by a signal: its boxes lost power. Boot them again.
            log.warning("fleet process %d was killed (%s); restarting its stores", number, proc.exitcode)
            restarts += 1
            launch(number)
    for proc in procs.values():
        proc.join()
    elapsed = time.monotonic() - began
    reports = [report for part_reports in collected.values() for report in part_reports]
    return {
        "stores": plan.stores,
        "messages": sum(r["messages"] for r in reports),
        "pending": sum(r["pending"] for r in reports),
        "resent": sum(r["resent"] for r in reports),
        "offline_episodes": sum(r["offline_episodes"] for r in reports),
        "restarted_processes": restarts,
        "broken": {r["store"]: r["broken"] for r in reports if r["broken"]},
        "seconds": round(elapsed, 2),
        "workdir": str(plan.workdir),
    }


def committed_messages(workdir: Path, topic_contains: str = "/rollup/") -> dict[str, str]:
    """id → payload of every message the simulated stores committed to their outboxes."""
    messages: dict[str, str] = {}
    for path in sorted(Path(workdir).glob("store-*.db")):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            for message_id, payload in conn.execute("SELECT id, payload FROM outbox WHERE topic LIKE ?",
                                                    [f"%{topic_contains}%"]):
                messages[message_id] = payload
    return messages


def parse_brokers(values: Iterable[str]) -> list[tuple[str, int]]:
    brokers = []
    for value in values:
        host, _, port = value.rpartition(":")
        brokers.append((host or "127.0.0.1", int(port)))
    return brokers


# -- CLI --------------------------------------------------------------------------


@click.group("fleet")
def fleet() -> None:
    """Simulated store fleets for HQ integrators and tests."""


@fleet.command("simulate")
@click.option("--stores", type=click.IntRange(1, 100_000), required=True)
@click.option("--minutes", type=click.IntRange(1, 7 * 1440), default=10, show_default=True,
              help="Simulated minutes per store (rollups per camera).")
@click.option("--cameras", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--broker", "brokers", multiple=True, default=["127.0.0.1:1883"], show_default=True,
              metavar="HOST:PORT", help="Repeat for a cluster: stores are spread over the nodes.")
@click.option("--protocol", type=click.Choice(["5", "3.1.1", "mixed"]), default="5", show_default=True)
@click.option("--org", default="sim-org", show_default=True)
@click.option("--topic-prefix", default="smartstore/v1", show_default=True)
@click.option("--start", metavar="ISO-TIME", default=None,
              help="First simulated minute (UTC), e.g. 2026-11-20T12:00Z; default: MINUTES before now.")
@click.option("--tick", type=float, default=0.0, show_default=True,
              help="Wall seconds per simulated minute (0: as fast as the boxes can).")
@click.option("--offline-fraction", type=click.FloatRange(0, 1), default=0.1, show_default=True)
@click.option("--resend-fraction", type=click.FloatRange(0, 1), default=0.1, show_default=True)
@click.option("--broken-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--processes", type=click.IntRange(1, 1000), default=1, show_default=True,
              help=f"At least this many processes; at most {MAX_STORES_PER_PROCESS} stores share one.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("fleet"),
              show_default=True, help="Where the stores' SQLite files go.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--backlog-only", is_flag=True, help="Fill the outboxes without connecting (an HQ outage).")
@click.option("--drain-timeout", type=float, default=300.0, show_default=True)
def simulate_command(stores, minutes, cameras, brokers, protocol, org, topic_prefix, start, tick, offline_fraction,
                     resend_fraction, broken_fraction, processes, workdir, seed, backlog_only, drain_timeout) -> None:
    """Run N simulated stores (real SQLite outbox + real uplink each) until every
    message is acknowledged by the broker; print a JSON summary."""
    if offline_fraction + resend_fraction > 1:
        raise click.BadParameter("--offline-fraction + --resend-fraction must be at most 1")
    first = None
    if start:
        moment = datetime.fromisoformat(start)
        first = _align((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
    plan = FleetPlan(stores=stores, minutes=minutes, cameras=cameras, brokers=parse_brokers(brokers),
                     protocol=protocol, org=org, topic_prefix=topic_prefix.strip("/"), start=first, tick=tick,
                     offline_fraction=offline_fraction, resend_fraction=resend_fraction,
                     broken_fraction=broken_fraction, processes=processes, workdir=workdir, seed=seed,
                     connect=not backlog_only, drain_timeout=drain_timeout)
    summary = simulate(plan)
    click.echo(json.dumps(summary, indent=2))
    if summary["pending"] and not backlog_only:
        raise SystemExit(1)
