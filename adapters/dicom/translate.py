"""Stored instances of one study → FHIR transaction Bundle (ImagingStudy + Patient + Endpoint + Provenance).

Pure: the caller passes everything looked up elsewhere (member Organization, the ServiceRequest found
by accession number, the WADO-RS base address, the clock-free received times already in the records).
The ImagingStudy is written with a conditional update on its Study Instance UID, so late series and
re-sent studies update one resource; the whole study is re-translated from the index every time, so the
result never depends on the order instances arrived in.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from adapters.dicom.instances import StoredInstance
from adapters.dicom.summary import InstanceSummary, Name
from adapters.identity import (
    CN_RESIDENT_ID_SYSTEM,
    DICOM_UID_SYSTEM,
    organization_identifier_system,
    patient_identifier_system,
    uid_value,
)
from terminology import cn_resident_id

JsonObject = dict[str, Any]
log = logging.getLogger(__name__)

DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
FIRST_RECEIVED_URL = "http://yilian.org.cn/fhir/StructureDefinition/imaging-first-instance-received"
NAME_REPRESENTATION_URL = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
ENDPOINT_SYSTEM = "urn:yilian:endpoint"
UNIDENTIFIED_PATIENT_SYSTEM = "urn:yilian:dicom:unidentified-patient"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"

# BodyPartExamined defined terms (PS3.16 Annex L) → SNOMED CT, for the body parts the consortium sees most.
BODY_PARTS: dict[str, tuple[str, str]] = {
    "CHEST": ("51185008", "Thoracic structure"),
    "HEAD": ("69536005", "Head structure"),
    "BRAIN": ("12738006", "Brain structure"),
    "ABDOMEN": ("818983003", "Abdomen"),
    "PELVIS": ("816092008", "Pelvis"),
    "CSPINE": ("122494005", "Cervical spine"),
    "LSPINE": ("122496007", "Lumbar spine"),
    "TSPINE": ("122495006", "Thoracic spine"),
    "KNEE": ("72696002", "Knee region structure"),
    "HAND": ("85562004", "Hand structure"),
    "BREAST": ("76752008", "Breast structure"),
    "NECK": ("45048000", "Neck structure"),
}
_GENDER = {"M": "male", "F": "female", "O": "other"}


@dataclass(frozen=True)
class StudyContext:
    """What translation needs from outside the instances (all resolved by the caller)."""

    wado_rs_base: str  # e.g. http://hub:8080/dicomweb
    timezone: str = "Asia/Shanghai"
    member: str | None = (
        None  # member code the calling AE maps to (Organization identifier urn:yilian:member)
    )
    service_request_id: str | None = None  # ServiceRequest whose identifier equals the accession number


def patient_identifier(first: StoredInstance) -> tuple[str, str]:
    """(system, value) of the Patient: Patient ID scoped by Issuer of Patient ID, else by the member/AE."""
    s = first.summary
    if not s.patient_id:
        return UNIDENTIFIED_PATIENT_SYSTEM, uid_value(s.study_uid)
    authority = s.issuer_of_patient_id or first.member or first.calling_ae
    return patient_identifier_system(authority), s.patient_id


def study_conditional_url(study_uid: str) -> str:
    return f"ImagingStudy?identifier={DICOM_UID_SYSTEM}|{uid_value(study_uid)}"


def translate_study(records: Sequence[StoredInstance], ctx: StudyContext) -> JsonObject:
    """All instances of one study → a transaction Bundle; `records` must be non-empty and one study."""
    if not records:
        raise ValueError("translate_study needs at least one instance")
    first = records[0]
    s = first.summary
    patient_url, study_url, endpoint_url = (f"urn:uuid:{uuid.uuid4()}" for _ in range(3))
    psys, pval = patient_identifier(first)
    endpoint_id_value = f"dicom-wado-rs:{ctx.wado_rs_base}"
    org_url = f"urn:uuid:{uuid.uuid4()}" if ctx.member else None
    study = _imaging_study(records, ctx, patient_url, endpoint_url, org_url)
    entries: list[JsonObject] = []
    if ctx.member and org_url:
        # the same member Organization the HL7 feed names by its facility code (MSH-4): one per member
        entries.append(
            {
                "fullUrl": org_url,
                "resource": {
                    "resourceType": "Organization",
                    "identifier": [{"system": organization_identifier_system(), "value": ctx.member}],
                    "active": True,
                    "name": ctx.member,
                },
                "request": {
                    "method": "POST",
                    "url": "Organization",
                    "ifNoneExist": f"identifier={organization_identifier_system()}|{ctx.member}",
                },
            }
        )
    entries += [
        {
            "fullUrl": patient_url,
            "resource": _patient(s, psys, pval, org_url),
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={psys}|{pval}"},
        },
        {
            "fullUrl": endpoint_url,
            "resource": _endpoint(ctx.wado_rs_base, endpoint_id_value),
            "request": {
                "method": "POST",
                "url": "Endpoint",
                "ifNoneExist": f"identifier={ENDPOINT_SYSTEM}|{endpoint_id_value}",
            },
        },
        {
            "fullUrl": study_url,
            "resource": study,
            "request": {"method": "PUT", "url": study_conditional_url(s.study_uid)},
        },
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": _provenance(records, org_url, study_url),
            "request": {"method": "POST", "url": "Provenance"},
        },
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _imaging_study(
    records: Sequence[StoredInstance],
    ctx: StudyContext,
    patient_url: str,
    endpoint_url: str,
    org_url: str | None,
) -> JsonObject:
    s = records[0].summary
    series_map: dict[str, list[InstanceSummary]] = {}
    for r in records:
        series_map.setdefault(r.summary.series_uid, []).append(r.summary)
    series = [_series(members, ctx) for members in series_map.values()]
    modalities = _unique(r.summary.modality for r in records if r.summary.modality)
    study: JsonObject = {
        "resourceType": "ImagingStudy",
        "extension": [
            {"url": FIRST_RECEIVED_URL, "valueDateTime": min(r.received_at for r in records)},
        ],
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": uid_value(s.study_uid)}],
        "status": "available",
        "subject": {"reference": patient_url},
        "endpoint": [{"reference": endpoint_url}],
        "numberOfSeries": len(series),
        "numberOfInstances": len(records),
        "series": series,
    }
    if ctx.member:
        study["meta"] = {"tag": [{"system": organization_identifier_system(), "code": ctx.member}]}
    if s.accession_number:
        accession: JsonObject = {
            "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
            "value": s.accession_number,
        }
        if org_url:
            accession["assigner"] = {"reference": org_url}
        study["identifier"].append(accession)
    if modalities:
        study["modality"] = [{"system": DCM_SYSTEM, "code": m} for m in modalities]
    started = dicom_datetime(s.study_date, s.study_time, s.timezone_offset, ctx.timezone)
    if started:
        study["started"] = started
    if ctx.service_request_id:
        study["basedOn"] = [{"reference": f"ServiceRequest/{ctx.service_request_id}"}]
    referrer = _display(s.referring_physician)
    if referrer:
        study["referrer"] = {"display": referrer}
    if s.study_description:
        study["description"] = s.study_description
    return study


def _series(members: list[InstanceSummary], ctx: StudyContext) -> JsonObject:
    s = members[0]
    out: JsonObject = {"uid": s.series_uid}
    if s.series_number is not None:
        out["number"] = s.series_number
    out["modality"] = {"system": DCM_SYSTEM, "code": s.modality or "OT"}
    if s.series_description:
        out["description"] = s.series_description
    out["numberOfInstances"] = len(members)
    if s.body_part:
        code = BODY_PARTS.get(s.body_part.upper())
        out["bodySite"] = (
            {"system": SNOMED, "code": code[0], "display": code[1]} if code else {"display": s.body_part}
        )
    started = dicom_datetime(s.series_date, s.series_time, s.timezone_offset, ctx.timezone)
    if started:
        out["started"] = started
    out["instance"] = [
        {
            "uid": m.sop_instance_uid,
            "sopClass": {"system": "urn:ietf:rfc:3986", "code": uid_value(m.sop_class_uid)},
            **({"number": m.instance_number} if m.instance_number is not None else {}),
        }
        for m in members
    ]
    return out


def _patient(s: InstanceSummary, system: str, value: str, org_url: str | None) -> JsonObject:
    """The member's Patient as its PACS knows it. A valid 居民身份证 among the IDs joins it to the
    person's master in the hub (as HL7 registrations do); an invalid one is left out, not refused: the
    images are safe already, and a wrong number must not link two people."""
    patient: JsonObject = {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}
    if s.resident_id:
        if cn_resident_id.is_valid(s.resident_id):
            patient["identifier"].append(
                {"system": CN_RESIDENT_ID_SYSTEM, "value": cn_resident_id.normalise(s.resident_id)}
            )
        else:
            log.warning("study %s: a resident ID that fails GB 11643 is left out of the Patient", s.study_uid)
    names = human_names(s.patient_name)
    if names:
        patient["name"] = names
    gender = _GENDER.get(s.patient_sex.upper()) if s.patient_sex else None
    if gender:
        patient["gender"] = gender
    birth = dicom_date(s.patient_birth_date)
    if birth:
        patient["birthDate"] = birth
    if org_url:
        patient["managingOrganization"] = {"reference": org_url}
    return patient


def human_names(name: Name) -> list[JsonObject]:
    """One HumanName per PN component group, marked alphabetic (ABC), ideographic (IDE), phonetic (SYL)."""
    out: list[JsonObject] = []
    for group, representation, joiner in (
        (name.ideographic, "IDE", ""),
        (name.alphabetic, "ABC", " "),
        (name.phonetic, "SYL", " "),
    ):
        if not group:
            continue
        parts = [p.strip() for p in group.split("^")] + [""] * 5
        family, given = parts[0], [p for p in parts[1:3] if p]
        human: JsonObject = {
            "extension": [{"url": NAME_REPRESENTATION_URL, "valueCode": representation}],
            "use": "official" if not out else "usual",
            "text": joiner.join(p for p in (family, *given) if p)
            if representation == "IDE"
            else " ".join(p for p in (*given, family) if p),
        }
        if family:
            human["family"] = family
        if given:
            human["given"] = given
        if parts[3]:
            human["prefix"] = [parts[3]]
        if parts[4]:
            human["suffix"] = [parts[4]]
        out.append(human)
    return out


def _endpoint(address: str, id_value: str) -> JsonObject:
    return {
        "resourceType": "Endpoint",
        "identifier": [{"system": ENDPOINT_SYSTEM, "value": id_value}],
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
        },
        "name": "YiLian DICOMweb (WADO-RS)",
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }


def _provenance(records: Sequence[StoredInstance], org_url: str | None, study_url: str) -> JsonObject:
    first = records[0]
    who: JsonObject = {"display": f"DICOM AE {first.calling_ae}"}
    if org_url:
        who = {"reference": org_url}
    return {
        "resourceType": "Provenance",
        "target": [{"reference": study_url}],
        "recorded": max(r.received_at for r in records),
        "agent": [{"who": who}],
        "entity": [{"role": "source", "what": {"display": f"DICOM C-STORE from AE {first.calling_ae}"}}],
    }


def dicom_date(value: str) -> str | None:
    """DICOM DA (YYYYMMDD) → FHIR date; None when absent or malformed."""
    v = value.strip().replace("-", "").replace(".", "")
    if len(v) != 8 or not v.isdigit():
        return None
    return f"{v[:4]}-{v[4:6]}-{v[6:8]}"


def dicom_datetime(date: str, time: str, offset: str, timezone: str) -> str | None:
    """DICOM DA + TM (+ TimezoneOffsetFromUTC, else the member's zone) → FHIR dateTime."""
    day = dicom_date(date)
    if day is None:
        return None
    t = time.strip().replace(":", "")
    if not t:
        return day
    digits = t.split(".")[0]
    if not digits.isdigit() or len(digits) < 2:
        return day
    hh, mm, ss = digits[0:2], digits[2:4] or "00", digits[4:6] or "00"
    frac = t.split(".")[1][:3] if "." in t else ""
    tz = _offset(offset) or _zone_offset(day, f"{hh}:{mm}:{ss}", timezone)
    return f"{day}T{hh}:{mm}:{ss}{'.' + frac if frac else ''}{tz}"


def _offset(value: str) -> str | None:
    v = value.strip()
    if len(v) == 5 and v[0] in "+-" and v[1:].isdigit():
        return f"{v[:3]}:{v[3:]}"
    return None


def _zone_offset(day: str, clock: str, timezone: str) -> str:
    local = datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=ZoneInfo(timezone))
    raw = local.strftime("%z")
    return f"{raw[:3]}:{raw[3:]}"


def _display(name: Name) -> str:
    group = name.ideographic or name.alphabetic
    return " ".join(p for p in group.split("^") if p) if group else ""


def _unique(values: Any) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)
