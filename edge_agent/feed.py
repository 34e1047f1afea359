"""Messages the agent queues besides rollups: periodic health and the optional
live event feed. Both go through the outbox like rollups (same seq, same
at-least-once delivery, same de-duplication by id at HQ)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlite_utils

from . import __version__
from .rollup import Identity
from .storage import Store, iso_utc

if TYPE_CHECKING:
    from .runtime import Agent

HEALTH_SCHEMA = "smartstore.health/1"
EVENT_SCHEMA = "smartstore.event/1"


def device_path(identity: Identity) -> str:
    return f"{identity.org}/{identity.store}/{identity.device}"


def queue_health(agent: Agent, now: float | None = None) -> int | None:
    """Queue one ``health`` message with what ``Agent.health()`` reports now."""
    now = time.time() if now is None else now
    report = agent.health()
    payload = {
        "schema": HEALTH_SCHEMA,
        "id": f"{device_path(agent.identity)}/health/{iso_utc(now)}",
        "org": agent.identity.org,
        "store": agent.identity.store,
        "device": agent.identity.device,
        "ts": iso_utc(now),
        "version": __version__,
        **report,
    }
    with agent.store.transaction() as db:
        return agent.store.enqueue(db, payload["id"], agent.identity.topic("health"), payload, qos=1)


def live_event_listener(store: Store, identity: Identity) -> Callable[[sqlite_utils.Database, list[dict]], None]:
    """A Store event listener queuing one ``event`` message per crossing, in the
    transaction that commits the crossing (both or neither)."""

    def on_events(db: sqlite_utils.Database, events: list[dict]) -> None:
        for event in events:
            message_id = (f"{device_path(identity)}/event/{event['camera_id']}/{event['line_id']}/"
                          f"{event['track_id']}/{event['ts']}/{event['direction']}")
            store.enqueue(db, message_id, identity.topic("event"), {
                "schema": EVENT_SCHEMA,
                "id": message_id,
                "org": identity.org,
                "store": identity.store,
                "device": identity.device,
                "camera": event["camera_id"],
                "line": event["line_id"],
                "direction": event["direction"],
                "track": event["track_id"],
                "kind": event["kind"],
                "ts": event["ts"],
                "bucket_start": event["bucket"][:-1] + ":00.000Z",
            }, qos=1)

    return on_events
