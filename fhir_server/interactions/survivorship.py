"""Survivorship: what a person's master Patient says, computed from the member records linked to it.

The rule (pure; the same sources give the same master, whatever order they were written in):
- **identifiers**: the union of every source's identifiers (system and value), resident IDs
  (居民身份证) first; a resident ID stays on the master as long as any source carries it;
- **demographics** (name, telecom, gender, birthDate, address, maritalStatus, deceased[x],
  multipleBirth[x], communication): each element from the most recently updated source that has a
  non-empty value for it (`meta.lastUpdated`, then id, so ties are stable). One member's sparse record
  never blanks what another member knows. (A record the hub links to a master gets a new version, and
  so a later `lastUpdated`, without new data from its member: the join itself ranks it by its member's
  last write, later recomputations by that link write. Per-element times come with HL7 field-level
  updates.);
- **active**: true while any source is active (a record merged away is not);
- **link**: `seealso` to every source, in id order; the sources carry `refer` back (`person.py`);
- **extension** `mpi-not-same-person`: each record an operator split from the person, so that no
  certain match links it again.
Member-specific elements (generalPractitioner, managingOrganization, contact) stay on the sources.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from fhir_server.model.person import MASTER_TAG, NOT_SAME_PERSON_URL
from terminology import cn_resident_id

JsonObject = dict[str, Any]

SURVIVING = (
    ("name",),
    ("telecom",),
    ("gender",),
    ("birthDate",),
    ("address",),
    ("maritalStatus",),
    ("deceasedBoolean", "deceasedDateTime"),
    ("multipleBirthBoolean", "multipleBirthInteger"),
    ("communication",),
)
"""Element groups taken whole from one source (a choice type's alternatives are one group)."""


def _recency(source: JsonObject) -> tuple[str, str]:
    meta = source.get("meta") or {}
    return (str(meta.get("lastUpdated", "")), str(source.get("id", "")))


def _present(value: Any) -> bool:
    return value not in (None, "", [], {})


def master_body(master_id: str, sources: Sequence[JsonObject], not_same: Sequence[str] = ()) -> JsonObject:
    """The master Patient `master_id` for `sources` (current member records, at least one) and the
    records an operator split from it (`not_same`, kept as extensions)."""
    newest_first = sorted(sources, key=_recency, reverse=True)
    master: JsonObject = {
        "resourceType": "Patient",
        "id": master_id,
        "meta": {"tag": [dict(MASTER_TAG)]},
    }
    if not_same:
        master["extension"] = [
            {"url": NOT_SAME_PERSON_URL, "valueReference": {"reference": f"Patient/{rid}"}}
            for rid in sorted(set(not_same))
        ]
    identifiers = _identifiers(newest_first)
    if identifiers:
        master["identifier"] = identifiers
    master["active"] = any(s.get("active", True) is not False for s in sources)
    for group in SURVIVING:
        for source in newest_first:
            if any(_present(source.get(key)) for key in group):
                for key in group:
                    if _present(source.get(key)):
                        master[key] = copy.deepcopy(source[key])
                break
    master["link"] = [
        {"other": {"reference": f"Patient/{sid}"}, "type": "seealso"}
        for sid in sorted({str(s["id"]) for s in sources})
    ]
    return master


def _identifiers(newest_first: Sequence[JsonObject]) -> list[JsonObject]:
    seen: set[tuple[str, str]] = set()
    residents: list[JsonObject] = []
    others: list[JsonObject] = []
    for source in newest_first:
        for ident in source.get("identifier") or []:
            if not isinstance(ident, dict):
                continue
            system, value = str(ident.get("system", "")), str(ident.get("value", ""))
            if system == cn_resident_id.SYSTEM:
                value = cn_resident_id.normalise(value)
            if not value or (system, value) in seen:
                continue
            seen.add((system, value))
            (residents if system == cn_resident_id.SYSTEM else others).append(copy.deepcopy(ident))
    return residents + others
