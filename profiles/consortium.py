"""Consortium rules every write obeys, whatever edge it came through (REST, HL7, DICOM).

Why a rule of its own and not a StructureDefinition: a 居民身份证 number with a wrong check character
is structurally a fine `Identifier`, yet it is the one value the consortium links people's records by
(GB 11643). A mistyped number would join two people across members, so it is refused on every edge the
same way: HL7 answers AE (`adapters/hl7v2/segments/pid.py`), REST and `$validate` get an error issue
naming `Patient.identifier[i].value`.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import Issue
from terminology import cn_resident_id

PERSON_TYPES = frozenset({"Patient", "RelatedPerson", "Practitioner", "Person"})
"""Resources whose `identifier` may hold a resident ID (an array in each of them)."""


def resident_id_issues(resource: Any) -> list[Issue]:
    """An error issue for each resident ID in `resource.identifier` that GB 11643 does not accept."""
    if not isinstance(resource, dict):
        return []
    rtype = resource.get("resourceType")
    identifiers = resource.get("identifier")
    if rtype not in PERSON_TYPES or not isinstance(identifiers, list):
        return []
    issues: list[Issue] = []
    for i, ident in enumerate(identifiers):
        if not isinstance(ident, dict) or ident.get("system") != cn_resident_id.SYSTEM:
            continue
        value = ident.get("value")
        if not isinstance(value, str):
            continue  # a missing or non-string value is the structural checker's to report
        problem = cn_resident_id.problem(value)
        if problem:
            issues.append(
                Issue(
                    "error",
                    "value",
                    f"{problem} (GB 11643 居民身份证, system {cn_resident_id.SYSTEM})",
                    (f"{rtype}.identifier[{i}].value",),
                )
            )
    return issues
