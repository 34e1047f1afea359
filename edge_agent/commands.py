"""Commands from headquarters (``<base>/cmd/<name>``) and their results.

Every message on a command topic gets exactly one result on
``<base>/cmd/<name>/result`` (queued in the outbox, so it survives restarts):
``ok: true`` with the command's answer, or ``ok: false`` with an error that
says what was wrong. A malformed command is an error result, never an
exception in the agent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

COMMAND_SCHEMA = "smartstore.cmd/1"
RESULT_SCHEMA = "smartstore.cmd-result/1"
MAX_COMMAND_BYTES = 16 * 1024

RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class Command(BaseModel):
    """Fields every command carries."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["smartstore.cmd/1"] | None = Field(None, alias="schema")
    request_id: RequestId = Field(description="chosen by HQ; the result's id ends with it")


class Ping(Command):
    """Answered with version, uptime and the outbox state."""


class ReloadConfig(Command):
    """Re-read the configuration file and apply what can change without a restart."""


Kind = Literal["minute", "hour", "day", "health", "event", "cmd"]


class Resend(Command):
    """Publish already-sent messages again (same id, seq and payload).

    Select by time (rollups by window start, other messages by creation time;
    ``from`` inclusive, ``to`` exclusive) and/or by seq range (inclusive),
    optionally only some kinds or one camera.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True,
                              json_schema_extra={"anyOf": [{"required": ["from"]}, {"required": ["from_seq"]}]})

    from_: datetime | None = Field(None, alias="from")
    to: datetime | None = None
    from_seq: Annotated[int, Field(ge=1)] | None = None
    to_seq: Annotated[int, Field(ge=1)] | None = None
    kinds: list[Kind] | None = None
    camera: str | None = None

    @model_validator(mode="after")
    def _some_range(self) -> Resend:
        if self.from_ is None and self.from_seq is None:
            raise ValueError("give a time range ('from', optional 'to') or a seq range ('from_seq', optional 'to_seq')")
        for moment in (self.from_, self.to):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("times need a zone, e.g. 2026-11-25T10:00:00Z")
        if self.from_ and self.to and self.to <= self.from_:
            raise ValueError("'to' must be after 'from'")
        if self.from_seq and self.to_seq and self.to_seq < self.from_seq:
            raise ValueError("'to_seq' must be at least 'from_seq'")
        return self

    def topic_suffixes(self) -> list[str] | None:
        if not self.kinds:
            return None
        mapping = {"minute": "rollup/minute", "hour": "rollup/hour", "day": "rollup/day", "health": "health",
                   "event": "event", "cmd": "result"}
        return [mapping[kind] for kind in self.kinds]


COMMANDS: dict[str, type[Command]] = {"ping": Ping, "resend": Resend, "reload-config": ReloadConfig}


class CommandError(Exception):
    """A command that cannot be carried out; the message goes into the result."""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse(name: str, raw: bytes) -> Command:
    """The command model for ``raw`` on ``cmd/<name>``, or CommandError saying why not."""
    if name not in COMMANDS:
        raise CommandError(f"unknown command {name!r}; known: {', '.join(sorted(COMMANDS))}")
    if len(raw) > MAX_COMMAND_BYTES:
        raise CommandError(f"command is {len(raw)} bytes; at most {MAX_COMMAND_BYTES}")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f"payload is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CommandError("payload must be a JSON object, e.g. {\"request_id\": \"r1\"}")
    try:
        return COMMANDS[name].model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(payload)'}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise CommandError(problems) from None


def request_id_of(raw: bytes) -> str:
    """The request id a result answers: the command's own, or a digest of a malformed payload."""
    try:
        body = json.loads(raw)
        if isinstance(body, dict) and isinstance(body.get("request_id"), str):
            candidate = body["request_id"]
            if 0 < len(candidate) <= 128 and all(c.isalnum() or c in "_.:-" for c in candidate):
                return candidate
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass
    return "invalid-" + hashlib.sha256(raw).hexdigest()[:16]


Handler = Callable[[Command], dict]


def command_schemas() -> dict[str, dict]:
    """JSON Schema of each command (what edge_agent/contract/cmd-*.schema.json hold)."""
    schemas = {}
    for name, model in COMMANDS.items():
        schema = {"$schema": "http://json-schema.org/draft-07/schema#", "$id": f"urn:smartstore:contract:cmd-{name}/1",
                  **model.model_json_schema(by_alias=True)}
        schema["title"] = f"cmd/{name}"
        schemas[name] = schema
    return schemas
