"""The consortium record's vocabulary: how a hub-owned master Patient is marked, for every layer.

The interactions layer writes masters; adapters must tell them apart from member records (a PACS
C-FIND lists member records, an A40 merges member records), and they may import the model, not the
interactions: so the marker lives here.
"""

from __future__ import annotations

from typing import Any

from fhir_server.model.references import RELATIVE_REFERENCE

MASTER_TAG_SYSTEM = "urn:yilian:mpi"
MASTER_TAG_CODE = "master"
MASTER_TAG = {
    "system": MASTER_TAG_SYSTEM,
    "code": MASTER_TAG_CODE,
    "display": "Master Patient of one person, kept by the YiLian hub",
}
NOT_SAME_PERSON_URL = "http://yilian.org.cn/fhir/StructureDefinition/mpi-not-same-person"
"""Extension on a master: a record an operator split from this person (`$mpi-split`), which no
certain match may link to it again. R4's Patient.link has no "not the same person" type."""
NOT_MASTER = ("_tag:not", f"{MASTER_TAG_SYSTEM}|{MASTER_TAG_CODE}")
"""The search parameter that leaves masters out: member records only."""


def listed(resource: Any, key: str) -> list[Any]:
    """`resource[key]` when it is a list, else nothing: Patient JSON read here may not be validated yet
    (a body placed before validation, a `$match` probe), and a malformed element counts as absent."""
    value = resource.get(key) if isinstance(resource, dict) else None
    return value if isinstance(value, list) else []


def patient_id(reference: Any) -> str | None:
    """The id a Reference (`{"reference": "Patient/x"}`) names, for a current Patient on this server."""
    ref = reference.get("reference") if isinstance(reference, dict) else None
    found = RELATIVE_REFERENCE.match(ref) if isinstance(ref, str) else None
    if found is None or found.group(1) != "Patient" or found.group(3) is not None:
        return None
    return found.group(2)


def referred(patient: Any) -> list[str]:
    """Ids of the Patients this one's `refer` links name (a member's record: its master)."""
    return [
        rid
        for link in listed(patient, "link")
        if isinstance(link, dict)
        and link.get("type") == "refer"
        and (rid := patient_id(link.get("other"))) is not None
    ]


def not_same_person(master: Any) -> set[str]:
    """Ids of the records split from `master` (Patient JSON) by an operator."""
    return {
        rid
        for ext in listed(master, "extension")
        if isinstance(ext, dict)
        and ext.get("url") == NOT_SAME_PERSON_URL
        and (rid := patient_id(ext.get("valueReference"))) is not None
    }


def is_master(resource: Any) -> bool:
    """Whether `resource` (Patient JSON) carries the master tag."""
    if not isinstance(resource, dict):
        return False
    meta = resource.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    if not isinstance(tags, list):
        return False
    return any(
        isinstance(t, dict) and t.get("system") == MASTER_TAG_SYSTEM and t.get("code") == MASTER_TAG_CODE
        for t in tags
    )


def replaced_by(patient: Any) -> str | None:
    """The id of the Patient a merge replaced this one by (`link replaced-by`), or None."""
    for link in listed(patient, "link"):
        if isinstance(link, dict) and link.get("type") == "replaced-by":
            rid = patient_id(link.get("other"))
            if rid is not None:
                return rid
    return None
