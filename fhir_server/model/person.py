"""The consortium record's vocabulary: how a hub-owned master Patient is marked, for every layer.

The interactions layer writes masters; adapters must tell them apart from member records (a PACS
C-FIND lists member records, an A40 merges member records), and they may import the model, not the
interactions: so the marker lives here.
"""

from __future__ import annotations

from typing import Any

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
ONLY_MASTERS = ("_tag", f"{MASTER_TAG_SYSTEM}|{MASTER_TAG_CODE}")
"""The search parameter that keeps masters only."""


def not_same_person(master: Any) -> set[str]:
    """Ids of the records split from `master` (Patient JSON) by an operator."""
    found = set()
    for ext in (master.get("extension") if isinstance(master, dict) else None) or []:
        if isinstance(ext, dict) and ext.get("url") == NOT_SAME_PERSON_URL:
            ref = (ext.get("valueReference") or {}).get("reference", "")
            if isinstance(ref, str) and ref.startswith("Patient/"):
                found.add(ref[8:])
    return found


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
