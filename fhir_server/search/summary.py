"""_summary and _elements: trim resources to the elements asked for (pure)."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from fhir_server.model.definitions import core_structure_definitions

JsonObject = dict[str, Any]
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def _top_elements(resource_type: str) -> tuple[frozenset[str], frozenset[str]]:
    """(summary element names, mandatory element names) at the top level of a resource type, with
    choice elements listed by their prefix (`value` for value[x])."""
    sd = core_structure_definitions().get(resource_type, {})
    summary, mandatory = set(), set()
    for el in sd.get("snapshot", {}).get("element", []):
        parts = el["path"].split(".")
        if len(parts) != 2:
            continue
        name = parts[1].removesuffix("[x]")
        if el.get("isSummary"):
            summary.add(name)
        if el.get("min", 0) > 0:
            mandatory.add(name)
    return frozenset(summary), frozenset(mandatory)


def _keep(resource: JsonObject, wanted: set[str]) -> JsonObject:
    out: JsonObject = {}
    for key, value in resource.items():
        base = key
        for name in wanted:
            if key.startswith(name) and (key == name or key[len(name) : len(name) + 1].isupper()):
                base = name
                break
        if key in _ALWAYS or base in wanted:
            out[key] = value
    return out


def _mark(resource: JsonObject) -> JsonObject:
    meta = copy.deepcopy(resource.get("meta") or {})
    tags = meta.setdefault("tag", [])
    if SUBSETTED not in tags:
        tags.append(dict(SUBSETTED))
    resource["meta"] = meta
    return resource


def apply_summary(resource: JsonObject, summary: str | None, elements: tuple[str, ...]) -> JsonObject:
    """The resource as `_summary` / `_elements` ask; unchanged when neither applies."""
    rtype = resource.get("resourceType", "")
    if summary in ("true", "text", "data"):
        summ, mandatory = _top_elements(rtype)
        if summary == "true":
            return _mark(_keep(resource, set(summ)))
        if summary == "text":
            return _mark(_keep(resource, {"text", *mandatory}))
        return _mark({k: v for k, v in resource.items() if k != "text"})
    if elements:
        _summ, mandatory = _top_elements(rtype)
        return _mark(_keep(resource, {*elements, *mandatory}))
    return resource
