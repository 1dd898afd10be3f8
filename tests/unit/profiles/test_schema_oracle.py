"""The official R4 JSON schema as an oracle: whatever it refuses, the validator must refuse too.

Valid official examples are broken one place at a time (an unknown property in a nested object, a
string primitive turned into a number, a number or boolean turned into a string); for each mutation
the schema refuses, the validator must report an error at that very element.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fhir_server.model.definitions import JSON_SCHEMA, iter_package
from profiles.validator import Validator, is_error

EXAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7.fhir.r4.examples-4.0.1.tgz"
TYPES = ["Patient", "Observation", "ServiceRequest", "DiagnosticReport", "ImagingStudy", "Encounter", "Task"]
PER_TYPE = 3
PER_RESOURCE = 30

Step = str | int


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(JSON_SCHEMA.read_text(encoding="utf-8"))
    data.pop("oneOf", None)
    return data


def locations(value: Any, path: tuple[Step, ...] = ()) -> Iterator[tuple[tuple[Step, ...], Any]]:
    yield path, value
    if isinstance(value, dict):
        for key, child in value.items():
            if key != "resourceType":
                yield from locations(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from locations(child, (*path, index))


def fhirpath(resource_type: str, path: tuple[Step, ...]) -> str:
    out = resource_type
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else f".{step}"
    return out


def mutations(resource: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(expected error path, mutated copy)."""
    for path, value in locations(resource):
        if path and path[-1] == "div" or any(step == "contained" for step in path):
            continue
        if isinstance(value, dict) and path:
            yield (
                fhirpath(resource["resourceType"], (*path, "zzUnknown")),
                _set(resource, path, {**value, "zzUnknown": 1}),
            )
        elif isinstance(value, str) and path:
            yield fhirpath(resource["resourceType"], path), _set(resource, path, 12345)
        elif isinstance(value, bool | int | float) and path:
            yield fhirpath(resource["resourceType"], path), _set(resource, path, str(value))


def _set(resource: dict[str, Any], path: tuple[Step, ...], value: Any) -> dict[str, Any]:
    copied = copy.deepcopy(resource)
    target: Any = copied
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copied


@pytest.mark.parametrize("resource_type", TYPES)
def test_schema_refusals_are_refused_at_the_same_element(
    validator: Validator, schema: dict[str, Any], resource_type: str
) -> None:
    check = jsonschema.validators.validator_for(schema)({**schema, "$ref": f"#/definitions/{resource_type}"})
    examples = [
        r
        for r in iter_package(EXAMPLES, resource_type)
        if not any(is_error(i) for i in validator.validate(r))
    ]
    compared = 0
    for resource in examples[:PER_TYPE]:
        assert check.is_valid(resource)
        for expected_path, mutated in list(mutations(resource))[:PER_RESOURCE]:
            if check.is_valid(mutated):
                continue
            compared += 1
            found = [i.expression[0] for i in validator.validate(mutated) if is_error(i) and i.expression]
            assert expected_path in found, (expected_path, found)
    assert compared >= PER_TYPE * 10
