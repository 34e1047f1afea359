"""The payload contract with the ESPHome nodes (firmware_configs/packages/*.yaml).

Topics: ``<topic_root>/<node_id>/<leaf>`` with leaf ``event`` (JSON, QoS 1),
``state`` and ``diag`` (JSON, QoS 0) and ``status`` (plain ``online`` /
``offline``, retained). Every JSON message is checked here before anything is
stored; a message that fails is classified so the node's health says why.

Models are strict (no "12" for 12, no true for 1), reject NaN/Infinity and
ignore unknown keys (a newer firmware may add fields).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

UINT32 = 2**32 - 1
Count = Annotated[int, Field(ge=0, le=UINT32)]
Grams = Annotated[float, Field(ge=-1_000_000, le=1_000_000)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False, frozen=True)

    boot: Count  # random per boot: a new value means the node restarted
    seq: Count  # events the node has tried to publish since boot


class Crossing(_Message):
    type: Literal["crossing"]
    direction: Literal["in", "out"]
    in_total: Count
    out_total: Count
    seq: Annotated[int, Field(ge=1, le=UINT32)]


class Motion(_Message):
    type: Literal["motion"]
    state: bool
    seq: Annotated[int, Field(ge=1, le=UINT32)]


class ShelfChange(_Message):
    type: Literal["pick_up", "put_back"]
    delta_g: Grams
    weight_g: Grams
    items: Annotated[int, Field(ge=1, le=10_000)]
    seq: Annotated[int, Field(ge=1, le=UINT32)]

    @model_validator(mode="after")
    def _sign_matches_type(self) -> ShelfChange:
        if (self.type == "pick_up") != (self.delta_g < 0) or self.delta_g == 0:
            raise ValueError("delta_g must be negative for pick_up and positive for put_back")
        return self


class DoorState(_Message):
    in_total: Count
    out_total: Count
    a_broken: bool = False
    b_broken: bool = False


class PirState(_Message):
    motion: bool


class ShelfState(_Message):
    weight_g: Grams


class Diag(BaseModel):
    """Sent by base.yaml every minute and by battery.yaml when the voltage is read."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False, frozen=True)

    boot: Count
    seq: Count | None = None
    up: Annotated[int, Field(ge=0, le=UINT32)] | None = None  # uptime, seconds
    rssi: Annotated[int, Field(ge=-127, le=0)] | None = None  # Wi-Fi, dBm
    battery_v: Annotated[float, Field(ge=0, le=30)] | None = None


EVENT_MODELS: dict[str, dict[str, type[_Message]]] = {
    "door_beam": {"crossing": Crossing},
    "pir": {"motion": Motion},
    "shelf_scale": {"pick_up": ShelfChange, "put_back": ShelfChange},
}
STATE_MODELS: dict[str, type[_Message]] = {"door_beam": DoorState, "pir": PirState, "shelf_scale": ShelfState}
ALL_EVENT_TYPES = {name for models in EVENT_MODELS.values() for name in models}
LEAVES = ("event", "state", "diag", "status")

# Error categories, as counted per node in the health report.
INVALID_JSON = "invalid_json"  # not JSON, not an object, NaN/Infinity, too deep
INVALID_PAYLOAD = "invalid_payload"  # missing field, wrong type, unknown event type
OUT_OF_RANGE = "out_of_range"  # well-formed but outside the allowed range
WRONG_KIND = "wrong_kind"  # an event of another kind of node (e.g. motion from a door beam)
TOO_LARGE = "too_large"
BAD_TOPIC = "bad_topic"

_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}


class MessageError(Exception):
    def __init__(self, category: str, detail: str) -> None:
        super().__init__(detail)
        self.category = category
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Topic:
    node_id: str
    leaf: str


def parse_topic(topic: str, root: str) -> Topic | None:
    """``sensors/door-main/event`` → Topic('door-main', 'event'); None if not under root."""
    prefix = root + "/"
    if not topic.startswith(prefix):
        return None
    rest = topic[len(prefix):]
    node_id, _, leaf = rest.partition("/")
    return Topic(node_id, leaf)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def load_json(payload: bytes) -> dict:
    try:
        body = json.loads(payload, parse_constant=_reject_constant)
    except RecursionError:
        raise MessageError(INVALID_JSON, "JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(INVALID_JSON, f"not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(body, dict):
        raise MessageError(INVALID_JSON, f"expected a JSON object, got {type(body).__name__}")
    return body


def _validate(model: type[BaseModel], body: dict) -> BaseModel:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        category = OUT_OF_RANGE if all(e["type"] in _RANGE_ERRORS for e in errors) else INVALID_PAYLOAD
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in errors[:3])
        raise MessageError(category, detail[:300]) from None


def parse_message(kind: str, leaf: str, payload: bytes) -> BaseModel | str:
    """Validate one message of a node of ``kind``; raises MessageError.

    Returns the model, or the status string for ``status`` messages.
    """
    if leaf == "status":
        text = payload.decode("utf-8", errors="replace").strip()
        if text not in ("online", "offline"):
            raise MessageError(INVALID_PAYLOAD, f"status must be online or offline, got {text[:40]!r}")
        return text
    body = load_json(payload)
    if leaf == "event":
        event_type = body.get("type")
        models = EVENT_MODELS[kind]
        if not isinstance(event_type, str) or event_type not in models:
            if isinstance(event_type, str) and event_type in ALL_EVENT_TYPES:
                raise MessageError(WRONG_KIND, f"a {kind} node sent a {event_type!r} event")
            raise MessageError(INVALID_PAYLOAD, f"unknown event type {str(event_type)[:40]!r}; "
                                                f"a {kind} node sends {', '.join(sorted(models))}")
        return _validate(models[event_type], body)
    if leaf == "state":
        return _validate(STATE_MODELS[kind], body)
    if leaf == "diag":
        return _validate(Diag, body)
    raise MessageError(BAD_TOPIC, f"unknown topic leaf {leaf[:40]!r}; nodes publish {', '.join(LEAVES)}")
