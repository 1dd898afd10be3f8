"""Validation throughput: resources/s per resource type for the compiled validator, and for comparison
the official R4 JSON schema (per-type jsonschema validators sharing one schema) and the R4B models.

Run: .venv/bin/python bench/validate_bench.py [--seconds 1.0] [--no-oracles]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fhir_server.model.definitions import JSON_SCHEMA, iter_package
from profiles.validator import build_validator

EXAMPLES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hl7.fhir.r4.examples-4.0.1.tgz"
SAMPLES = {
    "Patient": "example",
    "Observation": "example",
    "Observation(vitals)": "blood-pressure",
    "DiagnosticReport": "ultrasound",
    "ServiceRequest": "example",
    "ImagingStudy": "example",
    "Encounter": "example",
    "Bundle(transaction)": "bundle-transaction",
}


# What the HL7 v2 adapter typically writes: small, no narrative.
TYPICAL: dict[str, dict[str, Any]] = {
    "Patient(typical)": {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.2", "value": "110101199003074514"}],
        "name": [{"family": "张", "given": ["三"]}],
        "gender": "male",
        "birthDate": "1990-03-07",
        "telecom": [{"system": "phone", "value": "13800000000"}],
        "address": [{"city": "北京", "district": "东城区"}],
        "managingOrganization": {"reference": "Organization/county-hospital"},
    },
    "Observation(typical)": {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-05-01T08:30:00+08:00",
        "valueQuantity": {"value": 135, "unit": "g/L", "system": "http://unitsofmeasure.org", "code": "g/L"},
        "referenceRange": [{"low": {"value": 120, "unit": "g/L"}, "high": {"value": 160, "unit": "g/L"}}],
    },
}


def load_samples() -> dict[str, dict[str, Any]]:
    wanted = {(label.split("(")[0], ident): label for label, ident in SAMPLES.items()}
    found: dict[str, dict[str, Any]] = dict(TYPICAL)
    for resource in iter_package(EXAMPLES):
        label = wanted.get((resource["resourceType"], resource.get("id", "")))
        if label:
            found[label] = resource
    return found


def rate(func: Callable[[], object], seconds: float) -> float:
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(20):
            func()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def schema_validators() -> Callable[[dict[str, Any]], int]:
    import jsonschema

    schema = json.loads(JSON_SCHEMA.read_text(encoding="utf-8"))
    schema.pop("oneOf", None)
    schema.pop("discriminator", None)
    cls = jsonschema.validators.validator_for(schema)
    cache: dict[str, Any] = {}

    def validate(resource: dict[str, Any]) -> int:
        rt = resource["resourceType"]
        if rt not in cache:
            cache[rt] = cls({**schema, "$ref": f"#/definitions/{rt}"})
        return sum(1 for _ in cache[rt].iter_errors(resource))

    return validate


def r4b_parse(resource: dict[str, Any]) -> object:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--no-oracles", action="store_true", help="skip the JSON schema and R4B comparison")
    args = parser.parse_args()

    started = time.perf_counter()
    validator = build_validator()
    print(f"build_validator(): {time.perf_counter() - started:.2f} s")
    samples = load_samples()
    schema = None if args.no_oracles else schema_validators()
    header = f"{'resource':<22}{'bytes':>8}{'validator/s':>14}{'µs each':>10}"
    if schema:
        header += f"{'jsonschema/s':>14}{'R4B parse/s':>13}"
    print(header)
    for label, resource in samples.items():
        size = len(json.dumps(resource))
        assert not [i for i in validator.validate(resource) if i.severity == "error"], label
        ours = rate(lambda r=resource: validator.validate(r), args.seconds)  # type: ignore[misc]
        line = f"{label:<22}{size:>8}{ours:>14,.0f}{1e6 / ours:>10.1f}"
        if schema:
            schema(resource)  # compile outside the timing
            theirs = rate(lambda r=resource: schema(r), args.seconds)  # type: ignore[misc]
            try:
                r4b = f"{rate(lambda r=resource: r4b_parse(r), args.seconds):>13,.0f}"  # type: ignore[misc]
            except Exception as exc:  # R4B disagrees with R4 on some content: show it, don't stop
                r4b = f"{'fails: ' + type(exc).__name__:>13}"
            line += f"{theirs:>14,.0f}{r4b}"
        print(line)


if __name__ == "__main__":
    main()
