"""The care-relationship CareTeam's vocabulary: how the hub marks, names and reads the CareTeam that says
which consortium members may see a Patient record (kept by `interactions/care_team.py`, read by
`interactions/member_view.py`, refused to clients by `interactions/write.py`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from fhir_server.errors import Forbidden
from fhir_server.model.person import listed

CARE_SYSTEM = "urn:yilian:care"
CARE_TAG = {
    "system": CARE_SYSTEM,
    "code": "consortium",
    "display": "Members with a care relationship to this Patient record, kept by the YiLian hub",
}
ACCESS_SYSTEM = "urn:yilian:care:member"
"""`meta.security` labels of a care-relationship CareTeam: one per member that sees the record (code =
the member's code). The participants explain why; the labels are what the member filter searches
(`_security`), and no client may write them, so a client's own CareTeam can never grant access."""
CARE_TEAM_PREFIX = "care-"


def care_team_id(patient_id: str) -> str:
    """The id of Patient `patient_id`'s care-relationship CareTeam: derived, so a visibility check is one
    read by id. Ids are at most 64 characters; a long Patient id is hashed to fit."""
    candidate = CARE_TEAM_PREFIX + patient_id
    if len(candidate) <= 64:
        return candidate
    return CARE_TEAM_PREFIX + hashlib.sha256(patient_id.encode()).hexdigest()[:59]


def _labels(resource: Any) -> list[dict[str, Any]]:
    meta = resource.get("meta") if isinstance(resource, dict) else None
    return [c for key in ("tag", "security") for c in listed(meta, key) if isinstance(c, dict)]


def is_care_team(resource: Any) -> bool:
    """Whether `resource` carries the hub's care-relationship tag or access labels."""
    return any(c.get("system") in (CARE_SYSTEM, ACCESS_SYSTEM) for c in _labels(resource))


def member_codes(care_team: Any) -> set[str]:
    """The members a care-relationship CareTeam lets see its record (its `ACCESS_SYSTEM` labels)."""
    return {
        c["code"]
        for c in _labels(care_team)
        if c.get("system") == ACCESS_SYSTEM and isinstance(c.get("code"), str)
    }


def access_labels(codes: list[str]) -> list[dict[str, str]]:
    return [{"system": ACCESS_SYSTEM, "code": code} for code in codes]


def refuse_client_write(resource_id: str, current_body: Any, body: Any) -> None:
    """The care-relationship CareTeams are the hub's: a client reads them, never writes or deletes one
    (nor takes one's id, nor tags its own CareTeam as one)."""
    if resource_id.startswith(CARE_TEAM_PREFIX) or is_care_team(current_body) or is_care_team(body):
        raise Forbidden(
            "Care-relationship CareTeams (meta.tag urn:yilian:care|consortium, security labels "
            "urn:yilian:care:member, ids starting 'care-') are kept by the hub from registrations, "
            "referrals and Consents; write those instead",
            expression="CareTeam",
        )
