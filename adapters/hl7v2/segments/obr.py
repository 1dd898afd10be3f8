"""OBR → DiagnosticReport (v2-to-FHIR IG OBR[DiagnosticReport] map, main elements)."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from adapters.hl7v2 import datatypes as dtp
from adapters.hl7v2.parse import Segment
from adapters.hl7v2.tables import lookup
from adapters.hl7v2.transaction import TranslationError

JsonObject = dict[str, Any]
_V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"


def translate(obr: Segment, tz: ZoneInfo) -> JsonObject:
    """DiagnosticReport content (identifier, subject, basedOn, result are added by the message map)."""
    code = dtp.cwe(obr.raw(4), obr.enc) if obr.raw(4) else None
    if code is None:
        raise TranslationError("universal service identifier is empty", "OBR-4", "101")
    status = lookup("0123", obr.get(25) or "F")
    if status is None:
        raise TranslationError(f"result status '{obr.get(25)}' not in table 0123", "OBR-25", "103")
    report: JsonObject = {"resourceType": "DiagnosticReport", "status": status, "code": code}
    try:
        effective = dtp.dtm(obr.get(7), tz)
        issued = dtp.dtm(obr.get(22), tz)
    except dtp.DataTypeError as exc:
        raise TranslationError(str(exc), "OBR-7/OBR-22", "102") from exc
    if effective:
        report["effectiveDateTime"] = effective
    if issued:
        report["issued"] = issued
    section = obr.get(24)
    if section:
        report["category"] = [{"coding": [{"system": _V2_0074, "code": section}]}]
    return report
