"""HQ PostgreSQL schema: versioned migrations for tables, re-applied definitions for views.

Tables change only by appending a migration (never by editing one). Views are
derived, so they are re-created whenever their SQL changes (their hash is kept
in ``schema_meta``): the report can follow the payload contract as it grows
without a data migration. Every worker calls :func:`migrate` at start; an
advisory lock makes K workers starting together apply each step once.
"""

from __future__ import annotations

import hashlib

MIGRATION_LOCK = 0x45444745  # "EDGE": pg_advisory_xact_lock key

MESSAGE_COLUMNS = """
    org text NOT NULL,
    store text NOT NULL,
    device text NOT NULL,
    seq bigint,
    schema text NOT NULL,
    topic text NOT NULL,
    payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
"""

MIGRATIONS: list[tuple[str, str]] = [
    ("0001_fleet_messages", f"""
        CREATE TABLE rollups (
            id text PRIMARY KEY,
            camera text NOT NULL,
            granularity text NOT NULL,
            period_start timestamptz NOT NULL,
            period_end timestamptz NOT NULL,
            frames integer,
            visitors_in integer NOT NULL,
            visitors_out integer NOT NULL,
            timezone text,  -- the store's clock, when the device says (hour/day rollups do)
            {MESSAGE_COLUMNS}
        );
        CREATE INDEX rollups_period ON rollups (org, store, device, camera, granularity, period_start);
        CREATE INDEX rollups_time ON rollups (period_start);
        CREATE INDEX rollups_seq ON rollups (org, store, device, seq);
        CREATE TABLE device_status (
            id text PRIMARY KEY,
            state text NOT NULL,
            ts timestamptz,
            version text,
            {MESSAGE_COLUMNS}
        );
        CREATE INDEX device_status_device ON device_status (org, store, device, ts);
        CREATE TABLE device_health (
            id text PRIMARY KEY,
            ts timestamptz,
            {MESSAGE_COLUMNS}
        );
        CREATE INDEX device_health_device ON device_health (org, store, device, ts);
        CREATE TABLE device_events (
            id text PRIMARY KEY,
            ts timestamptz,
            {MESSAGE_COLUMNS}
        );
        CREATE INDEX device_events_device ON device_events (org, store, device, ts);
        -- Well-formed fleet messages of a kind (or major version) this release does not type.
        CREATE TABLE other_messages (
            id text PRIMARY KEY,
            {MESSAGE_COLUMNS}
        );
        -- Dead letters: every skipped delivery, with a sample of what arrived.
        CREATE TABLE ingest_rejects (
            n bigserial PRIMARY KEY,
            received_at timestamptz NOT NULL DEFAULT now(),
            worker text NOT NULL,
            kind text NOT NULL,
            reason text NOT NULL,
            topic text NOT NULL,
            sample bytea
        );
        -- One row per worker process: liveness and counters, updated with every batch.
        CREATE TABLE ingest_workers (
            worker text NOT NULL,
            started_at timestamptz NOT NULL,
            pid integer,
            host text,
            updated_at timestamptz NOT NULL DEFAULT now(),
            stats jsonb NOT NULL,
            PRIMARY KEY (worker, started_at)
        );
        -- HQ's own reference data: store names and time zones (days are store-local days).
        CREATE TABLE stores (
            org text NOT NULL,
            store text NOT NULL,
            name text,
            timezone text NOT NULL DEFAULT 'UTC',
            region text,
            PRIMARY KEY (org, store)
        );
        -- Point-of-sale transactions per store and hour (imported from the POS system).
        CREATE TABLE pos_sales (
            org text NOT NULL,
            store text NOT NULL,
            hour timestamptz NOT NULL,
            transactions integer NOT NULL CHECK (transactions >= 0),
            revenue numeric,
            PRIMARY KEY (org, store, hour)
        );
    """),
]

