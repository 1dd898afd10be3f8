"""Access to the official FHIR R4 (4.0.1) definition files shipped in `fhir_server/definitions/`.

Sources (HL7, CC0), copied from ../shared/fhir-r4/:
- `hl7.fhir.r4.core-4.0.1.tgz`: the core package (StructureDefinitions, ValueSets, CodeSystems, ...).
- `search-parameters.json`: the spec's search-parameters Bundle.
- `fhir.schema.json`: the R4 JSON schema.
Loading is explicit (call the functions, cache the result where you build things), never at import.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

JsonObject = dict[str, Any]

DEFINITIONS_DIR = Path(__file__).resolve().parent.parent / "definitions"
CORE_PACKAGE = DEFINITIONS_DIR / "hl7.fhir.r4.core-4.0.1.tgz"
SEARCH_PARAMETERS = DEFINITIONS_DIR / "search-parameters.json"
JSON_SCHEMA = DEFINITIONS_DIR / "fhir.schema.json"
FHIR_VERSION = "4.0.1"


def iter_package(path: Path, resource_type: str | None = None) -> Iterator[JsonObject]:
    """Yield each JSON resource of an npm-style FHIR package (optionally one resource type)."""
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            name = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or not name.endswith(".json") or name.startswith("."):
                continue
            if resource_type and not name.startswith(resource_type + "-"):
                continue
            fh = tar.extractfile(member)
            if fh is None:
                continue
            data = json.loads(fh.read())
            if isinstance(data, dict) and "resourceType" in data:
                if resource_type and data["resourceType"] != resource_type:
                    continue
                yield data


@cache
def core_structure_definitions() -> dict[str, JsonObject]:
    """StructureDefinitions of the core package keyed by `type` for base resources and datatypes."""
    out: dict[str, JsonObject] = {}
    for sd in iter_package(CORE_PACKAGE, "StructureDefinition"):
        if sd.get("derivation") == "specialization" or sd.get("abstract") is True or "derivation" not in sd:
            out.setdefault(sd["id"], sd)
    return out


@cache
def resource_types() -> frozenset[str]:
    """Every concrete R4 resource type (145 of them)."""
    return frozenset(
        sd["type"]
        for sd in core_structure_definitions().values()
        if sd.get("kind") == "resource"
        and not sd.get("abstract")
        and sd.get("derivation") == "specialization"
    )


@cache
def search_parameter_bundle() -> JsonObject:
    data: JsonObject = json.loads(SEARCH_PARAMETERS.read_text(encoding="utf-8"))
    return data
