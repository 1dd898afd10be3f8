"""Compartment definitions (R4 core CompartmentDefinition resources): which parameters put a resource
of each type into, say, a Patient's compartment. Loaded from the core package, cached."""

from __future__ import annotations

from functools import cache

from fhir_server.model.definitions import CORE_PACKAGE, iter_package


@cache
def compartment_params(compartment: str) -> dict[str, tuple[str, ...]]:
    """{resource type: parameter codes} for compartment type `compartment` ('Patient', 'Encounter', ...)."""
    for cd in iter_package(CORE_PACKAGE, "CompartmentDefinition"):
        if cd.get("code") == compartment:
            return {
                r["code"]: tuple(p for p in r.get("param", []) if p != "{def}")
                for r in cd.get("resource", [])
                if r.get("param")
            }
    return {}
