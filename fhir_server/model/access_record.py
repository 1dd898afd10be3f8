"""One access to the hub's data as an edge saw it, before it becomes an AuditEvent.

In the model layer because every edge records accesses: the HTTP access log (interactions' audit
trail), and the HL7 and DICOM adapters through their Sink, which may import the model only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DCM = "http://dicom.nema.org/resources/ontology/DCM"
MEMBER_SYSTEM = "urn:yilian:member"
MEMBER_VIEW_SCOPE_KEY = "yilian.member_view"
"""The member code whose view of patient data a request gets, in the ASGI scope (set by the HTTP
edge's access policy for member and reader clients): the DICOMweb routes, which may import only the
model, pass it to their Sink's searches, so a member's QIDO and WADO see its persons' studies only."""
"""Identifier.system of consortium members (their Organization codes; `adapters.identity` says the same)."""
IMPORT = (DCM, "110107", "Import")
"""A member system's data received (an HL7 message applied, DICOM instances stored)."""
EXPORT = (DCM, "110106", "Export")
"""The hub's data sent to a member system (an outbound ORU, C-MOVE/C-GET retrieval)."""
QUERY = (DCM, "110112", "Query")
"""A member system searched (DICOM C-FIND)."""


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One access as seen at an edge: what was asked, by whom, and how it ended."""

    interaction: str  # restful-interaction code (read, search-type, create, ...), or the edge's verb
    recorded: str  # instant
    status: int  # HTTP status (or the equivalent for non-HTTP edges: 200 done, 4xx refused)
    client_address: str | None
    client_name: str | None  # e.g. User-Agent, MLLP sending facility, calling AE title
    resource_type: str | None = None
    resource_id: str | None = None
    query: str | None = None
    operation: str | None = None  # `$match`, `$mpi-split`, ...: which operation an "operation" ran
    event_type: tuple[str, str, str] | None = None
    """(system, code, display) of AuditEvent.type for a non-REST edge (`IMPORT`, ...); None: REST."""
    subtype: tuple[str, str] | None = None
    """(system, code) of AuditEvent.subtype for a non-REST edge (an HL7 trigger event, a DIMSE)."""
    action: str | None = None  # C R U D E, when the edge's verb is not a restful interaction
    entities: tuple[dict[str, Any], ...] = field(default=())
    """More `AuditEvent.entity.what` References (a message's identifier, its Provenance, patients)."""
    client_member: str | None = None
    """The member the client belongs to (its code under `MEMBER_SYSTEM`): `agent.who.identifier`, so a
    member can search the trail of its own clients' accesses."""
    break_glass: str | None = None
    """The reason of a break-glass read (emergency treatment beyond the care relationships)."""
