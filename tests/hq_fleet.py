"""Helpers for the HQ end-to-end tests: real ingest processes, a real simulated fleet,
and the final comparison of the stores' outboxes with what PostgreSQL holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from edge_agent.fleet import committed_messages

REPO = Path(__file__).resolve().parent.parent
FLEET_START = "2026-11-20T12:00Z"  # midday: the simulated stores are busy


def fresh_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


class Ingest:
    """``edge-agent hq ingest --workers K`` as HQ runs it: a supervisor and K worker processes."""

    def __init__(self, dsn: str, source_args: list[str], workers: int, group: str, log_dir: Path,
                 extra: list[str] = ()) -> None:
        self.dsn = dsn
        self.group = group
        self.workers = workers
        self.log = open(log_dir / f"ingest-{group}.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.hq", "ingest", "--db", dsn, *source_args, "--workers", str(workers),
             "--group", group, "--stats-every", "5", *extra],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.wait_ready(workers)
        except BaseException:
            self.stop()
            raise

    def worker_rows(self) -> list[tuple[str, int, dict]]:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                return conn.execute("SELECT worker, pid, stats FROM ingest_workers ORDER BY started_at").fetchall()
        except psycopg.errors.UndefinedTable:
            return []

    def wait_ready(self, rows: int, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while len(self.worker_rows()) < rows:
            assert self.process.poll() is None, f"ingest exited: {self.log_text()}"
            assert time.time() < deadline, f"ingest workers not ready: {self.log_text()}"
            time.sleep(0.2)

    def pid_of(self, worker: str) -> int:
        return [pid for name, pid, _ in self.worker_rows() if name == worker][-1]

    def stats(self) -> dict[str, list[dict]]:
        by_worker: dict[str, list[dict]] = {}
        for name, _, stats in self.worker_rows():
            by_worker.setdefault(name, []).append(stats)
        return by_worker

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text()[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Fleet:
    """``edge-agent fleet simulate`` in the background."""

    def __init__(self, workdir: Path, brokers: list[str], stores: int, minutes: int, prefix: str,
                 protocol: str = "mixed", extra: list[str] = ()) -> None:
        self.workdir = workdir
        broker_args = [arg for broker in brokers for arg in ("--broker", broker)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "fleet", "simulate", "--stores", str(stores), "--minutes",
             str(minutes), *broker_args, "--protocol", protocol, "--topic-prefix", prefix, "--start", FLEET_START,
             "--workdir", str(workdir), "--drain-timeout", "180", *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self, timeout: float = 300) -> dict:
        out, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, (
            f"fleet simulate failed ({self.process.returncode}): {out[-2000:]} {err[-3000:]}")
        return json.loads(out)


def count_rows(dsn: str, table: str = "rollups") -> int:
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except psycopg.OperationalError:
        return -1  # the database is restarting


def wait_for_rows(dsn: str, at_least: int, timeout: float = 120) -> int:
    deadline = time.time() + timeout
    while (count := count_rows(dsn)) < at_least and time.time() < deadline:
        time.sleep(0.2)
    return count


def assert_hq_holds_exactly_what_the_stores_committed(dsn: str, workdir: Path, timeout: float = 120) -> int:
    """The end of every HQ test: the stores' outboxes and PostgreSQL agree, id by id
    and payload by payload, and nothing is there twice."""
    committed = committed_messages(workdir)
    assert committed, "the fleet committed nothing"
    wait_for_rows(dsn, len(committed), timeout)
    time.sleep(1.0)  # anything extra (a duplicate that slipped through) would arrive now
    with psycopg.connect(dsn, autocommit=True) as conn:
        total, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM rollups").fetchone()
        stored = dict(conn.execute("SELECT id, payload FROM rollups").fetchall())
    assert total == distinct == len(stored)
    missing = set(committed) - set(stored)
    extra = set(stored) - set(committed)
    assert not missing and not extra, f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), {len(extra)} extra"
    different = [mid for mid, payload in committed.items() if json.loads(payload) != stored[mid]]
    assert not different, f"{len(different)} payloads differ, e.g. {different[:3]}"
    return total


def lock_rollups_until_workers_wait(dsn: str, application_name: str, timeout: float = 60) -> psycopg.Connection:
    """Hold a lock that makes the workers' INSERT wait, until ``application_name`` is
    waiting on it: that worker then has a fetched, uncommitted, unacknowledged batch."""
    locker = psycopg.connect(dsn)
    locker.execute("LOCK TABLE rollups IN SHARE ROW EXCLUSIVE MODE")
    deadline = time.time() + timeout
    with psycopg.connect(dsn, autocommit=True) as watcher:
        while not watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
                [application_name]).fetchone():
            assert time.time() < deadline, f"{application_name} never waited on the lock"
            time.sleep(0.05)
    return locker


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
