"""The whole spine on real parts: clip → detector → tracker → SQLite → rollups →
a real mosquitto → a real subscriber; the dashboard API over HTTP."""

from __future__ import annotations

import sqlite3
import time
import urllib.error
import urllib.request

import pytest

from edge_agent.config import load_config
from edge_agent.mosquitto import Mosquitto, free_port
from edge_agent.runtime import Agent
from tests.dashboard_support import login, make_accounts

pytestmark = pytest.mark.slow

FRAMES = 240


def make_config(tmp_path, clip, assets_dir, mqtt_port, dashboard=False):
    return load_config(
        assets_dir=assets_dir,
        cameras=[{
            "id": "street",
            "source": str(clip),
            "lines": [
                {"id": "vertical", "points": [[0.5, 0.0], [0.5, 1.0]]},
                {"id": "horizontal", "points": [[0.0, 0.6], [1.0, 0.6]]},
            ],
        }],
        storage={"path": str(tmp_path / "agent.db")},
        mqtt={"port": mqtt_port, "store_id": "s1", "device_id": "d1", "org": "o1"},
        dashboard={"enabled": dashboard, "port": 0},
        rollup={"interval_seconds": 0.5},
    )


def run_agent(config, frames=FRAMES) -> Agent:
    if config.dashboard.enabled:
        make_accounts(config)
    agent = Agent(config, realtime=False, max_frames=frames)
    agent.start()
    agent.run(duration=120)
    return agent


def sqlite_totals(path):
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT line_id, direction, COUNT(*) FROM events GROUP BY line_id, direction").fetchall()
    return {(line, direction): n for line, direction, n in rows}


def received_totals(payloads):
    totals: dict[tuple[str, str], int] = {}
    for body in payloads:
        for line, counts in body["lines"].items():
            for direction in ("in", "out"):
                totals[(line, direction)] = totals.get((line, direction), 0) + counts[direction]
    return {key: n for key, n in totals.items() if n}


def wait_until(predicate, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_pipeline_counts_reach_sqlite_and_the_broker(tmp_path, clip, assets_dir, broker, subscribe):
    subscriber = subscribe(broker.port, "smartstore/v1/o1/s1/d1/#")
    config = make_config(tmp_path, clip, assets_dir, broker.port, dashboard=True)
    agent = run_agent(config)
    try:
        assert agent.cameras["street"].frames_processed == FRAMES
        events = sqlite_totals(config.storage.path)
        assert sum(events.values()) > 0, "the clip has people crossing: some events must be stored"

        # Dashboard: the API shows what SQLite holds (after logging in; it is never open).
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(agent.dashboard.url + "api/summary", timeout=10)
        assert refused.value.code == 401
        with login(agent.dashboard.url) as client:
            summary = client.get("/api/summary").json()
        shown = {(l["line"], d): l[d] for l in summary["today"]["lines"] for d in ("in", "out") if l[d]}
        assert shown == events
        # Occupancy never goes below zero on the way (an out at zero is drift, shown apart).
        with sqlite3.connect(config.storage.path) as conn:
            running = drift = 0
            for (direction,) in conn.execute("SELECT direction FROM events WHERE kind = 'visitor' ORDER BY ts, id"):
                if direction == "out" and running == 0:
                    drift += 1
                else:
                    running += 1 if direction == "in" else -1
        assert (summary["today"]["occupancy"], summary["today"]["occupancy_drift"]) == (running, drift)

        agent.rollup_now(now=time.time() + 3600)  # close every minute now
        assert wait_until(lambda: agent.store.pending_count() == 0)
        assert subscriber.wait_for(lambda s: received_totals(s.payloads("rollup/minute")) == events)
        payloads = subscriber.payloads("rollup/minute")
        assert len({p["id"] for p in payloads}) == len(payloads)
        assert all(p["schema"] == "smartstore.rollup/1" and p["camera"] == "street" for p in payloads)
        status = subscriber.payloads("/status")
        assert status and status[0]["state"] == "online"
    finally:
        agent.shutdown()
    # A clean stop leaves the retained status "offline".
    assert subscriber.wait_for(lambda s: s.payloads("/status")[-1]["state"] == "offline")


def test_broker_down_at_start_backlog_arrives_once(tmp_path, clip, assets_dir, subscribe):
    port = free_port()
    broker = Mosquitto(port=port, workdir=tmp_path / "broker", persistence=True)
    broker.start()
    # A persistent HQ session, so messages sent while it reconnects are kept for it.
    subscriber = subscribe(port, "smartstore/v1/o1/s1/d1/rollup/#")
    subscriber.client.disconnect()
    subscriber.client.loop_stop()
    broker.stop()

    config = make_config(tmp_path, clip, assets_dir, port)
    agent = run_agent(config, frames=120)
    try:
        agent.rollup_now(now=time.time() + 3600)
        with sqlite3.connect(config.storage.path) as conn:
            backlog = conn.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL "
                                   "AND topic LIKE '%/rollup/minute'").fetchone()[0]
        assert backlog >= 1 and not agent.uplink.stats.connected
        events = sqlite_totals(config.storage.path)

        broker.start()
        from tests.conftest import Subscriber

        hq = Subscriber(port, "smartstore/v1/o1/s1/d1/rollup/#")
        assert wait_until(lambda: agent.store.pending_count() == 0, timeout=90), "backlog not drained"
        assert hq.wait_for(lambda s: len(s.payloads("rollup/minute")) >= backlog)
        time.sleep(1.0)  # anything sent twice would arrive by now
        payloads = hq.payloads("rollup/minute")
        assert len(payloads) == backlog
        assert len({p["id"] for p in payloads}) == backlog
        assert received_totals(payloads) == events
        hq.close()
    finally:
        agent.shutdown()
        broker.stop()
