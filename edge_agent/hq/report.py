"""``edge-agent hq report``: what HQ decides with — visitors, conversion, the livestream
product ranking, and stores whose data should not be trusted — as CSV or JSON.

Each report is one SQL query over the views in :mod:`.pgschema`; the queries
are plain functions returning rows as dicts, so the CLI, the tests and any HQ
script get the same numbers.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import click

from . import require
from .pgschema import is_current, migrate


def connect(dsn: str):
    """A reporting connection (rows as dicts); brings the schema and views up to date."""
    psycopg = require("psycopg")
    from psycopg.rows import dict_row

    try:
        conn = psycopg.connect(dsn, autocommit=True, row_factory=dict_row, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot connect to the database: {str(exc).strip()}") from None
    if not is_current(conn):
        migrate(conn)
    return conn


def _filters(org: str | None, store: str | None, column_prefix: str = "") -> tuple[str, dict]:
    clauses, params = [], {}
    if org:
        clauses.append(f"{column_prefix}org = %(org)s")
        params["org"] = org
    if store:
        clauses.append(f"{column_prefix}store = %(store)s")
        params["store"] = store
    return (" AND " + " AND ".join(clauses)) if clauses else "", params


# -- reports ------------------------------------------------------------------------------
def visitors(conn, by: str = "day", since: date | None = None, until: date | None = None,
             org: str | None = None, store: str | None = None, across: bool = False) -> list[dict]:
    """Visitors (door "in" counts) per store, or summed across stores, per hour or store-local day."""
    where, params = _filters(org, store)
    if by == "hour":
        period, view = "hour_local", "v_visitors_hourly"
        time_filter = " AND hour_local >= %(since)s AND hour_local < %(until)s"
    else:
        period, view = "day", "v_visitors_daily"
        time_filter = " AND day >= %(since)s AND day < %(until)s"
    params["since"] = since or date(1970, 1, 1)
    params["until"] = until or date(9999, 1, 1)
    if across:
        sql = (f"SELECT {period} AS period, COUNT(DISTINCT org || '/' || store) AS stores, "
               f"SUM(visitors_in)::bigint AS visitors_in, SUM(visitors_out)::bigint AS visitors_out "
               f"FROM {view} WHERE true{where}{time_filter} GROUP BY {period} ORDER BY {period}")
    else:
        sql = (f"SELECT org, store, {period} AS period, visitors_in, visitors_out, cameras "
               f"FROM {view} WHERE true{where}{time_filter} ORDER BY org, store, {period}")
    return conn.execute(sql, params).fetchall()


def conversion(conn, since: date | None = None, until: date | None = None, org: str | None = None,
               store: str | None = None, across: bool = False) -> list[dict]:
    """Transactions / visitors per store-local day, where POS data exists."""
    where, params = _filters(org, store)
    params["since"] = since or date(1970, 1, 1)
    params["until"] = until or date(9999, 1, 1)
    time_filter = " AND day >= %(since)s AND day < %(until)s"
    if across:
        sql = ("SELECT day, COUNT(*) AS stores, SUM(visitors_in)::bigint AS visitors_in, "
               "SUM(transactions)::bigint AS transactions, SUM(revenue) AS revenue, "
               "round(SUM(transactions)::numeric / NULLIF(SUM(visitors_in), 0), 4) AS conversion "
               f"FROM v_conversion_daily WHERE true{where}{time_filter} GROUP BY day ORDER BY day")
    else:
        sql = ("SELECT org, store, day, visitors_in, transactions, revenue, conversion "
               f"FROM v_conversion_daily WHERE true{where}{time_filter} ORDER BY org, store, day")
    return conn.execute(sql, params).fetchall()


RANK_COLUMNS = {"interactions": "interactions", "pickups": "pickups", "pickups-with-visitor": "pickups_with_visitor",
                "rate": "interaction_rate"}


def livestream(conn, as_of: date, days: int = 7, rank_by: str = "interactions", level: str = "product",
               top: int | None = 20, org: str | None = None, store: str | None = None,
               min_passers_by: int = 0) -> list[dict]:
    """Shelf zones or products ranked for the next livestream over the ``days`` before
    ``as_of`` (store-local days), with the change against the ``days`` before that."""
    key = {"product": "product", "zone": "zone"}[level]
    where, params = _filters(org, store)
    params.update(cur_from=as_of - timedelta(days=days), cur_to=as_of,
                  prev_from=as_of - timedelta(days=2 * days), prev_to=as_of - timedelta(days=days),
                  min_passers=min_passers_by)
    order = RANK_COLUMNS[rank_by]
    sql = f"""
    WITH cur AS (
        SELECT {key} AS item, COUNT(DISTINCT org || '/' || store) AS stores,
               SUM(interactions) AS interactions, SUM(pickups) AS pickups,
               SUM(pickups_with_visitor) AS pickups_with_visitor, SUM(passers_by) AS passers_by
        FROM v_shelf_daily WHERE day >= %(cur_from)s AND day < %(cur_to)s{where} GROUP BY {key}),
    prev AS (
        SELECT {key} AS item, SUM(interactions) AS interactions, SUM(pickups) AS pickups,
               SUM(passers_by) AS passers_by
        FROM v_shelf_daily WHERE day >= %(prev_from)s AND day < %(prev_to)s{where} GROUP BY {key}),
    ranked AS (
        SELECT cur.item, cur.stores, cur.interactions, cur.pickups, cur.pickups_with_visitor, cur.passers_by,
               round(cur.interactions / NULLIF(cur.passers_by, 0), 4) AS interaction_rate,
               round(cur.pickups / NULLIF(cur.interactions, 0), 4) AS pickup_rate,
               prev.interactions AS prev_interactions,
               round(prev.interactions / NULLIF(prev.passers_by, 0), 4) AS prev_interaction_rate,
               round(100 * (cur.interactions - prev.interactions) / NULLIF(prev.interactions, 0), 1)
                   AS interactions_wow_pct,
               round(100 * (cur.pickups - prev.pickups) / NULLIF(prev.pickups, 0), 1) AS pickups_wow_pct
        FROM cur LEFT JOIN prev USING (item)
        WHERE cur.passers_by >= %(min_passers)s)
    SELECT RANK() OVER (ORDER BY {order} DESC NULLS LAST, interactions DESC, item) AS rank,
           item AS {level}, stores, interactions, pickups, pickups_with_visitor, passers_by,
           interaction_rate, pickup_rate, prev_interactions, prev_interaction_rate, interactions_wow_pct,
           pickups_wow_pct
    FROM ranked
    ORDER BY rank, item
    """
    rows = conn.execute(sql, params).fetchall()
    return rows[:top] if top else rows


def broken(conn, as_of: datetime | None = None, days: int = 1, silent_after_minutes: float = 30,
           beam_tolerance: float = 0.15, drift_tolerance: float = 0.10, min_visitors: int = 20,
           dark_share: float = 0.5, org: str | None = None, store: str | None = None) -> list[dict]:
    """Stores and devices whose data looks wrong, one row per problem found."""
    as_of = as_of or datetime.now(UTC)
    where, params = _filters(org, store)
    params.update(as_of=as_of, silent_after=timedelta(minutes=silent_after_minutes),
                  # Whole days only: a day in progress always looks like drift (people are inside).
                  day_from=as_of.date() - timedelta(days=days), day_to=as_of.date(),
                  beam_tol=beam_tolerance, drift_tol=drift_tolerance, min_visitors=min_visitors,
                  dark_share=dark_share)
    sql = f"""
    SELECT org, store, device, 'silent' AS problem,
           'nothing received for ' || to_char(%(as_of)s - last_received, 'DD"d "HH24"h "MI"m"')
             || COALESCE(', last status ' || last_state, '') AS detail,
           round(extract(epoch FROM %(as_of)s - last_received) / 60) AS value, NULL::date AS day
    FROM v_device_last_seen
    WHERE (last_received < %(as_of)s - %(silent_after)s::interval OR last_state = 'offline'){where}
    UNION ALL
    SELECT org, store, device, 'missing_messages',
           (missing)::text || ' sequence numbers between ' || first_seq || ' and ' || last_seq || ' never arrived',
           missing, NULL
    FROM v_device_seq_gaps WHERE missing > 0{where}
    UNION ALL
    SELECT org, store, device || '/' || camera, 'dark_camera',
           dark_minutes || ' of ' || minutes || ' minutes with no frames processed', dark_minutes, day
    FROM v_camera_daily
    WHERE day >= %(day_from)s AND day < %(day_to)s AND minutes > 0
      AND dark_minutes::numeric / minutes >= %(dark_share)s{where}
    UNION ALL
    SELECT org, store, NULL, 'camera_beam_disagreement',
           'at doors with both, cameras counted ' || camera_in || ' in, the beams ' || beam_in,
           round(abs(camera_in - beam_in)::numeric / GREATEST(beam_in, camera_in, 1), 4), day
    FROM v_beam_daily
    WHERE day >= %(day_from)s AND day < %(day_to)s AND GREATEST(beam_in, camera_in) >= %(min_visitors)s
      AND abs(camera_in - beam_in)::numeric / GREATEST(beam_in, camera_in, 1) > %(beam_tol)s{where}
    UNION ALL
    SELECT org, store, NULL, 'occupancy_drift',
           'in ' || visitors_in || ' vs out ' || visitors_out || ' over the day'
             || COALESCE(', the store box reports an imbalance of ' || reported_imbalance || ' since its reset', ''),
           GREATEST(imbalance_ratio, abs(reported_imbalance) / NULLIF(reported_in, 0)), day
    FROM v_occupancy_daily
    WHERE day >= %(day_from)s AND day < %(day_to)s
      AND ((visitors_in >= %(min_visitors)s AND imbalance_ratio > %(drift_tol)s)
           OR (reported_in >= %(min_visitors)s AND abs(reported_imbalance) / reported_in > %(drift_tol)s)){where}
    ORDER BY org, store, problem, device NULLS FIRST, day
    """
    return conn.execute(sql, params).fetchall()


# -- output -------------------------------------------------------------------------------
def _plain(value):
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def render(rows: list[dict], fmt: str) -> str:
    rows = [{key: _plain(value) for key, value in row.items()} for row in rows]
    if fmt == "json":
        return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def _emit(rows: list[dict], fmt: str, output: Path | None) -> None:
    text = render(rows, fmt)
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


# -- CLI --------------------------------------------------------------------------------
db_option = click.option("--db", required=True, envvar="EDGE_AGENT_HQ_DB",
                         help="PostgreSQL connection string (env EDGE_AGENT_HQ_DB).")
format_option = click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
output_option = click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
                             help="Write to this file instead of standard output.")
scope_options = [click.option("--org", default=None), click.option("--store", default=None)]


def scoped(func):
    for option in reversed(scope_options):
        func = option(func)
    return func


@click.group("report")
def report() -> None:
    """Reports from the ingested fleet data (CSV or JSON)."""


@report.command("visitors")
@db_option
@click.option("--by", type=click.Choice(["hour", "day"]), default="day", show_default=True)
@click.option("--from", "since", metavar="YYYY-MM-DD", help="First store-local day (inclusive).")
@click.option("--to", "until", metavar="YYYY-MM-DD", help="Last store-local day (exclusive).")
@click.option("--across", is_flag=True, help="Sum across stores instead of one row per store.")
@scoped
@format_option
@output_option
def visitors_command(db, by, since, until, across, org, store, fmt, output) -> None:
    """Visitors per store (or across stores) by hour or day."""
    with connect(db) as conn:
        _emit(visitors(conn, by, _day(since), _day(until), org, store, across), fmt, output)


@report.command("conversion")
@db_option
@click.option("--from", "since", metavar="YYYY-MM-DD")
@click.option("--to", "until", metavar="YYYY-MM-DD")
@click.option("--across", is_flag=True)
@scoped
@format_option
@output_option
def conversion_command(db, since, until, across, org, store, fmt, output) -> None:
    """POS transactions / visitors per store-local day, where POS data exists."""
    with connect(db) as conn:
        _emit(conversion(conn, _day(since), _day(until), org, store, across), fmt, output)


@report.command("livestream")
@db_option
@click.option("--as-of", metavar="YYYY-MM-DD", help="End of the period (exclusive); default today.")
@click.option("--days", type=click.IntRange(1, 90), default=7, show_default=True,
              help="Period length; compared with the period before it (7: week over week).")
@click.option("--by", "rank_by", type=click.Choice(list(RANK_COLUMNS)), default="interactions", show_default=True)
@click.option("--level", type=click.Choice(["product", "zone"]), default="product", show_default=True)
@click.option("--top", type=int, default=20, show_default=True, help="0 for all.")
@click.option("--min-passers-by", type=int, default=0, show_default=True,
              help="Leave out items seen by fewer passers-by (rates on tiny numbers mislead).")
@scoped
@format_option
@output_option
def livestream_command(db, as_of, days, rank_by, level, top, min_passers_by, org, store, fmt, output) -> None:
    """Shelf products ranked by interactions, pick-ups or interaction rate, with week-over-week change."""
    with connect(db) as conn:
        rows = livestream(conn, _day(as_of) or datetime.now(UTC).date(), days, rank_by, level, top or None, org,
                          store, min_passers_by)
        _emit(rows, fmt, output)


@report.command("broken")
@db_option
@click.option("--as-of", metavar="ISO-TIME", help="Judge as of this time (default now).")
@click.option("--days", type=int, default=1, show_default=True,
              help="Whole store-local days before --as-of to check.")
@click.option("--silent-after", type=float, default=30, show_default=True, help="Minutes without a message.")
@click.option("--beam-tolerance", type=float, default=0.15, show_default=True)
@click.option("--drift-tolerance", type=float, default=0.10, show_default=True)
@click.option("--min-visitors", type=int, default=20, show_default=True)
@scoped
@format_option
@output_option
def broken_command(db, as_of, days, silent_after, beam_tolerance, drift_tolerance, min_visitors, org, store, fmt,
                   output) -> None:
    """Stores whose data looks broken: silent devices, missing messages, dark cameras,
    camera vs door-beam disagreement, occupancy drift."""
    moment = datetime.fromisoformat(as_of) if as_of else None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    with connect(db) as conn:
        _emit(broken(conn, moment, days, silent_after, beam_tolerance, drift_tolerance, min_visitors, org=org,
                     store=store), fmt, output)


# -- reference data ------------------------------------------------------------------------
@click.group("import")
def import_group() -> None:
    """Load HQ reference data (POS sales, store time zones) from CSV."""


@import_group.command("pos")
@db_option
@click.argument("csv_file", type=click.File("r", encoding="utf-8"))
def import_pos(db, csv_file) -> None:
    """CSV with columns org,store,hour,transactions[,revenue]; hour is ISO 8601 with a zone.
    Rows for the same store and hour replace earlier ones."""
    rows = list(csv.DictReader(csv_file))
    missing = {"org", "store", "hour", "transactions"} - set(rows[0] if rows else {})
    if missing:
        raise click.UsageError(f"the CSV needs the columns {', '.join(sorted(missing))}")
    with connect(db) as conn, conn.transaction():
        conn.cursor().executemany(
            "INSERT INTO pos_sales (org, store, hour, transactions, revenue) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (org, store, hour) DO UPDATE SET transactions = excluded.transactions, "
            "revenue = excluded.revenue",
            [(r["org"], r["store"], r["hour"], int(r["transactions"]), r.get("revenue") or None) for r in rows])
    click.echo(f"{len(rows)} POS rows loaded")


@import_group.command("stores")
@db_option
@click.argument("csv_file", type=click.File("r", encoding="utf-8"))
def import_stores(db, csv_file) -> None:
    """CSV with columns org,store[,name,timezone,region]; timezone is an IANA name (Asia/Taipei)."""
    rows = list(csv.DictReader(csv_file))
    with connect(db) as conn, conn.transaction():
        for r in rows:
            conn.execute("SELECT now() AT TIME ZONE %s", [r.get("timezone") or "UTC"])  # a clear error on a bad zone
        conn.cursor().executemany(
            "INSERT INTO stores (org, store, name, timezone, region) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (org, store) DO UPDATE SET name = excluded.name, timezone = excluded.timezone, "
            "region = excluded.region",
            [(r["org"], r["store"], r.get("name"), r.get("timezone") or "UTC", r.get("region")) for r in rows])
    click.echo(f"{len(rows)} stores loaded")
