-- A database as edge-agent 0.1.0 (migration 0001_core only) left it:
-- 5 events on camera door; minutes 10:00 and 10:01 closed (outbox seq 1 sent, seq 2 pending); 10:03 open.
BEGIN TRANSACTION;
CREATE TABLE camera_minutes (
            camera_id TEXT NOT NULL,
            minute TEXT NOT NULL,
            frames INTEGER NOT NULL DEFAULT 0,
            rolled INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (camera_id, minute)
        );
INSERT INTO "camera_minutes" VALUES('door','2026-11-25T10:00Z',3,1);
INSERT INTO "camera_minutes" VALUES('door','2026-11-25T10:01Z',2,1);
INSERT INTO "camera_minutes" VALUES('door','2026-11-25T10:03Z',1,0);
CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,             -- when it happened, ISO 8601 UTC
            bucket TEXT NOT NULL,         -- the minute it is accounted in (UTC)
            camera_id TEXT NOT NULL,
            line_id TEXT NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            track_id INTEGER NOT NULL,
            kind TEXT NOT NULL DEFAULT 'visitor'
        );
INSERT INTO "events" VALUES(1,'2026-11-25T10:00:00.000Z','2026-11-25T10:00Z','door','main','in',0,'visitor');
INSERT INTO "events" VALUES(2,'2026-11-25T10:00:20.000Z','2026-11-25T10:00Z','door','main','out',1,'visitor');
INSERT INTO "events" VALUES(3,'2026-11-25T10:00:40.000Z','2026-11-25T10:00Z','door','main','in',2,'visitor');
INSERT INTO "events" VALUES(4,'2026-11-25T10:01:00.000Z','2026-11-25T10:01Z','door','main','out',3,'visitor');
INSERT INTO "events" VALUES(5,'2026-11-25T10:01:20.000Z','2026-11-25T10:01Z','door','main','in',4,'visitor');
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            topic TEXT NOT NULL,
            payload TEXT NOT NULL,
            qos INTEGER NOT NULL DEFAULT 1,
            retain INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            sent_at TEXT,
            attempts INTEGER NOT NULL DEFAULT 0
        );
INSERT INTO "outbox" VALUES(1,'o1/s1/d1/door/minute/2026-11-25T10:00:00.000Z','smartstore/v1/o1/s1/d1/rollup/minute','{"schema":"smartstore.rollup/1","id":"o1/s1/d1/door/minute/2026-11-25T10:00:00.000Z","org":"o1","store":"s1","device":"d1","camera":"door","granularity":"minute","start":"2026-11-25T10:00:00.000Z","end":"2026-11-25T10:01:00.000Z","frames":3,"lines":{"main":{"in":2,"out":1}},"seq":1}',1,0,'2026-11-25T05:46:51.411Z','2026-11-25T05:46:51.411Z',1);
INSERT INTO "outbox" VALUES(2,'o1/s1/d1/door/minute/2026-11-25T10:01:00.000Z','smartstore/v1/o1/s1/d1/rollup/minute','{"schema":"smartstore.rollup/1","id":"o1/s1/d1/door/minute/2026-11-25T10:01:00.000Z","org":"o1","store":"s1","device":"d1","camera":"door","granularity":"minute","start":"2026-11-25T10:01:00.000Z","end":"2026-11-25T10:02:00.000Z","frames":2,"lines":{"main":{"in":1,"out":1}},"seq":2}',1,0,'2026-11-25T05:46:51.411Z',NULL,0);
CREATE TABLE rollups_minute (
            camera_id TEXT NOT NULL,
            minute TEXT NOT NULL,
            line_id TEXT NOT NULL,
            in_count INTEGER NOT NULL,
            out_count INTEGER NOT NULL,
            PRIMARY KEY (camera_id, minute, line_id)
        );
INSERT INTO "rollups_minute" VALUES('door','2026-11-25T10:00Z','main',2,1);
INSERT INTO "rollups_minute" VALUES('door','2026-11-25T10:01Z','main',1,1);
CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL);
INSERT INTO "schema_migrations" VALUES('0001_core','2026-11-25T05:46:51.407Z');
CREATE TABLE zone_visits (
            id INTEGER PRIMARY KEY,
            camera_id TEXT NOT NULL,
            zone_id TEXT NOT NULL,
            track_id INTEGER NOT NULL,
            enter_ts REAL NOT NULL,       -- epoch seconds UTC
            exit_ts REAL,                 -- NULL while the person is still inside
            kind TEXT NOT NULL DEFAULT 'visitor'
        );
CREATE INDEX events_ts ON events (ts);
CREATE INDEX events_bucket ON events (camera_id, bucket);
CREATE INDEX camera_minutes_open ON camera_minutes (rolled, camera_id, minute);
CREATE INDEX outbox_unsent ON outbox (sent_at, seq);
CREATE INDEX zone_visits_time ON zone_visits (camera_id, zone_id, enter_ts);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('outbox',2);
COMMIT;
