"""Modality Worklist (C-FIND on 1.2.840.10008.5.1.4.31), pure: scheduled ServiceRequests ↔ worklist items.

Imaging ServiceRequests (from the HL7 ORM/OML feed or FHIR clients) that are `active` become worklist
items for the calling modality's member; the edge fetches them through the Sink and matches here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from pydicom.dataset import Dataset

from adapters.dicom.query import Record, as_text, dicom_da_tm, patient_pn, set_value
from adapters.identity import DICOM_UID_SYSTEM

JsonObject = dict[str, Any]

MWL_SPS = "ScheduledProcedureStepSequence"
MWL_TOP_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "StudyInstanceUID",
    "ReferringPhysicianName",
)
MWL_SPS_KEYS = (
    "Modality",
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
    "ScheduledPerformingPhysicianName",
)
DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
IMAGING_CATEGORY = "363679005"  # SNOMED CT: Imaging


V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # OBR-24 diagnostic service section (HL7 feed)
SECTION_MODALITY = {"CT": "CT", "RX": "DX", "RAD": "", "RUS": "US", "VUS": "US", "OUS": "US", "CUS": "US",
                    "NMR": "MR", "NMS": "NM", "XRC": "RF"}  # fmt: skip


def is_imaging_request(sr: JsonObject) -> bool:
    """Imaging orders: a DCM modality code, SNOMED 363679005 (Imaging), or an imaging OBR-24 section."""
    codings = [c for cc in [*sr.get("category", []), sr.get("code", {})] for c in cc.get("coding", [])]
    return any(
        c.get("system") == DCM_SYSTEM
        or c.get("code") == IMAGING_CATEGORY
        or (c.get("system") == V2_0074 and c.get("code") in SECTION_MODALITY)
        for c in codings
    )


def worklist_record(sr: JsonObject, patient: JsonObject | None, station_aet: str) -> Record:
    """One scheduled imaging ServiceRequest (+ its Patient) as a flat worklist record (SPS keys prefixed)."""
    patient = patient or {}
    identifiers = sr.get("identifier", [])
    accessions = [i.get("value", "") for i in identifiers if _has_code(i.get("type", {}), "ACSN")]
    accession = (accessions or [i.get("value", "") for i in identifiers] or [""])[0]
    uids = [i.get("value", "") for i in identifiers if i.get("system") == DICOM_UID_SYSTEM and i.get("value")]
    study_uid = (
        uids[0].removeprefix("urn:oid:")
        if uids
        else f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'ServiceRequest/' + str(sr.get('id'))).int}"
    )
    code = sr.get("code", {})
    description = code.get("text") or next((c.get("display", "") for c in code.get("coding", [])), "")
    concepts = [code, *sr.get("category", [])]
    codings = [c for cc in concepts for c in cc.get("coding", [])]
    modalities = [c.get("code", "") for c in codings if c.get("system") == DCM_SYSTEM]
    modalities += [SECTION_MODALITY.get(c.get("code", ""), "") for c in codings if c.get("system") == V2_0074]
    modality = (modalities or [""])[0]
    when = sr.get("occurrenceDateTime") or sr.get("occurrencePeriod", {}).get("start") or ""
    date, time = dicom_da_tm(when)
    pid = (patient.get("identifier") or [{}])[0].get("value", "")
    return {
        "PatientName": patient_pn(patient),
        "PatientID": pid,
        "PatientBirthDate": str(patient.get("birthDate", "")).replace("-", ""),
        "PatientSex": {"male": "M", "female": "F", "other": "O"}.get(str(patient.get("gender", "")), ""),
        "AccessionNumber": accession[:16],
        "RequestedProcedureID": str(sr.get("id", ""))[:16],
        "RequestedProcedureDescription": description[:64],
        "StudyInstanceUID": study_uid,
        "ReferringPhysicianName": str(sr.get("requester", {}).get("display", "")),
        f"{MWL_SPS}.Modality": modality,
        f"{MWL_SPS}.ScheduledStationAETitle": station_aet,
        f"{MWL_SPS}.ScheduledProcedureStepStartDate": date,
        f"{MWL_SPS}.ScheduledProcedureStepStartTime": time,
        f"{MWL_SPS}.ScheduledProcedureStepDescription": description[:64],
        f"{MWL_SPS}.ScheduledProcedureStepID": str(sr.get("id", ""))[:16],
        f"{MWL_SPS}.ScheduledPerformingPhysicianName": "",
    }


def worklist_criteria(identifier: Dataset) -> dict[str, str]:
    criteria: dict[str, str] = {}
    for elem in identifier:
        if elem.keyword == MWL_SPS:
            for item in elem.value or []:
                for sub in item:
                    criteria[f"{MWL_SPS}.{sub.keyword}"] = as_text(sub.value)
        elif elem.keyword and elem.VR != "SQ" and elem.keyword != "SpecificCharacterSet":
            criteria[elem.keyword] = as_text(elem.value)
    return criteria


def worklist_response(identifier: Dataset, record: Mapping[str, str]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for elem in identifier:
        if elem.keyword == MWL_SPS:
            item = Dataset()
            requested = [s.keyword for i in (elem.value or []) for s in i] or list(MWL_SPS_KEYS)
            for kw in requested:
                set_value(item, kw, record.get(f"{MWL_SPS}.{kw}", ""))
            ds.ScheduledProcedureStepSequence = [item]
        elif elem.keyword and elem.keyword != "SpecificCharacterSet" and elem.VR != "SQ":
            set_value(ds, elem.keyword, record.get(elem.keyword, ""))
    return ds


def _has_code(concept: JsonObject, code: str) -> bool:
    return any(c.get("code") == code for c in concept.get("coding", []))