# The report's views. Re-created as one unit when this text changes.
#
# Payload tolerance: sections beyond ``lines`` come from other parts of the agent
# (docs/analytics.md: occupancy, shelves; docs/sensors.md: sensors) and may be
# missing or, from a misbehaving device, of the wrong type; every path below is
# read with ->/->>, jsonb_typeof checks and COALESCE, so a store that does not
# send a section contributes no rows to that view and never breaks it.
VIEWS = r"""
-- One set of rollups per camera, whatever granularities the device sends: its hour
-- rollups; minute rollups only where no hour rollup covers them; day rollups only
-- where neither does. (Device hours and days follow the store's clock, e.g. they
-- start at :30 UTC in UTC+5:30, hence the containment test.)
CREATE VIEW v_rollup_base AS
SELECT r.* FROM rollups r WHERE r.granularity = 'hour'
UNION ALL
SELECT r.* FROM rollups r
WHERE r.granularity = 'minute' AND NOT EXISTS (
    SELECT 1 FROM rollups h
    WHERE h.granularity = 'hour' AND h.org = r.org AND h.store = r.store AND h.device = r.device
      AND h.camera = r.camera AND h.period_start <= r.period_start AND r.period_start < h.period_end
      AND h.period_start > r.period_start - interval '1 hour')
UNION ALL
SELECT r.* FROM rollups r
WHERE r.granularity = 'day' AND NOT EXISTS (
    SELECT 1 FROM rollups f
    WHERE f.granularity IN ('hour', 'minute') AND f.org = r.org AND f.store = r.store AND f.device = r.device
      AND f.camera = r.camera AND f.period_start >= r.period_start AND f.period_start < r.period_end);

-- The clock a store's days are counted in: HQ's stores table, else what its devices
-- report in their hour/day rollups, else UTC.
CREATE VIEW v_store_tz AS
SELECT r.org, r.store, COALESCE(s.timezone, r.device_timezone, 'UTC') AS timezone
FROM (SELECT org, store, MAX(timezone) FILTER (WHERE granularity <> 'minute') AS device_timezone
      FROM rollups GROUP BY org, store) r
LEFT JOIN stores s USING (org, store);

-- Visitors (door line "in" counts summed over the store's cameras) per store-local hour.
CREATE VIEW v_visitors_hourly AS
SELECT b.org, b.store,
       date_trunc('hour', b.period_start AT TIME ZONE tz.timezone) AS hour_local,
       (date_trunc('hour', b.period_start AT TIME ZONE tz.timezone) AT TIME ZONE tz.timezone) AS hour_start,
       SUM(b.visitors_in)::bigint AS visitors_in,
       SUM(b.visitors_out)::bigint AS visitors_out,
       COUNT(DISTINCT b.device || '/' || b.camera) AS cameras
FROM v_rollup_base b JOIN v_store_tz tz USING (org, store)
GROUP BY b.org, b.store, tz.timezone, date_trunc('hour', b.period_start AT TIME ZONE tz.timezone);

CREATE VIEW v_visitors_daily AS
SELECT org, store, (hour_local::date) AS day,
       SUM(visitors_in)::bigint AS visitors_in, SUM(visitors_out)::bigint AS visitors_out,
       MAX(cameras) AS cameras, COUNT(*) AS hours_with_data
FROM v_visitors_hourly GROUP BY org, store, hour_local::date;

-- POS transactions per store-local day: HQ's imported pos_sales, else a "pos" section
-- if the store boxes report one (pos.receipts or pos.transactions; pos.total or
-- pos.revenue). Today the boxes keep their receipts for the dashboard only.
CREATE VIEW v_pos_daily AS
WITH imported AS (
    SELECT p.org, p.store, (p.hour AT TIME ZONE COALESCE(s.timezone, 'UTC'))::date AS day,
           SUM(p.transactions)::bigint AS transactions, SUM(p.revenue) AS revenue
    FROM pos_sales p LEFT JOIN stores s USING (org, store)
    GROUP BY 1, 2, 3),
reported AS (
    SELECT b.org, b.store, (b.period_start AT TIME ZONE tz.timezone)::date AS day,
           SUM(COALESCE(b.payload->'pos'->'receipts', b.payload->'pos'->'transactions')::text::numeric)::bigint
               AS transactions,
           SUM(CASE WHEN jsonb_typeof(COALESCE(b.payload->'pos'->'total', b.payload->'pos'->'revenue')) = 'number'
                    THEN COALESCE(b.payload->'pos'->'total', b.payload->'pos'->'revenue')::text::numeric END)
               AS revenue
    FROM v_rollup_base b JOIN v_store_tz tz USING (org, store)
    WHERE jsonb_typeof(COALESCE(b.payload->'pos'->'receipts', b.payload->'pos'->'transactions')) = 'number'
    GROUP BY 1, 2, 3)
SELECT COALESCE(i.org, r.org) AS org, COALESCE(i.store, r.store) AS store, COALESCE(i.day, r.day) AS day,
       COALESCE(i.transactions, r.transactions) AS transactions, COALESCE(i.revenue, r.revenue) AS revenue
FROM imported i FULL JOIN reported r ON (i.org, i.store, i.day) = (r.org, r.store, r.day);

CREATE VIEW v_conversion_daily AS
SELECT v.org, v.store, v.day, v.visitors_in, p.transactions, p.revenue,
       CASE WHEN v.visitors_in > 0 THEN round(p.transactions::numeric / v.visitors_in, 4) END AS conversion
FROM v_visitors_daily v JOIN v_pos_daily p USING (org, store, day);

-- Shelf / product areas per rollup: the analytics' "shelves" section
-- ({zone: {product, passers_by, interactions, unique_visitors, reaches}}) joined with
-- the load cells' sensors.shelves ({zone: {product, pick_ups, with_visitor, …}}).
-- A shelf known to only one of them still appears.
CREATE VIEW v_shelf_rollups AS
WITH seen AS (
    SELECT b.org, b.store, b.device, b.camera, b.period_start, z.key AS zone, z.value AS v
    FROM v_rollup_base b, jsonb_each(CASE WHEN jsonb_typeof(b.payload->'shelves') = 'object'
                                          THEN b.payload->'shelves' ELSE '{}'::jsonb END) z
    WHERE jsonb_typeof(z.value) = 'object'),
weighed AS (
    SELECT b.org, b.store, b.device, b.camera, b.period_start, z.key AS zone, z.value AS v
    FROM v_rollup_base b, jsonb_each(CASE WHEN jsonb_typeof(b.payload->'sensors'->'shelves') = 'object'
                                          THEN b.payload->'sensors'->'shelves' ELSE '{}'::jsonb END) z
    WHERE jsonb_typeof(z.value) = 'object'),
joined AS (
    SELECT COALESCE(s.org, w.org) AS org, COALESCE(s.store, w.store) AS store,
           COALESCE(s.device, w.device) AS device, COALESCE(s.camera, w.camera) AS camera,
           COALESCE(s.period_start, w.period_start) AS period_start, COALESCE(s.zone, w.zone) AS zone,
           s.v AS seen, w.v AS weighed
    FROM seen s FULL JOIN weighed w
      ON (s.org, s.store, s.device, s.camera, s.period_start, s.zone)
       = (w.org, w.store, w.device, w.camera, w.period_start, w.zone))
SELECT org, store, device, camera, period_start, zone,
       COALESCE(NULLIF(seen->>'product', ''), NULLIF(weighed->>'product', ''), zone) AS product,
       COALESCE(CASE WHEN jsonb_typeof(seen->'interactions') = 'number' THEN (seen->>'interactions')::numeric END, 0)
           AS interactions,
       COALESCE(CASE WHEN jsonb_typeof(seen->'unique_visitors') = 'number'
                     THEN (seen->>'unique_visitors')::numeric END, 0) AS unique_visitors,
       COALESCE(CASE WHEN jsonb_typeof(seen->'passers_by') = 'number' THEN (seen->>'passers_by')::numeric END, 0)
           AS passers_by,
       COALESCE(CASE WHEN jsonb_typeof(weighed->'pick_ups') = 'number' THEN (weighed->>'pick_ups')::numeric END, 0)
           AS pickups,
       COALESCE(CASE WHEN jsonb_typeof(weighed->'with_visitor') = 'number'
                     THEN (weighed->>'with_visitor')::numeric END, 0) AS pickups_with_visitor
FROM joined;

CREATE VIEW v_shelf_daily AS
SELECT s.org, s.store, (s.period_start AT TIME ZONE tz.timezone)::date AS day, s.zone, s.product,
       SUM(s.interactions) AS interactions, SUM(s.pickups) AS pickups,
       SUM(s.pickups_with_visitor) AS pickups_with_visitor,
       SUM(s.passers_by) AS passers_by, SUM(s.unique_visitors) AS unique_visitors
FROM v_shelf_rollups s JOIN v_store_tz tz USING (org, store)
GROUP BY 1, 2, 3, 4, 5;

-- Doors counted by a camera line and a beam at once (sensors.doors.{door}: beam and
-- camera in/out over the same window), per store-local day. Beam-only doors are
-- left out: there is nothing to compare them with.
CREATE VIEW v_beam_daily AS
SELECT b.org, b.store, (b.period_start AT TIME ZONE tz.timezone)::date AS day,
       SUM(CASE WHEN jsonb_typeof(d.value->'beam'->'in') = 'number' THEN (d.value->'beam'->>'in')::bigint
                ELSE 0 END)::bigint AS beam_in,
       SUM(CASE WHEN jsonb_typeof(d.value->'camera'->'in') = 'number' THEN (d.value->'camera'->>'in')::bigint
                ELSE 0 END)::bigint AS camera_in,
       SUM(CASE WHEN jsonb_typeof(d.value->'beam'->'out') = 'number' THEN (d.value->'beam'->>'out')::bigint
                ELSE 0 END)::bigint AS beam_out,
       SUM(CASE WHEN jsonb_typeof(d.value->'camera'->'out') = 'number' THEN (d.value->'camera'->>'out')::bigint
                ELSE 0 END)::bigint AS camera_out
FROM v_rollup_base b
JOIN v_store_tz tz USING (org, store),
LATERAL jsonb_each(CASE WHEN jsonb_typeof(b.payload->'sensors'->'doors') = 'object'
                        THEN b.payload->'sensors'->'doors' ELSE '{}'::jsonb END) d
WHERE jsonb_typeof(d.value->'beam') = 'object' AND jsonb_typeof(d.value->'camera') = 'object'
GROUP BY 1, 2, 3;

-- Per device: last word heard, last state, sequence numbers seen vs the span they cover.
CREATE VIEW v_device_last_seen AS
WITH seen AS (
    SELECT org, store, device, MAX(received_at) AS last_received, MAX(period_end) AS last_period_end
    FROM rollups GROUP BY 1, 2, 3
    UNION ALL
    SELECT org, store, device, MAX(received_at), NULL FROM device_status GROUP BY 1, 2, 3
    UNION ALL
    SELECT org, store, device, MAX(received_at), NULL FROM device_health GROUP BY 1, 2, 3),
last_state AS (
    SELECT DISTINCT ON (org, store, device) org, store, device, state, ts
    FROM device_status ORDER BY org, store, device, ts DESC NULLS LAST, received_at DESC)
SELECT s.org, s.store, s.device, MAX(s.last_received) AS last_received, MAX(s.last_period_end) AS last_period_end,
       ls.state AS last_state, ls.ts AS last_state_at
FROM seen s LEFT JOIN last_state ls USING (org, store, device)
GROUP BY s.org, s.store, s.device, ls.state, ls.ts;

CREATE VIEW v_device_seq_gaps AS
WITH seqs AS (
    SELECT org, store, device, seq FROM rollups WHERE seq IS NOT NULL
    UNION SELECT org, store, device, seq FROM device_health WHERE seq IS NOT NULL
    UNION SELECT org, store, device, seq FROM device_events WHERE seq IS NOT NULL
    UNION SELECT org, store, device, seq FROM other_messages WHERE seq IS NOT NULL)
SELECT org, store, device, MIN(seq) AS first_seq, MAX(seq) AS last_seq, COUNT(*) AS received,
       (MAX(seq) - MIN(seq) + 1 - COUNT(*)) AS missing
FROM seqs GROUP BY 1, 2, 3;

-- Per camera and store-local day: minutes that were reported with zero frames processed.
CREATE VIEW v_camera_daily AS
SELECT r.org, r.store, r.device, r.camera, (r.period_start AT TIME ZONE tz.timezone)::date AS day,
       COUNT(*) FILTER (WHERE r.granularity = 'minute') AS minutes,
       COUNT(*) FILTER (WHERE r.granularity = 'minute' AND r.frames = 0) AS dark_minutes
FROM rollups r JOIN v_store_tz tz USING (org, store)
GROUP BY 1, 2, 3, 4, 5;

-- Occupancy drift per store-local day: the day's in/out imbalance from the door
-- lines (~0 over a whole day), and the analytics' own figure when it reports one
-- (occupancy.store.since_reset: in/out/imbalance since the last closing-time reset,
-- taken from the day's last rollup).
CREATE VIEW v_occupancy_daily AS
SELECT v.org, v.store, v.day, v.visitors_in, v.visitors_out,
       (v.visitors_in - v.visitors_out) AS imbalance,
       CASE WHEN v.visitors_in > 0 THEN round(abs(v.visitors_in - v.visitors_out)::numeric / v.visitors_in, 4) END
           AS imbalance_ratio,
       o.reported_imbalance, o.reported_in
FROM v_visitors_daily v
LEFT JOIN (
    SELECT DISTINCT ON (b.org, b.store, (b.period_start AT TIME ZONE tz.timezone)::date)
           b.org, b.store, (b.period_start AT TIME ZONE tz.timezone)::date AS day,
           (b.payload->'occupancy'->'store'->'since_reset'->>'imbalance')::numeric AS reported_imbalance,
           (b.payload->'occupancy'->'store'->'since_reset'->>'in')::numeric AS reported_in
    FROM v_rollup_base b JOIN v_store_tz tz USING (org, store)
    WHERE jsonb_typeof(b.payload->'occupancy'->'store'->'since_reset'->'imbalance') = 'number'
      AND jsonb_typeof(b.payload->'occupancy'->'store'->'since_reset'->'in') = 'number'
    ORDER BY b.org, b.store, (b.period_start AT TIME ZONE tz.timezone)::date, b.period_start DESC) o
  USING (org, store, day);
"""

