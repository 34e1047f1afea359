"""Write batches of fleet messages into PostgreSQL: one transaction per batch, de-duplicated.

``write`` returns only after the batch is committed; the worker acknowledges
the batch to the broker after that, so a crash anywhere before the commit
leaves the messages with the broker (redelivered), and a crash after it at
worst makes the broker redeliver rows the unique ``id`` then ignores.

Rows are inserted sorted by (table, id): two workers inserting overlapping
batches in different orders deadlock on the unique index (measured here);
in one global order they only wait for each other.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg import errors
from psycopg.types.json import Jsonb

from .messages import Reject, Row
from .pgschema import migrate

log = logging.getLogger(__name__)

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "rollups": ("camera", "granularity", "period_start", "period_end", "frames", "visitors_in", "visitors_out",
                "timezone"),
    "device_status": ("state", "ts", "version"),
    "device_health": ("ts",),
    "device_events": ("ts",),
    "other_messages": (),
}
COMMON = ("org", "store", "device", "seq", "schema", "topic")


def _insert_sql(table: str) -> str:
    columns = ("id", *COMMON, *TABLE_COLUMNS[table], "payload")
    placeholders = ", ".join(["%s"] * (len(columns) - 1) + ["%s::jsonb"])
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) "
            "ON CONFLICT (id) DO NOTHING")


def _values(row: Row) -> tuple:
    return (row.id, *(row.columns.get(c) for c in COMMON), *(row.columns.get(c) for c in TABLE_COLUMNS[row.table]),
            row.payload)


@dataclass
class SinkStats:
    inserted: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refused_by_db: int = 0
    batches: int = 0
    retries: int = 0


class PostgresSink:
    def __init__(self, dsn: str, worker: str = "worker", connect_timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.worker = worker
        self.started_at = datetime.now(UTC)
        self.connect_timeout = connect_timeout
        self.conn: psycopg.Connection | None = None
        self.stats = SinkStats()

    def connect(self) -> None:
        if self.conn is not None and not self.conn.closed:
            return
        self.conn = psycopg.connect(self.dsn, connect_timeout=self.connect_timeout, autocommit=True,
                                    application_name=f"edge-agent-hq-{self.worker}")
        applied = migrate(self.conn)
        if applied:
            log.info("database schema: applied %s", ", ".join(applied))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def write(self, rows: Sequence[Row], rejects: Sequence[Reject] = (),
              keep_going: Callable[[float], bool] | None = None, extra_stats: dict | None = None) -> None:
        """Commit ``rows`` and ``rejects`` in one transaction, retrying until it is done.

        Between retries ``keep_going(seconds)`` is called (the source uses it to keep
        its broker connection alive); when it returns False the write is abandoned
        by raising :class:`InterruptedError` (nothing was acknowledged).
        """
        delay = 0.2
        while True:
            try:
                self.connect()
                self._write_once(rows, rejects, extra_stats or {})
                return
            except (psycopg.OperationalError, psycopg.InterfaceError, errors.DeadlockDetected,
                    errors.SerializationFailure, errors.AdminShutdown) as exc:
                self.stats.retries += 1
                log.warning("database write failed (%s: %s); retrying in %.1f s",
                            type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc) else "", delay)
                if self.conn is not None and (self.conn.closed or self.conn.broken):
                    self.close()
            if keep_going is not None:
                if not keep_going(delay):
                    raise InterruptedError("stopped while the database was unavailable")
            else:
                time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def stats_dict(self) -> dict:
        stats = {name: getattr(self.stats, name) for name in
                 ("inserted", "duplicates", "refused_by_db", "batches", "retries")}
        stats["rejected"] = dict(self.stats.rejected)
        return stats

    def _write_once(self, rows: Sequence[Row], rejects: Sequence[Reject], extra_stats: dict) -> None:
        by_table: dict[str, list[Row]] = defaultdict(list)
        for row in sorted(rows, key=lambda r: r.sort_key):
            by_table[row.table].append(row)
        refused: list[Reject] = []
        inserted = 0
        assert self.conn is not None
        with self.conn.transaction():
            with self.conn.cursor() as cur:
                for table in sorted(by_table):
                    table_rows = by_table[table]
                    try:
                        with self.conn.transaction():  # savepoint: a refused row must not sink the batch
                            cur.executemany(_insert_sql(table), [_values(r) for r in table_rows])
                            inserted += cur.rowcount
                    except (errors.DataError, errors.IntegrityError) as exc:
                        # Some row the checks let through is refused by PostgreSQL (e.g. a date
                        # out of range): insert one by one and dead-letter the refused ones.
                        log.warning("batch refused by the database (%s); inserting row by row", exc)
                        for row in table_rows:
                            try:
                                with self.conn.transaction():
                                    cur.execute(_insert_sql(table), _values(row))
                                    inserted += cur.rowcount
                            except (errors.DataError, errors.IntegrityError) as row_exc:
                                refused.append(Reject("malformed", f"database refused: {row_exc}".strip()[:300],
                                                      row.columns.get("topic", ""), row.payload.encode()[:1024]))
                # HQ's own commands to devices share the topic tree: counted, not dead-lettered.
                all_rejects = [r for r in (*rejects, *refused) if r.kind != "ignored"]
                if all_rejects:
                    cur.executemany(
                        "INSERT INTO ingest_rejects (worker, kind, reason, topic, sample) VALUES (%s, %s, %s, %s, %s)",
                        [(self.worker, r.kind, r.reason, r.topic, r.sample) for r in all_rejects],
                    )
                # The counters as they will be once this transaction commits.
                stats = self.stats_dict()
                stats["inserted"] += inserted
                stats["duplicates"] += len(rows) - inserted - len(refused)
                stats["refused_by_db"] += len(refused)
                stats["batches"] += 1
                for reject in rejects:
                    stats["rejected"][reject.kind] = stats["rejected"].get(reject.kind, 0) + 1
                stats.update(extra_stats)
                cur.execute(
                    "INSERT INTO ingest_workers (worker, started_at, pid, host, stats) VALUES (%s, %s, %s, %s, %s) "
                    "ON CONFLICT (worker, started_at) DO UPDATE SET updated_at = now(), stats = excluded.stats",
                    [self.worker, self.started_at, os.getpid(), socket.gethostname(), Jsonb(stats)],
                )
        self.stats.inserted = stats["inserted"]
        self.stats.duplicates = stats["duplicates"]
        self.stats.refused_by_db = stats["refused_by_db"]
        self.stats.batches = stats["batches"]
        for kind, count in stats["rejected"].items():
            self.stats.rejected[kind] = count
