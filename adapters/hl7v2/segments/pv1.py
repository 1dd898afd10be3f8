"""PV1 → Encounter (v2-to-FHIR IG PV1[Encounter] map, main elements).

Choice where the IG leaves room: an Encounter is only written when PV1-19 (visit number) is valued,
because it is the only stable key for updates (A08) and re-sends; registrations without a visit (A28/A31,
or an A04 whose HIS leaves PV1-19 empty) update the Patient only.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from adapters.hl7v2 import datatypes as dtp
from adapters.hl7v2.parse import Segment
from adapters.hl7v2.tables import lookup
from adapters.hl7v2.transaction import TransactionBuilder, TranslationError, member_system

JsonObject = dict[str, Any]

_PARTICIPANTS = (
    (7, "ATND", "attender"),
    (8, "REF", "referrer"),
    (9, "CON", "consultant"),
    (17, "ADM", "admitter"),
)
_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


def visit_number(pv1: Segment | None) -> str:
    return pv1.get(19) if pv1 is not None else ""


def translate(pv1: Segment, tx: TransactionBuilder, patient_url: str, tz: ZoneInfo) -> str | None:
    """Add the Encounter for PV1 to the transaction; returns its fullUrl, or None without PV1-19."""
    visit = visit_number(pv1)
    if not visit:
        return None
    facility = tx.facility
    system = member_system(facility, "visit")
    klass = pv1.get(2)
    code = lookup("0004", klass)
    if klass and not code:
        raise TranslationError(f"patient class '{klass}' not in table 0004", "PV1-2", "103")
    enc: JsonObject = {
        "resourceType": "Encounter",
        "identifier": [
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "VN"}],
                    "text": "visit number",
                },
                "system": system,
                "value": visit,
            }
        ],
        "status": "in-progress",
        "class": {"system": _ACT_CODE, "code": code or "AMB"},
        "subject": {"reference": patient_url},
        "serviceProvider": {"reference": tx.organization(facility)},
    }
    try:
        start = dtp.dtm(pv1.get(44), tz)
        end = dtp.dtm(pv1.get(45), tz)
    except dtp.DataTypeError as exc:
        raise TranslationError(str(exc), "PV1-44/45", "102") from exc
    if start or end:
        enc["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    if end:
        enc["status"] = "finished"
    elif klass == "P":
        enc["status"] = "planned"
    if pv1.get(10):
        enc["serviceType"] = dtp.cwe(pv1.raw(10), pv1.enc)
    location = pv1.comps(3)
    if any(location):
        # PL: point of care ^ room ^ bed ^ facility; kept as display text (no Location registry yet).
        text = "/".join(x for x in location[:3] if x)
        enc["location"] = [{"location": {"display": text}, "status": "planned" if klass == "P" else "active"}]
    participants = []
    for field_no, code_, display in _PARTICIPANTS:
        for rep in pv1.reps(field_no):
            staff_id, name, _ = dtp.xcn(rep, pv1.enc)
            ref = tx.practitioner(facility, staff_id, name)
            if ref is None:
                continue
            participants.append(
                {
                    "type": [{"coding": [{"system": _PARTICIPATION, "code": code_, "display": display}]}],
                    "individual": {"reference": ref},
                }
            )
    if participants:
        enc["participant"] = participants
    return tx.upsert(enc, system, visit)
