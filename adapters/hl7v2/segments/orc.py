"""ORC (+ its OBR) → ServiceRequest (v2-to-FHIR IG ORC[ServiceRequest] and OBR[ServiceRequest] maps).

Order numbers are member-scoped: the placer number's namespace is EI.2 (else the facility that placed the
order: the sender of an ORM/OML/REF, the receiver of an ORU), so an order placed at a township centre and
resulted by the county LIS is one ServiceRequest. The requester is a PractitionerRole (ordering provider
ORC-12 at the ordering facility ORC-21/MSH-4) or, without a provider, the ordering Organization itself;
the performer is the receiving facility (MSH-6). Those two organizations are what outbound result
delivery and referral tracking need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from adapters.hl7v2 import datatypes as dtp
from adapters.hl7v2.parse import Segment
from adapters.hl7v2.tables import lookup
from adapters.hl7v2.transaction import TransactionBuilder, TranslationError, member_system

JsonObject = dict[str, Any]
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@dataclass(frozen=True)
class OrderIds:
    placer: tuple[str, str] | None  # (system, value)
    filler: tuple[str, str] | None

    def identifiers(self) -> list[JsonObject]:
        out = []
        for ids, code in ((self.placer, "PLAC"), (self.filler, "FILL")):
            if ids:
                out.append(
                    {
                        "type": {"coding": [{"system": _V2_0203, "code": code}]},
                        "system": ids[0],
                        "value": ids[1],
                    }
                )
        return out

    def key(self) -> tuple[str, str]:
        key = self.placer or self.filler
        assert key is not None
        return key


def order_ids(
    orc: Segment | None, obr: Segment | None, placer_facility: str, filler_facility: str
) -> OrderIds:
    """Placer (ORC-2/OBR-2) and filler (ORC-3/OBR-3) numbers as member-scoped identifiers."""

    def pick(n_orc: int, n_obr: int, default_facility: str, kind: str) -> tuple[str, str] | None:
        for seg, n in ((orc, n_orc), (obr, n_obr)):
            if seg is not None and seg.get(n):
                value, namespace = dtp.ei(seg.reps(n)[0], seg.enc)
                return member_system(namespace or default_facility, kind), value
        return None

    ids = OrderIds(pick(2, 2, placer_facility, "placer-order"), pick(3, 3, filler_facility, "filler-order"))
    if ids.placer is None and ids.filler is None:
        where = "ORC-2" if orc is not None else "OBR-2"
        raise TranslationError(
            "neither placer (ORC-2/OBR-2) nor filler (ORC-3/OBR-3) order number", where, "101"
        )
    return ids


def requester(
    orc: Segment | None, obr: Segment | None, tx: TransactionBuilder, ordering_facility: str
) -> str:
    """PractitionerRole (provider at the ordering facility) or the ordering Organization."""
    org_code = ordering_facility
    if orc is not None and orc.get(21):
        name, ident = dtp.xon(orc.reps(21)[0], orc.enc)
        org_code = ident or name or ordering_facility
    org_url = tx.organization(org_code)
    provider = (orc.reps(12) if orc is not None else []) or (obr.reps(16) if obr is not None else [])
    if not provider:
        return org_url
    seg = orc if orc is not None and orc.reps(12) else obr
    assert seg is not None
    staff_id, staff_name, _ = dtp.xcn(provider[0], seg.enc)
    prac_url = tx.practitioner(org_code, staff_id, staff_name)
    if prac_url is None:
        return org_url
    system = member_system(org_code, "practitioner-role")
    role: JsonObject = {
        "resourceType": "PractitionerRole",
        "identifier": [{"system": system, "value": staff_id}],
        "practitioner": {"reference": prac_url},
        "organization": {"reference": org_url},
    }
    return tx.ensure(role, system, staff_id)


def translate(
    orc: Segment | None,
    obr: Segment | None,
    tx: TransactionBuilder,
    patient_url: str,
    ids: OrderIds,
    tz: ZoneInfo,
    ordering_facility: str,
    performer_facility: str,
    conditional_create: bool = False,
) -> str:
    """Add the ServiceRequest; `conditional_create` (results) only creates it when it is not known yet."""
    code = dtp.cwe(obr.raw(4), obr.enc) if obr is not None and obr.raw(4) else None
    if code is None:
        raise TranslationError("universal service identifier (what was ordered) is empty", "OBR-4", "101")
    status = "active"
    if orc is not None:
        status = lookup("0038", orc.get(5)) or lookup("0119", orc.get(1)) or "active"
    sr: JsonObject = {
        "resourceType": "ServiceRequest",
        "identifier": ids.identifiers(),
        "status": status,
        "intent": "order",
        "code": code,
        "subject": {"reference": patient_url},
        "requester": {"reference": requester(orc, obr, tx, ordering_facility)},
    }
    if performer_facility:
        sr["performer"] = [{"reference": tx.organization(performer_facility)}]
    try:
        authored = dtp.dtm(orc.get(9), tz) if orc is not None else None
        authored = authored or (dtp.dtm(obr.get(6), tz) if obr is not None else None)
    except dtp.DataTypeError as exc:
        raise TranslationError(str(exc), "ORC-9", "102") from exc
    if authored:
        sr["authoredOn"] = authored
    priority = (orc.get(7, 6) if orc is not None else "") or (obr.get(27, 6) if obr is not None else "")
    if lookup("0280", priority):
        sr["priority"] = lookup("0280", priority)
    if obr is not None:
        reasons = [c for c in (dtp.cwe(r, obr.enc) for r in obr.reps(31)) if c]
        if reasons:
            sr["reasonCode"] = reasons
        if obr.get(24):
            sr["category"] = [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": obr.get(24)}]}
            ]
    system, value = ids.key()
    if conditional_create:
        return tx.ensure(sr, system, value)
    return tx.upsert(sr, system, value)
