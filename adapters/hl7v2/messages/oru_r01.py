"""ORU^R01 → DiagnosticReport + Observations per OBR, linked to the ServiceRequest they fulfil.

The ServiceRequest is referenced by conditional create on its placer number (else filler number): when
the order came through the hub (ORM/REF) the report links to it; when the LIS results an order the hub
never saw, a minimal ServiceRequest is created so `basedOn` and outbound delivery still work. The
DiagnosticReport is keyed by the filler order number (OBR-3, else the placer number), Observations by
OBX-21 or report number + OBX-1/OBX-4, so a corrected result (OBX-11 = C) updates in place.
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2.messages.orm_o01 import patient_url
from adapters.hl7v2.parse import Message
from adapters.hl7v2.segments import obr as obr_map
from adapters.hl7v2.segments import obx as obx_map
from adapters.hl7v2.segments import orc as orc_map
from adapters.hl7v2.transaction import (
    Context,
    TransactionBuilder,
    Translation,
    TranslationError,
    member_system,
)

JsonObject = dict[str, Any]
LAB_CATEGORY = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]
}
_LAB_SECTIONS = {"LAB", "CH", "HM", "MB", "SR", "CP", "BLB", "SP", "CT", "TX", "SEROLOGY"}


def _is_lab(report: JsonObject) -> bool:
    """Results of laboratory service sections (OBR-24, table 0074) are laboratory Observations."""
    return any(c.get("code") in _LAB_SECTIONS for cat in report.get("category", []) for c in cat["coding"])


def translate(message: Message, ctx: Context) -> Translation:
    tx = TransactionBuilder(message, ctx)
    subject = patient_url(message, tx, ctx)
    receiver = message.msh.get(6)
    orc = None
    report_url: str | None = None
    report: JsonObject | None = None
    obs_system = member_system(tx.facility, "observation")
    n_reports = 0
    report_key = ""
    for index, seg in enumerate(message.segments):
        if seg.name == "ORC":
            orc = seg
        elif seg.name == "OBR":
            ids = orc_map.order_ids(orc, seg, receiver or tx.facility, tx.facility)
            sr_url = orc_map.translate(
                orc,
                seg,
                tx,
                subject,
                ids,
                ctx.tz,
                receiver or tx.facility,
                tx.facility,
                conditional_create=True,
            )
            content = obr_map.translate(seg, ctx.tz)
            system, report_key = ids.filler or ids.placer  # type: ignore[misc]
            content["identifier"] = ids.identifiers()
            content["subject"] = {"reference": subject}
            content["basedOn"] = [{"reference": sr_url}]
            content["performer"] = [{"reference": tx.organization(tx.facility)}]
            content["result"] = []
            report_url = tx.upsert(content, system, report_key)
            report = content
            n_reports += 1
            orc = None
        elif seg.name == "OBX":
            if report is None or report_url is None:
                raise TranslationError("OBX before any OBR", f"OBX (segment {index + 1})", "100")
            obs = obx_map.translate(seg, ctx.tz)
            obs_id = seg.get(21) or f"{report_key}-{seg.get(1) or index}-{seg.get(4)}".rstrip("-")
            obs["identifier"] = [{"system": obs_system, "value": obs_id}]
            obs["subject"] = {"reference": subject}
            obs["basedOn"] = report["basedOn"]
            if _is_lab(report):
                obs["category"] = [LAB_CATEGORY]
            if "effectiveDateTime" not in obs and "effectiveDateTime" in report:
                obs["effectiveDateTime"] = report["effectiveDateTime"]
            url = tx.upsert(obs, obs_system, obs_id)
            report["result"].append({"reference": url})
    if n_reports == 0:
        raise TranslationError("no OBR in the message", "OBR", "100")
    return tx.finish()
