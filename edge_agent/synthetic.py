"""Synthetic crossings for tests, benchmarks and HQ integrators (``edge-agent simulate``).

The agent around them is the real one (Store, rollups, outbox, uplink,
scheduler); only the cameras are replaced by a generator of crossings on a
simulated clock that can run faster than real time (``speed`` simulated seconds
per real second), so hours of store traffic pass in seconds.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
import time

from .counting import Crossing
from .storage import Store, minute_start

log = logging.getLogger(__name__)


class SyntheticCrossings(threading.Thread):
    """Commits random crossings for ``cameras`` through ``Store.record_many``,
    ``rate`` crossings per real second in total, in ticks of ``tick`` seconds."""

    def __init__(self, store: Store, cameras: list[str], rate: float, speed: float = 1.0,
                 start: float | None = None, lines: tuple[str, ...] = ("door", "side"), tick: float = 0.05,
                 seed: int | None = None) -> None:
        super().__init__(name="synthetic", daemon=True)
        self.store, self.cameras, self.rate, self.speed, self.lines, self.tick = store, cameras, rate, speed, lines, tick
        self.sim_now = resume_point(store, time.time() if start is None else start)
        self.rng = random.Random(seed)
        self.events = 0
        self._halt = threading.Event()
        self._next_track = int(self.sim_now) % 1_000_000

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        owed = 0.0
        last = time.monotonic()
        while not self._halt.is_set():
            self._halt.wait(max(0.0, last + self.tick - time.monotonic()))
            # Simulated time follows real time even when a tick runs late (a busy box):
            # a late tick covers all the real time that passed.
            now = time.monotonic()
            elapsed, last = now - last, now
            advance = elapsed * self.speed
            owed += self.rate * elapsed
            count, owed = int(owed), owed - int(owed)
            start, end = self.sim_now, self.sim_now + advance
            crossings: dict[str, list[tuple[float, list[Crossing]]]] = {camera: [] for camera in self.cameras}
            for _ in range(count):
                camera = self.rng.choice(self.cameras)
                self._next_track += 1
                ts = start + self.rng.random() * advance
                crossings[camera].append((ts, [Crossing(self.rng.choice(self.lines), self._next_track,
                                                        self.rng.choice(("in", "out")), ts)]))
            # Like a camera at work: a processed frame at every minute that begins, and at the end.
            frames = [(float(m), []) for m in range(int(start // 60 + 1) * 60, int(end), 60)] + [(end, [])]
            entries = [(camera, ts, found) for camera in self.cameras
                       for ts, found in sorted(crossings[camera] + frames, key=lambda item: item[0])]
            self.sim_now = end
            self.events += self.store.record_many(entries)


def resume_point(store: Store, start: float) -> float:
    """Continue after whatever the database already holds (a restarted driver)."""
    with store.lock:
        latest = store.db.execute("SELECT MAX(minute) FROM camera_minutes").fetchone()[0]
    if latest:
        return max(start, minute_start(latest) + 60.0)
    return start


def simulate(config, cameras: int, rate: float, speed: float, start: float | None, duration: float | None,
             drain_timeout: float, seed: int | None = None, config_path=None) -> dict:
    """Run the real agent (no video) with synthetic crossings; on stop, close every
    window and wait for the outbox to drain. Returns a summary."""
    from .runtime import Agent

    agent = Agent(config.model_copy(update={"cameras": [], "dashboard": config.dashboard.model_copy(
        update={"enabled": False})}), config_path=config_path)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: (stop.set(), agent.stop()))
    signal.signal(signal.SIGINT, lambda *_: (stop.set(), agent.stop()))
    agent.start()
    source = SyntheticCrossings(agent.store, [f"cam{i + 1}" for i in range(cameras)], rate, speed, start, seed=seed)
    print(json.dumps({"started": True, "db": str(agent.store.path), "sim_start": source.sim_now}), flush=True)
    source.start()
    try:
        agent.run(duration=duration)
    finally:
        source.stop()
        source.join(5)
        if agent.scheduler.running:
            # No new health or pruning, and wait for a prune already running: one finishing after the
            # last health message would drop messages that message does not report.
            agent.scheduler.shutdown(wait=True)
        # Close every minute, hour and day the generator touched, report health once more, drain.
        agent.rollup_now(now=source.sim_now + 3 * 86400)
        if agent.uplink is not None:
            from .feed import queue_health

            queue_health(agent)
        deadline = time.monotonic() + drain_timeout
        while agent.uplink is not None and agent.store.pending_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        summary = {"events": source.events, "sim_end": source.sim_now, "pending": agent.store.pending_count(),
                   "last_seq": agent.store.last_seq()}
        agent.shutdown()
    print(json.dumps(summary), flush=True)
    return summary


def _parse_start(text: str | None) -> float | None:
    if text is None or text == "now":
        return None
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _command():
    import click

    @click.command("simulate")
    @click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), required=True,
                  help="Agent configuration (storage, mqtt); its cameras are replaced by synthetic ones.")
    @click.option("--cameras", type=int, default=4, show_default=True)
    @click.option("--rate", type=float, default=20.0, show_default=True, help="Crossings per real second, all cameras.")
    @click.option("--speed", type=float, default=1.0, show_default=True,
                  help="Simulated seconds per real second (600: ten store minutes a second).")
    @click.option("--start", default=None, help="Simulated start (ISO time, default now); a database that "
                  "already holds data continues after it.")
    @click.option("--duration", type=float, default=None, help="Real seconds to generate (default: until stopped).")
    @click.option("--drain-timeout", type=float, default=60.0, show_default=True,
                  help="After generating, wait this long for the outbox to drain.")
    @click.option("--seed", type=int, default=None)
    def simulate_command(config_path, cameras, rate, speed, start, duration, drain_timeout, seed) -> None:
        """Run the real agent (storage, rollups, uplink) on synthetic crossings: no cameras, no model."""
        from .config import load_config

        simulate(load_config(config_path), cameras, rate, speed, _parse_start(start), duration, drain_timeout, seed,
                 config_path=config_path)

    return simulate_command


simulate_command = _command()
