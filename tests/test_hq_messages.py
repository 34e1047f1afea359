"""Routing rules of the HQ ingest: what becomes a row, what is skipped and why."""

import json

import pytest

from edge_agent.hq.messages import Reject, Row, parse, split_topic
from edge_agent.hq.sources import routing_key_to_topic, topic_to_binding_key

TOPIC = "smartstore/v1/acme/taipei-01/box-1/rollup/minute"


def rollup(**changes) -> bytes:
    body = {"schema": "smartstore.rollup/1", "id": "acme/taipei-01/box-1/door/minute/2026-11-25T04:49:00.000Z",
            "seq": 7, "org": "acme", "store": "taipei-01", "device": "box-1", "camera": "door",
            "granularity": "minute", "start": "2026-11-25T04:49:00.000Z", "end": "2026-11-25T04:50:00.000Z",
            "frames": 600, "lines": {"entrance": {"in": 3, "out": 2}, "side": {"in": 1, "out": 0}}}
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def test_rollup_becomes_a_typed_row_with_the_whole_payload():
    row = parse(TOPIC, rollup())
    assert isinstance(row, Row) and row.table == "rollups"
    assert row.id == "acme/taipei-01/box-1/door/minute/2026-11-25T04:49:00.000Z"
    assert row.columns["visitors_in"] == 4 and row.columns["visitors_out"] == 2
    assert (row.columns["org"], row.columns["store"], row.columns["device"]) == ("acme", "taipei-01", "box-1")
    assert row.columns["seq"] == 7 and row.columns["granularity"] == "minute"
    assert json.loads(row.payload)["lines"]["side"] == {"in": 1, "out": 0}


def test_sections_from_newer_releases_are_kept_not_refused():
    row = parse(TOPIC, rollup(zones={"shelf": {"interactions": 3}}, sensors={"doors": {}}, future={"x": [1]}))
    assert isinstance(row, Row) and json.loads(row.payload)["future"] == {"x": [1]}


def test_status_without_id_gets_one_from_its_moment_and_state():
    body = {"schema": "smartstore.status/1", "org": "acme", "store": "taipei-01", "device": "box-1",
            "state": "online", "ts": "2026-11-25T04:49:20.123Z", "version": "0.1.0", "uptime_s": 12.5}
    row = parse("smartstore/v1/acme/taipei-01/box-1/status", json.dumps(body).encode())
    assert isinstance(row, Row) and row.table == "device_status"
    assert row.id == "acme/taipei-01/box-1/status/2026-11-25T04:49:20.123Z/online"


def test_unknown_kinds_and_major_versions_are_kept_in_other_messages():
    for schema in ("smartstore.sensorlog/1", "smartstore.rollup/2"):
        row = parse(TOPIC, json.dumps({"schema": schema, "id": "x1", "anything": True}).encode())
        assert isinstance(row, Row) and row.table == "other_messages", schema


@pytest.mark.parametrize("topic, payload, kind, reason", [
    (TOPIC, b"not json", "malformed", "not UTF-8 JSON"),
    (TOPIC, b"\xff\xfe", "malformed", "not UTF-8 JSON"),
    (TOPIC, b"[1, 2]", "malformed", "not a JSON object"),
    (TOPIC, b"x" * 300_000, "malformed", "larger than"),
    (TOPIC, json.dumps({"hello": "world"}).encode(), "foreign", "no schema"),
    (TOPIC, json.dumps({"schema": "acme.telemetry/3", "id": "1"}).encode(), "foreign", "not smartstore"),
    ("smartstore/v1/acme/only-two", rollup(), "foreign", "topic is not"),
    ("elsewhere/acme/taipei-01/box-1/rollup/minute", rollup(), "foreign", "topic is not"),
    ("smartstore/v1/acme/taipei-01/box-1/cmd/resend", b"{}", "ignored", "command"),
    (TOPIC, rollup(id=None), "malformed", "id is missing"),
    (TOPIC, rollup(id=""), "malformed", "id is missing"),
    (TOPIC, rollup(id=42), "malformed", "id is missing"),
    (TOPIC, rollup(seq=-1), "malformed", "seq is not"),
    (TOPIC, rollup(seq="7"), "malformed", "seq is not"),
    (TOPIC, rollup(granularity="week"), "malformed", "granularity"),
    (TOPIC, rollup(start="yesterday"), "malformed", "start is not an ISO 8601"),
    (TOPIC, rollup(start="2026-11-25T04:49:00"), "malformed", "no time zone"),
    (TOPIC, rollup(lines={"entrance": {"in": "3"}}), "malformed", "lines.entrance.in"),
    (TOPIC, rollup(lines={"entrance": {"in": True}}), "malformed", "lines.entrance.in"),
    (TOPIC, rollup(lines=[1]), "malformed", "lines is not"),
    (TOPIC, rollup(frames=1.5), "malformed", "frames"),
    (TOPIC, rollup(store="taipei-02"), "malformed", "does not match the topic"),
    (TOPIC, rollup(camera="bad\u0000name"), "malformed", "NUL"),
])
def test_bad_messages_are_rejected_with_a_reason(topic, payload, kind, reason):
    result = parse(topic, payload)
    assert isinstance(result, Reject), result
    assert result.kind == kind and reason in result.reason, result.reason
    assert len(result.sample) <= 1024


def test_topic_parts_and_rabbitmq_routing_keys():
    parts = split_topic(TOPIC, "smartstore/v1")
    assert (parts.org, parts.store, parts.device, parts.rest) == ("acme", "taipei-01", "box-1", "rollup/minute")
    # RabbitMQ's MQTT plugin swaps '/' and '.'; a store id with a dot survives the round trip.
    assert routing_key_to_topic("smartstore.v1.acme.tpe/01.box-1.status") == "smartstore/v1/acme/tpe.01/box-1/status"
    assert topic_to_binding_key("smartstore/v1/#") == "smartstore.v1.#"
    assert topic_to_binding_key("smartstore/v1/+/+/+/rollup/#") == "smartstore.v1.*.*.*.rollup.#"