VIEW_NAMES = [
    "v_occupancy_daily", "v_camera_daily", "v_device_seq_gaps", "v_device_last_seen", "v_beam_daily",
    "v_shelf_daily", "v_shelf_rollups", "v_conversion_daily", "v_pos_daily", "v_visitors_daily",
    "v_visitors_hourly", "v_store_tz", "v_rollup_base",
]


def is_current(conn) -> bool:
    """True when every migration and these views are in place (no DDL needed: a
    read-only reporting account can then use the database as it is)."""
    from psycopg import errors
    from psycopg.rows import tuple_row

    try:
        with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
            done = {row[0] for row in cur.execute("SELECT name FROM schema_migrations").fetchall()}
            views = cur.execute("SELECT value FROM schema_meta WHERE key = 'views'").fetchone()
    except (errors.UndefinedTable, errors.InsufficientPrivilege):
        return False
    return done >= {name for name, _ in MIGRATIONS} and views is not None and \
        views[0] == hashlib.sha256(VIEWS.encode()).hexdigest()


def migrate(conn) -> list[str]:
    """Bring the database to this release's schema; returns the steps applied."""
    from psycopg.rows import tuple_row

    applied_now: list[str] = []
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
        cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now())")
        cur.execute("CREATE TABLE IF NOT EXISTS schema_meta (key text PRIMARY KEY, value text NOT NULL)")
        done = {row[0] for row in cur.execute("SELECT name FROM schema_migrations").fetchall()}
        for name, sql in MIGRATIONS:
            if name not in done:
                cur.execute(sql)
                cur.execute("INSERT INTO schema_migrations (name) VALUES (%s)", [name])
                applied_now.append(name)
        digest = hashlib.sha256(VIEWS.encode()).hexdigest()
        row = cur.execute("SELECT value FROM schema_meta WHERE key = 'views'").fetchone()
        if row is None or row[0] != digest:
            for view in VIEW_NAMES:
                cur.execute(f"DROP VIEW IF EXISTS {view} CASCADE")
            cur.execute(VIEWS)
            cur.execute("INSERT INTO schema_meta (key, value) VALUES ('views', %s) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value", [digest])
            applied_now.append(f"views {digest[:12]}")
    return applied_now
