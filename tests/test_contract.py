"""The contract files themselves: valid JSON Schemas, a valid AsyncAPI 3.0 document
(checked against the official AsyncAPI schema), in step with the code."""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from edge_agent import contract
from edge_agent.commands import command_schemas

HERE = Path(__file__).resolve().parent


def test_every_schema_is_a_valid_draft7_schema():
    for name in [*contract.SCHEMA_FILES.values(), *contract.COMMAND_FILES.values()]:
        schema = contract.load(name)
        jsonschema.Draft7Validator.check_schema(schema)
        assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"


def test_payload_schema_names_match_their_files():
    for name, file in contract.SCHEMA_FILES.items():
        schema = contract.load(file)
        assert schema["properties"]["schema"] == {"const": name} and schema["title"] == name
        assert {"schema", "id", "seq", "device"} <= set(schema["required"]), file


def test_command_schemas_are_generated_from_the_code():
    """cmd-*.schema.json are what the device's pydantic models accept (regenerate with
    ``python -c 'from edge_agent.commands import command_schemas; ...'`` if this fails)."""
    for name, schema in command_schemas().items():
        assert contract.load(name) == json.loads(json.dumps(schema)), name


def test_asyncapi_document_is_valid_and_complete():
    document = yaml.safe_load(contract.path(contract.ASYNCAPI_FILE).read_text())
    official = json.loads(gzip.open(HERE / "data" / "asyncapi-3.0.0.schema.json.gz").read())
    errors = list(jsonschema.Draft7Validator(official).iter_errors(document))
    assert not errors, [e.message[:200] for e in errors]
    # Every payload reference resolves to a schema file shipped in the package, and every
    # schema file is described.
    refs = {m["payload"]["schema"]["$ref"].removeprefix("./") for m in document["components"]["messages"].values()}
    shipped = set(contract.SCHEMA_FILES.values()) | set(contract.COMMAND_FILES.values())
    assert refs == shipped
    for ref in refs:
        assert contract.path(ref).is_file()
    addresses = {c["address"].split("{device}/")[1] for c in document["channels"].values()}
    assert addresses == {"status", "rollup/{granularity}", "health", "event", "cmd/{command}", "cmd/{command}/result"}
    assert document["channels"]["command"]["parameters"]["command"]["enum"] == sorted(
        contract.COMMAND_FILES, key=list(contract.COMMAND_FILES).index)


def test_schemas_are_package_data():
    files = {p.name for p in resources.files("edge_agent.contract").iterdir()}
    assert {"asyncapi.yaml", *contract.SCHEMA_FILES.values(), *contract.COMMAND_FILES.values()} <= files


@pytest.mark.parametrize("broken", [
    {"granularity": "week"},
    {"lines": {"door": {"in": -1, "out": 0}}},
    {"seq": 0},
    {"id": "no-slashes"},
])
def test_rollup_schema_rejects_broken_payloads(broken):
    good = {"schema": "smartstore.rollup/1", "id": "o/s/d/cam/minute/2026-11-25T10:00:00.000Z", "seq": 1, "org": "o",
            "store": "s", "device": "d", "camera": "cam", "granularity": "minute",
            "start": "2026-11-25T10:00:00.000Z", "end": "2026-11-25T10:01:00.000Z", "frames": 5,
            "lines": {"door": {"in": 1, "out": 0}}, "zones": {"anything": "a feature's section"}}
    contract.validator_for(good).validate(good)
    with pytest.raises(jsonschema.ValidationError):
        contract.validator_for(good).validate({**good, **broken})
    with pytest.raises(jsonschema.ValidationError):  # hour/day must say their time zone
        contract.validator_for(good).validate({**good, "granularity": "hour"})
