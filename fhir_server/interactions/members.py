"""Which consortium member an Organization is: its `urn:yilian:member` identifier, or its `partOf`
ancestor's (a department's Organization names its hospital). Read inside a write section, once per
section (care relationships, `care_team.py`; what a member may write, `member_view.py`)."""

from __future__ import annotations

from typing import Any

from fhir_server.model.access_record import MEMBER_SYSTEM
from fhir_server.model.person import listed
from fhir_server.storage.protocol import WriteTransaction

MAX_PART_OF = 5
"""Organization.partOf steps walked up to a member."""


def organization(reference: dict[str, Any]) -> str | None:
    """`Organization/<id>`, or `urn:yilian:member|<code>` for a logical reference to a member."""
    ref = reference.get("reference")
    if isinstance(ref, str) and ref.startswith("Organization/") and "/" not in ref[len("Organization/") :]:
        return ref
    identifier = reference.get("identifier")
    if isinstance(identifier, dict) and identifier.get("system") == MEMBER_SYSTEM:
        value = identifier.get("value")
        if isinstance(value, str) and value:
            return f"{MEMBER_SYSTEM}|{value}"
    return None


class MemberCodes:
    """Organization → member code (its `urn:yilian:member` identifier, or its `partOf` ancestor's),
    read once per section."""

    def __init__(self, tx: WriteTransaction) -> None:
        self.tx = tx
        self.known: dict[str, str | None] = {}

    async def code(self, organization: str) -> str | None:
        if organization.startswith(MEMBER_SYSTEM + "|"):
            return organization.split("|", 1)[1]
        if organization not in self.known:
            self.known[organization] = await self._lookup(organization.removeprefix("Organization/"))
        return self.known[organization]

    async def _lookup(self, org_id: str) -> str | None:
        for _ in range(MAX_PART_OF):
            found = await self.tx.current("Organization", org_id)
            body = found.body if found is not None else None
            if body is None:
                return None
            for identifier in listed(body, "identifier"):
                if isinstance(identifier, dict) and identifier.get("system") == MEMBER_SYSTEM:
                    value = identifier.get("value")
                    if isinstance(value, str) and value:
                        return value
            parent = (body.get("partOf") or {}).get("reference")
            if not isinstance(parent, str) or not parent.startswith("Organization/"):
                return None
            org_id = parent[len("Organization/") :]
        return None
