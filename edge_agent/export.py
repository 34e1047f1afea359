"""``edge-agent export``: a table over a time range as CSV or JSON lines, for a
store manager's spreadsheet or a technician's ticket. Reads through its own
read-only connection, so the running agent is not disturbed."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from .storage import iso_utc, minute_of, open_readonly

# table → (time column, how it is stored, order)
TABLES = {
    "events": ("ts", "iso", "ts, id"),
    "rollups_minute": ("minute", "minute", "minute, camera_id, line_id"),
    "rollups_hour": ("hour", "minute", "hour, camera_id, line_id"),
    "rollups_day": ("start", "minute", "start, camera_id, line_id"),
    "zone_visits": ("enter_ts", "epoch", "enter_ts, id"),
    "sensor_readings": ("ts", "epoch", "ts, id"),
    "device_log": ("ts", "epoch", "ts, id"),
    "outbox": ("created_at", "iso", "seq"),
}
EPOCH_COLUMNS = {"ts", "enter_ts", "exit_ts"}
JSON_COLUMNS = {"payload", "detail"}


def parse_moment(text: str, timezone: str) -> float:
    """``2026-11-25``, ``2026-11-25T10:00``, ``…Z`` or ``…+08:00`` → epoch seconds
    (times without a zone are the store's local time)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: write a date or time like 2026-11-25 or 2026-11-25T10:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone))
    return moment.timestamp()


def _bound(kind: str, epoch: float):
    if kind == "iso":
        return iso_utc(epoch)
    if kind == "minute":
        return minute_of(epoch) if epoch % 60 == 0 else minute_of(epoch + 60 - epoch % 60)
    return epoch


def export_rows(db_path: Path, table: str, since: float | None, until: float | None, camera: str | None = None):
    """Yield (columns, row) for rows of ``table`` with time in [since, until)."""
    column, kind, order = TABLES[table]
    db = open_readonly(db_path)
    where, params = [], []
    if since is not None:
        where.append(f"{column} >= ?")
        params.append(_bound(kind, since))
    if until is not None:
        where.append(f"{column} < ?")
        params.append(_bound(kind, until))
    if camera is not None:
        if "camera_id" not in db[table].columns_dict:
            raise click.BadParameter(f"table {table} has no camera column", param_hint="--camera")
        where.append("camera_id = ?")
        params.append(camera)
    sql = f"SELECT * FROM {table}" + (f" WHERE {' AND '.join(where)}" if where else "") + f" ORDER BY {order}"
    cursor = db.execute(sql, params)
    columns = [d[0] for d in cursor.description]
    for row in cursor:
        yield columns, row
    db.conn.close()


def _readable(columns: list[str], row: tuple, decode_json: bool) -> dict:
    out = {}
    for name, value in zip(columns, row):
        if name in EPOCH_COLUMNS and isinstance(value, (int, float)):
            value = iso_utc(value)
        elif decode_json and name in JSON_COLUMNS and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[name] = value
    return out


@click.command("export")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Agent configuration (for the database path and the store's time zone).")
@click.option("--db", "db_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The agent database (instead of --config).")
@click.option("--table", type=click.Choice(sorted(TABLES)), default="events", show_default=True)
@click.option("--from", "since", help="Start, inclusive: 2026-11-25 or 2026-11-25T10:00 (store time) or …Z.")
@click.option("--to", "until", help="End, exclusive (same forms).")
@click.option("--camera", help="Only this camera.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: stdout).")
@click.option("--tz", "timezone", help="Time zone for times without one (default: the config's, else UTC).")
def export_command(config_path, db_path, table, since, until, camera, fmt, output, timezone) -> None:
    """Export a table over a time range as CSV or JSON lines (times in UTC)."""
    from .config import load_config

    if (config_path is None) == (db_path is None):
        raise click.UsageError("give either --config or --db")
    if config_path is not None:
        config = load_config(config_path)
        db_path = config.storage.path
        timezone = timezone or config.timezone
        if not Path(db_path).exists():
            raise click.UsageError(f"the database {db_path} does not exist yet (has the agent run?)")
    timezone = timezone or "UTC"
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"{timezone!r} is not a time zone name such as Asia/Shanghai", param_hint="--tz")
    start = parse_moment(since, timezone) if since else None
    end = parse_moment(until, timezone) if until else None
    if start is not None and end is not None and end <= start:
        raise click.BadParameter("--to must be after --from", param_hint="--to")
    stream = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    written = 0
    try:
        writer = None
        for columns, row in export_rows(db_path, table, start, end, camera):
            record = _readable(columns, row, decode_json=fmt == "jsonl")
            if fmt == "jsonl":
                stream.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            else:
                if writer is None:
                    writer = csv.DictWriter(stream, fieldnames=columns)
                    writer.writeheader()
                writer.writerow(record)
            written += 1
        if writer is None and fmt == "csv":
            # An empty range still gets its header, so a spreadsheet opens it.
            columns = [d[0] for d in open_readonly(db_path).execute(f"SELECT * FROM {table} LIMIT 0").description]
            csv.writer(stream).writerow(columns)
    finally:
        if output:
            stream.close()
    click.echo(f"exported {written} rows of {table}", err=True)
