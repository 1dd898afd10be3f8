"""The CapabilityStatement, generated from what the server is wired with (never hand-written).

Resource types come from the definitions, search parameters from the live search registry, operations
from the operations table the API registered, so the statement cannot drift from the behaviour.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fhir_server import __version__
from fhir_server.interactions.service import FhirService
from fhir_server.model.definitions import FHIR_VERSION

JsonObject = dict[str, Any]

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")


@dataclass(frozen=True)
class OperationInfo:
    name: str  # without the $
    definition: str  # canonical URL of its OperationDefinition
    resource_types: tuple[str, ...] = ()  # empty: system level; ("*",): every resource type


def _search_params(service: FhirService, resource_type: str) -> list[JsonObject]:
    out: list[JsonObject] = []
    for param in service.registry.params_for(resource_type):
        item: JsonObject = {"name": param.name, "type": param.type}
        if getattr(param, "url", None):
            item["definition"] = param.url
        if getattr(param, "description", None):
            item["documentation"] = param.description
        out.append(item)
    return out


def capability_statement(
    service: FhirService,
    *,
    base_url: str,
    operations: Iterable[OperationInfo],
    instant: str,
    security: JsonObject | None = None,
) -> JsonObject:
    """`security`: `rest.security` as the HTTP edge configures it (bearer tokens, SMART)."""
    ops = list(operations)
    resources: list[JsonObject] = []
    for resource_type in sorted(service.resource_types):
        entry: JsonObject = {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS] + [{"code": "search-type"}],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
        }
        entry["searchParam"] = _search_params(service, resource_type)
        entry["searchInclude"] = ["*"]
        type_ops = [o for o in ops if resource_type in o.resource_types or "*" in o.resource_types]
        if type_ops:
            entry["operation"] = [{"name": o.name, "definition": o.definition} for o in type_ops]
        resources.append(entry)
    rest: JsonObject = {
        "mode": "server",
        "resource": resources,
        "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS] + [{"code": "search-system"}],
    }
    if security is not None:
        rest["security"] = security
    system_ops = [o for o in ops if not o.resource_types]
    if system_ops:
        rest["operation"] = [{"name": o.name, "definition": o.definition} for o in system_ops]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant,
        "publisher": "YiLian (医联) FHIR Hub",
        "kind": "instance",
        "software": {"name": "YiLian FHIR Hub", "version": __version__},
        "implementation": {"description": "YiLian consortium FHIR hub", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [rest],
    }
