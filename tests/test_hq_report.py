"""HQ reports on hand-made fleet data in a real PostgreSQL: every number here is
computed by hand from the messages below, and the messages go in through the
same parser and sink the ingest workers use."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

psycopg = pytest.importorskip("psycopg")

from edge_agent.hq import report  # noqa: E402
from edge_agent.hq.messages import Row, parse  # noqa: E402
from edge_agent.hq.servers import Postgres  # noqa: E402
from edge_agent.hq.sink import PostgresSink  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PREFIX = "smartstore/v1"


@pytest.fixture(scope="module")
def postgres():
    with Postgres() as server:
        yield server


def minute_iso(text: str) -> str:
    return text if text.endswith("Z") else text + ":00.000Z"


def rollup(store: str, device: str, camera: str, granularity: str, start: str, end: str, seq: int,
           lines: dict | None = None, frames: int = 600, **sections) -> tuple[str, bytes]:
    start, end = minute_iso(start), minute_iso(end)
    body = {"schema": "smartstore.rollup/1", "id": f"o/{store}/{device}/{camera}/{granularity}/{start}",
            "seq": seq, "org": "o", "store": store, "device": device, "camera": camera,
            "granularity": granularity, "start": start, "end": end, "frames": frames,
            "lines": lines if lines is not None else {}, **sections}
    return f"{PREFIX}/o/{store}/{device}/rollup/{granularity}", json.dumps(body).encode()


def door(i: int, o: int) -> dict:
    return {"door": {"in": i, "out": o}}


MESSAGES = [
    # s1 (Asia/Taipei, UTC+8): 15:58Z-16:02Z spans local midnight of 20→21 Nov.
    rollup("s1", "d1", "c1", "minute", "2026-11-20T15:58", "2026-11-20T15:59", 1, door(2, 1)),
    rollup("s1", "d1", "c1", "minute", "2026-11-20T15:59", "2026-11-20T16:00", 2, door(3, 1)),
    rollup("s1", "d1", "c1", "minute", "2026-11-20T16:00", "2026-11-20T16:01", 3, door(4, 1)),
    rollup("s1", "d1", "c1", "minute", "2026-11-20T16:01", "2026-11-20T16:02", 4, door(5, 1)),
    # …and the device's hour rollup for 16:00Z, which takes the place of that hour's minutes.
    rollup("s1", "d1", "c1", "hour", "2026-11-20T16:00", "2026-11-20T17:00", 5, door(40, 30)),
    # s1 shelf data (analytics "shelves") with pick-ups from its load cell (sensors.shelves).
    rollup("s1", "d1", "c1", "minute", "2026-11-19T04:00", "2026-11-19T04:01", 6, door(0, 0),
           shelves={"shelf-a": {"product": "tea", "passers_by": 50, "interactions": 5, "unique_visitors": 4,
                                "reaches": 0, "interaction_rate": 0.1}},
           sensors={"shelves": {"shelf-a": {"product": "tea", "pick_ups": 1, "with_visitor": 1}}}),
    # s2 (UTC, no stores row): shelves this week and the week before.
    rollup("s2", "d2", "c1", "minute", "2026-11-18T10:00", "2026-11-18T10:01", 1, door(1, 1),
           shelves={"shelf-a": {"product": "tea", "passers_by": 100, "interactions": 10, "unique_visitors": 9},
                    "shelf-b": {"product": "ramen", "passers_by": 60, "interactions": 30, "unique_visitors": 25}},
           sensors={"shelves": {"shelf-a": {"product": "tea", "pick_ups": 2, "with_visitor": 1},
                                "shelf-b": {"product": "ramen", "pick_ups": 9, "with_visitor": 6}},
                    "presence": {"aisle": {"activations": 3}}}),
    rollup("s2", "d2", "c1", "minute", "2026-11-10T10:00", "2026-11-10T10:01", 2, door(0, 0),
           shelves={"shelf-a": {"product": "tea", "passers_by": 100, "interactions": 20},
                    "shelf-b": {"product": "ramen", "passers_by": 60, "interactions": 15},
                    "broken-entry": "not an object"},
           sensors={"shelves": {"shelf-a": {"pick_ups": 4}, "shelf-b": {"pick_ups": 3}}}),
    # s2 on 20 Nov: at the door with both, the camera counts 25 in, the beam 40 (seq 3 never arrives).
    rollup("s2", "d2", "c1", "minute", "2026-11-20T10:00", "2026-11-20T10:01", 4, door(25, 25),
           sensors={"doors": {"front": {"beam": {"in": 40, "out": 39}, "camera": {"in": 25, "out": 25},
                                        "line": "door", "agreement": 0.6},
                              "side": {"beam": {"in": 500, "out": 500}}}}),  # beam-only: nothing to compare
    # s4: a one-way door line (100 in, 50 out) and a camera that processed no frames.
    rollup("s4", "d4", "c1", "minute", "2026-11-20T12:00", "2026-11-20T12:01", 1, door(100, 50)),
    rollup("s4", "d4", "c9", "minute", "2026-11-20T12:00", "2026-11-20T12:01", 2, door(0, 0), frames=0),
    rollup("s4", "d4", "c9", "minute", "2026-11-20T12:01", "2026-11-20T12:02", 3, door(0, 0), frames=0,
           pos={"receipts": 12, "total": 240.5}),  # a box that reports its till's receipts
    # s5: the door lines balance (50/48) but the store box reports drift since its reset.
    rollup("s5", "d5", "c1", "minute", "2026-11-20T20:00", "2026-11-20T20:01", 1, door(50, 48),
           occupancy={"store": {"now": 20, "peak": 21, "in": 50, "out": 48, "imbalance": 2,
                                "since_reset": {"in": 50, "out": 30, "imbalance": 20, "clamped_outs": 0}},
                      "zones": {}}),
    # s6 says its clock is Asia/Kolkata (UTC+5:30): its local hours start at :30 UTC. The
    # 04:30Z hour rollup covers the 04:45Z minute; the 05:30Z minute is the next hour's.
    rollup("s6", "d6", "c1", "hour", "2026-11-20T04:30", "2026-11-20T05:30", 3, door(7, 6), timezone="Asia/Kolkata"),
    rollup("s6", "d6", "c1", "minute", "2026-11-20T04:45", "2026-11-20T04:46", 1, door(1, 1)),
    rollup("s6", "d6", "c1", "minute", "2026-11-20T05:30", "2026-11-20T05:31", 2, door(2, 2),
           timezone="Mars/Olympus_Mons"),  # an unknown zone is ignored, not fatal
    # s3: heard from once, long ago.
    rollup("s3", "d3", "c1", "minute", "2026-11-20T08:00", "2026-11-20T08:01", 1, door(1, 1)),
]
AS_OF = datetime(2026, 11, 21, 0, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def db(postgres):
    dsn = postgres.dsn.rsplit("/", 1)[0] + "/report"
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute("CREATE DATABASE report")
    sink = PostgresSink(dsn, worker="test")
    rows = [parse(topic, payload, PREFIX) for topic, payload in MESSAGES]
    assert all(isinstance(row, Row) for row in rows), [r for r in rows if not isinstance(r, Row)]
    sink.write(rows)
    sink.write(rows[:3])  # a re-send changes nothing
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO stores (org, store, name, timezone) VALUES ('o', 's1', 'Taipei 101', 'Asia/Taipei')")
        # Everyone was heard from just now, except s3 (two hours before AS_OF).
        conn.execute("UPDATE rollups SET received_at = %s", [AS_OF])
        conn.execute("UPDATE rollups SET received_at = %s WHERE store = 's3'",
                     [datetime(2026, 11, 20, 22, 30, tzinfo=UTC)])
    sink.close()
    return dsn


@pytest.fixture
def conn(db):
    with report.connect(db) as connection:
        yield connection


def test_resend_is_not_counted_twice(conn):
    assert conn.execute("SELECT COUNT(*) AS n FROM rollups").fetchone()["n"] == len(MESSAGES)


def test_visitors_by_local_day_prefer_the_hour_rollup(conn):
    rows = report.visitors(conn, "day", store="s1")
    # 20 Nov local: 15:58Z + 15:59Z minutes = 2 + 3; 21 Nov local: the 16:00Z hour rollup (40), not its minutes.
    assert [(r["period"], r["visitors_in"], r["visitors_out"]) for r in rows] == [
        (date(2026, 11, 19), 0, 0), (date(2026, 11, 20), 5, 2), (date(2026, 11, 21), 40, 30)]


def test_visitors_by_local_hour(conn):
    rows = report.visitors(conn, "hour", since=date(2026, 11, 20), store="s1")
    assert [(r["period"].isoformat(), r["visitors_in"]) for r in rows] == [
        ("2026-11-20T23:00:00", 5), ("2026-11-21T00:00:00", 40)]


def test_visitors_across_stores(conn):
    rows = report.visitors(conn, "day", since=date(2026, 11, 20), until=date(2026, 11, 21), across=True)
    # 20 Nov: s1 5 + s2 25 + s4 100 + 0 + s5 50 + s6 7 + 2 + s3 1
    assert [(r["period"], r["stores"], r["visitors_in"]) for r in rows] == [(date(2026, 11, 20), 6, 190)]


def test_device_clock_and_half_hour_zones(conn):
    rows = report.visitors(conn, "hour", store="s6")
    assert [(r["period"].isoformat(), r["visitors_in"]) for r in rows] == [
        ("2026-11-20T10:00:00", 7), ("2026-11-20T11:00:00", 2)]


def test_conversion_where_pos_data_exists(conn, db, tmp_path):
    pos = tmp_path / "pos.csv"
    pos.write_text("org,store,hour,transactions,revenue\n"
                   "o,s1,2026-11-20T15:00:00Z,2,35.5\n"     # 23:00 Taipei: 20 Nov local
                   "o,s2,2026-11-20T10:00:00Z,5,100\n")
    result = subprocess.run([sys.executable, "-m", "edge_agent.hq", "import", "pos", "--db", db, str(pos)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    rows = report.conversion(conn)
    assert [(r["store"], r["day"], r["visitors_in"], r["transactions"], float(r["conversion"])) for r in rows] == [
        ("s1", date(2026, 11, 20), 5, 2, 0.4), ("s2", date(2026, 11, 20), 25, 5, 0.2),
        ("s4", date(2026, 11, 20), 100, 12, 0.12)]
    across = report.conversion(conn, across=True)
    assert [(r["stores"], r["visitors_in"], r["transactions"], float(r["conversion"])) for r in across] == [
        (3, 130, 19, round(19 / 130, 4))]


def test_livestream_ranking_with_week_over_week(conn):
    rows = report.livestream(conn, as_of=date(2026, 11, 21))
    plain = [{k: report._plain(v) for k, v in r.items()} for r in rows]
    assert [(r["rank"], r["product"], r["stores"], r["interactions"], r["pickups"], r["pickups_with_visitor"],
             r["passers_by"]) for r in plain] == [(1, "ramen", 1, 30, 9, 6, 60), (2, "tea", 2, 15, 3, 2, 150)]
    ramen, tea = plain
    assert ramen["interaction_rate"] == 0.5 and ramen["interactions_wow_pct"] == 100.0
    assert ramen["pickups_wow_pct"] == 200.0 and ramen["pickup_rate"] == 0.3
    assert tea["interaction_rate"] == 0.1 and tea["prev_interactions"] == 20 and tea["interactions_wow_pct"] == -25.0
    by_rate = report.livestream(conn, as_of=date(2026, 11, 21), rank_by="rate", level="zone")
    assert [(r["rank"], r["zone"]) for r in by_rate] == [(1, "shelf-b"), (2, "shelf-a")]
    one_store = report.livestream(conn, as_of=date(2026, 11, 21), store="s1")
    assert [(r["product"], r["interactions"], r["prev_interactions"]) for r in one_store] == [("tea", 5, None)]


def test_broken_data_is_found(conn):
    rows = report.broken(conn, as_of=AS_OF, days=1)
    found = {(r["store"], r["problem"]) for r in rows}
    assert found == {
        ("s3", "silent"),
        ("s2", "missing_messages"),
        ("s2", "camera_beam_disagreement"),
        ("s4", "occupancy_drift"),
        ("s4", "dark_camera"),
        ("s5", "occupancy_drift"),
    }, rows
    beam = next(r for r in rows if r["problem"] == "camera_beam_disagreement")
    assert float(beam["value"]) == round(15 / 40, 4)
    assert float(next(r for r in rows if r["store"] == "s5")["value"]) == 0.4
    assert next(r for r in rows if r["problem"] == "dark_camera")["device"] == "d4/c9"


def test_report_cli_csv_and_json(db):
    def run(*args):
        result = subprocess.run([sys.executable, "-m", "edge_agent.hq", "report", *args, "--db", db],
                                capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr
        return result.stdout

    table = list(csv.DictReader(io.StringIO(run("livestream", "--as-of", "2026-11-21"))))
    assert [(r["rank"], r["product"], r["interactions"]) for r in table] == [("1", "ramen", "30"), ("2", "tea", "15")]
    data = json.loads(run("visitors", "--by", "day", "--store", "s1", "--format", "json"))
    assert data[-1] == {"org": "o", "store": "s1", "period": "2026-11-21", "visitors_in": 40, "visitors_out": 30,
                        "cameras": 1}
    problems = json.loads(run("broken", "--as-of", AS_OF.isoformat(), "--format", "json"))
    assert len(problems) == 6


def test_bad_database_address_is_one_clear_line():
    result = subprocess.run([sys.executable, "-m", "edge_agent.hq", "report", "visitors",
                             "--db", "postgresql://nobody@127.0.0.1:1/none"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert "cannot connect to the database" in result.stderr and "Traceback" not in result.stderr
