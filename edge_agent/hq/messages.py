"""Fleet messages → database rows: parse, check and route by the payload's ``schema``.

Pure functions (no I/O), so every rule is unit-tested. A message becomes either a
:class:`Row` for one table, or a :class:`Reject` with a reason that the worker
counts and keeps in ``ingest_rejects``; nothing here raises on bad input.

Routing is by the ``schema`` field (``smartstore.<kind>/<major>``), not by topic:
a new payload kind from a newer device release lands in ``other_messages``
(whole, as JSONB) instead of being lost, and a payload with somebody else's
schema is *foreign* and skipped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_ID_LENGTH = 512
SCHEMA_RE = re.compile(r"^smartstore\.([a-z][a-z0-9_-]*)/(\d+)$")
GRANULARITIES = ("minute", "hour", "day")


@dataclass(slots=True)
class Row:
    """One row for ``table``; ``id`` is the de-duplication key (unique in the table)."""

    table: str
    id: str
    columns: dict
    payload: str  # the original JSON text, stored as JSONB

    @property
    def sort_key(self) -> tuple[str, str]:
        return (self.table, self.id)


@dataclass(slots=True)
class Reject:
    kind: str  # "malformed" | "foreign" | "ignored"
    reason: str
    topic: str
    sample: bytes = field(repr=False, default=b"")


@dataclass(frozen=True)
class TopicParts:
    org: str
    store: str
    device: str
    rest: str  # e.g. "rollup/minute", "status"


def split_topic(topic: str, prefix: str) -> TopicParts | None:
    """``<prefix>/<org>/<store>/<device>/<rest…>`` or None when the topic is not the fleet's."""
    head = prefix.strip("/") + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/", 3)
    if len(parts) < 4 or not all(parts):
        return None
    return TopicParts(*parts)


def _iso(value, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} is not an ISO 8601 time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not an ISO 8601 time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name} has no time zone (the contract sends UTC with Z): {value[:40]!r}")
    return value


def _count(value, name: str, required: bool = False) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**53:
        raise ValueError(f"{name} is not a non-negative integer")
    return value


def _text(value, name: str, required: bool = True, limit: int = 200) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"{name} is missing or not a short string")
    return value


def _line_totals(lines) -> tuple[int, int]:
    if lines is None:
        return 0, 0
    if not isinstance(lines, dict):
        raise ValueError("lines is not an object of {line: {in, out}}")
    total_in = total_out = 0
    for line_id, counts in lines.items():
        if not isinstance(counts, dict):
            raise ValueError(f"lines.{line_id} is not an object with in/out")
        total_in += _count(counts.get("in", 0), f"lines.{line_id}.in", True)
        total_out += _count(counts.get("out", 0), f"lines.{line_id}.out", True)
    return total_in, total_out


def _rollup(body: dict, where: TopicParts) -> dict:
    granularity = _text(body.get("granularity"), "granularity")
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}")
    visitors_in, visitors_out = _line_totals(body.get("lines"))
    return {
        "camera": _text(body.get("camera"), "camera"),
        "granularity": granularity,
        "period_start": _iso(body.get("start"), "start"),
        "period_end": _iso(body.get("end"), "end"),
        "frames": _count(body.get("frames"), "frames"),
        "visitors_in": visitors_in,
        "visitors_out": visitors_out,
        "timezone": _zone(body.get("timezone")),
    }


def _zone(name) -> str | None:
    """An IANA zone name the database can use, or None (an unknown zone must not
    break every report that converts this store's times)."""
    if not isinstance(name, str) or not name or len(name) > 64:
        return None
    try:
        ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):
        return None
    return name


def _status(body: dict, where: TopicParts) -> dict:
    state = _text(body.get("state"), "state", limit=32)
    uptime = body.get("uptime_s")
    if uptime is not None and (isinstance(uptime, bool) or not isinstance(uptime, int | float)):
        raise ValueError("uptime_s is not a number")
    return {"state": state, "ts": _iso(body.get("ts"), "ts") if body.get("ts") is not None else None,
            "version": _text(body.get("version"), "version", required=False, limit=64)}


def _timestamped(body: dict, where: TopicParts) -> dict:
    ts = body.get("ts", body.get("start"))
    return {"ts": _iso(ts, "ts") if ts is not None else None}


# kind (from the schema) → (table, typed columns). Kinds not listed go to other_messages.
ROUTES = {
    "rollup": ("rollups", _rollup),
    "status": ("device_status", _status),
    "health": ("device_health", _timestamped),
    "event": ("device_events", _timestamped),
}
SUPPORTED_MAJOR = 1


def parse(topic: str, payload: bytes, prefix: str = "smartstore/v1") -> Row | Reject:
    """One received message → a row to insert, or the reason it is skipped."""
    sample = payload[:1024]
    where = split_topic(topic, prefix)
    if where is None:
        return Reject("foreign", "topic is not <prefix>/<org>/<store>/<device>/…", topic, sample)
    if where.rest.startswith("cmd/") and not where.rest.endswith("/result"):
        return Reject("ignored", "HQ → device command", topic, sample)
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Reject("malformed", f"payload larger than {MAX_PAYLOAD_BYTES} bytes", topic, sample)
    try:
        text = payload.decode("utf-8")
        body = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return Reject("malformed", "payload is not UTF-8 JSON", topic, sample)
    if not isinstance(body, dict):
        return Reject("malformed", "payload is not a JSON object", topic, sample)
    schema = body.get("schema")
    if not isinstance(schema, str):
        return Reject("foreign", "payload has no schema field", topic, sample)
    match = SCHEMA_RE.match(schema)
    if match is None:
        return Reject("foreign", f"schema {schema[:60]!r} is not smartstore.<kind>/<major>", topic, sample)
    if "\\u0000" in text:
        # PostgreSQL's JSONB cannot hold NUL characters; one such message would fail a whole batch.
        return Reject("malformed", "payload contains a NUL character (\\u0000)", topic, sample)
    kind, major = match.group(1), int(match.group(2))
    try:
        for key, value in (("org", where.org), ("store", where.store), ("device", where.device)):
            claimed = body.get(key)
            if claimed is not None and claimed != value:
                raise ValueError(f"payload {key} {str(claimed)[:40]!r} does not match the topic ({value!r})")
        message_id = body.get("id")
        if message_id is None and kind == "status":
            # Status is retained and may carry no id: its moment and state identify it.
            message_id = f"{where.org}/{where.store}/{where.device}/status/{body.get('ts')}/{body.get('state')}"
        message_id = _text(message_id, "id", limit=MAX_ID_LENGTH)
        seq = _count(body.get("seq"), "seq")
        common = {"org": where.org, "store": where.store, "device": where.device, "seq": seq, "topic": topic,
                  "schema": schema}
        route = ROUTES.get(kind) if major == SUPPORTED_MAJOR else None
        if route is None:
            return Row("other_messages", message_id, common, text)
        table, typed = route
        return Row(table, message_id, {**common, **typed(body, where)}, text)
    except ValueError as exc:
        return Reject("malformed", f"{schema}: {exc}", topic, sample)
