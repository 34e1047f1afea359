"""The MQTT contract as files HQ tools can load: a JSON Schema per payload and
an AsyncAPI document (see docs/mqtt-contract.md).

    from edge_agent.contract import validator_for
    validator_for(payload).validate(payload)   # needs the jsonschema package
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

# payload "schema" value → file in this package
SCHEMA_FILES = {
    "smartstore.rollup/1": "rollup.schema.json",
    "smartstore.status/1": "status.schema.json",
    "smartstore.health/1": "health.schema.json",
    "smartstore.event/1": "event.schema.json",
    "smartstore.cmd-result/1": "cmd-result.schema.json",
}
# HQ → device: cmd/<name> → file
COMMAND_FILES = {
    "ping": "cmd-ping.schema.json",
    "resend": "cmd-resend.schema.json",
    "reload-config": "cmd-reload-config.schema.json",
}
ASYNCAPI_FILE = "asyncapi.yaml"


def path(name: str):
    return resources.files(__name__) / name


@cache
def load(name: str) -> dict:
    """A schema by file name, payload ``schema`` value or command name."""
    file = SCHEMA_FILES.get(name) or COMMAND_FILES.get(name) or name
    return json.loads(path(file).read_text(encoding="utf-8"))


def validator_for(payload: dict):
    """A jsonschema validator for a device payload, chosen by its ``schema`` field."""
    import jsonschema

    name = payload.get("schema") if isinstance(payload, dict) else None
    if name not in SCHEMA_FILES:
        raise ValueError(f"unknown payload schema {name!r}; known: {', '.join(SCHEMA_FILES)}")
    schema = load(name)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
