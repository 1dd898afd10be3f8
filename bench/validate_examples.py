"""Run every official R4 example through the validator and print what is accepted and why the rest is not.

With --oracles, also list where the official R4 JSON schema and the R4B models disagree with the
validator (schema: Bundles skipped, its resource oneOf is very slow; R4B: parse failures are expected
where R4B changed R4 types).

Run: .venv/bin/python bench/validate_examples.py [--oracles]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fhir_server.model.definitions import CORE_PACKAGE, JSON_SCHEMA, iter_package
from profiles.report import validate_all
from profiles.validator import build_validator, is_error

EXAMPLES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hl7.fhir.r4.examples-4.0.1.tgz"


def oracles(validator: Any, instances: list[dict[str, Any]]) -> None:
    import jsonschema
    from fhir.resources.R4B import get_fhir_model_class

    schema = json.loads(JSON_SCHEMA.read_text(encoding="utf-8"))
    schema.pop("oneOf", None)
    cls = jsonschema.validators.validator_for(schema)
    compiled: dict[str, Any] = {}
    schema_only: list[str] = []
    r4b_failures: Counter[str] = Counter()
    for resource in instances:
        rt = resource["resourceType"]
        ours = any(is_error(i) for i in validator.validate(resource))
        if rt != "Bundle":
            if rt not in compiled:
                compiled[rt] = cls({**schema, "$ref": f"#/definitions/{rt}"})
            first = next(iter(compiled[rt].iter_errors(resource)), None)
            if first is not None and not ours:
                schema_only.append(f"{rt}/{resource.get('id')}: {first.message[:120]}")
        try:
            get_fhir_model_class(rt).model_validate(resource)
        except Exception as exc:  # R4B is only a comparison here
            if not ours:
                r4b_failures[rt] += 1
                del exc
    print(f"\nJSON schema refuses but the validator accepts ({len(schema_only)}):")
    print("\n".join(f"  {line}" for line in schema_only))
    print(f"\nR4B models refuse but the validator accepts: {sum(r4b_failures.values())}")
    print("  " + ", ".join(f"{rt} {n}" for rt, n in r4b_failures.most_common()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--oracles", action="store_true")
    args = parser.parse_args()
    validator = build_validator()
    core = {(r["resourceType"], r.get("id")) for r in iter_package(CORE_PACKAGE)}
    everything = list(iter_package(EXAMPLES))
    instances = [r for r in everything if (r["resourceType"], r.get("id")) not in core]
    definitions = [r for r in everything if (r["resourceType"], r.get("id")) in core]
    for title, resources in (("instance examples", instances), ("definitions in the package", definitions)):
        started = time.perf_counter()
        report = validate_all(validator, resources)
        elapsed = time.perf_counter() - started
        print(f"\nR4 {title}: {elapsed:.2f} s")
        print("\n".join(report.lines()))
    if args.oracles:
        oracles(validator, instances)


if __name__ == "__main__":
    main()
