"""C-FIND / C-MOVE / C-GET / QIDO-RS identifiers ↔ indexed instances, and worklist items ↔ ServiceRequests.

Pure: the edge passes in indexed instances or FHIR resources and gets back matching records and response
identifiers. Patient, study, series and image records are derived from the instance index (the same
data each ImagingStudy is translated from), so a study that can be found can also be retrieved.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydicom.dataset import Dataset

from adapters.dicom.instances import StoredInstance
from adapters.dicom.matching import matches, vr_of
from adapters.dicom.summary import Name
from adapters.identity import DICOM_UID_SYSTEM

JsonObject = dict[str, Any]
Record = dict[str, str]

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
PATIENT_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_KEYS = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "SeriesDate",
    "SeriesTime",
    "NumberOfSeriesRelatedInstances",
)
IMAGE_KEYS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber", "NumberOfFrames", "TransferSyntaxUID")
_UNIQUE_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


_NOT_CRITERIA = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})


class InvalidQuery(ValueError):
    """The identifier cannot be answered (missing or unknown Query/Retrieve Level)."""


def pn(name: Name) -> str:
    return "=".join((name.alphabetic, name.ideographic, name.phonetic)).rstrip("=")


def instance_record(r: StoredInstance) -> Record:
    """Every attribute the index knows for one instance, at all four levels."""
    s = r.summary
    return {
        "PatientName": pn(s.patient_name),
        "PatientID": s.patient_id,
        "IssuerOfPatientID": s.issuer_of_patient_id,
        "PatientBirthDate": s.patient_birth_date,
        "PatientSex": s.patient_sex,
        "StudyInstanceUID": s.study_uid,
        "StudyDate": s.study_date,
        "StudyTime": s.study_time,
        "AccessionNumber": s.accession_number,
        "StudyID": s.study_id,
        "StudyDescription": s.study_description,
        "ReferringPhysicianName": pn(s.referring_physician),
        "SeriesInstanceUID": s.series_uid,
        "Modality": s.modality,
        "SeriesNumber": "" if s.series_number is None else str(s.series_number),
        "SeriesDescription": s.series_description,
        "BodyPartExamined": s.body_part,
        "SeriesDate": s.series_date,
        "SeriesTime": s.series_time,
        "SOPInstanceUID": s.sop_instance_uid,
        "SOPClassUID": s.sop_class_uid,
        "InstanceNumber": "" if s.instance_number is None else str(s.instance_number),
        "NumberOfFrames": str(s.number_of_frames),
        "TransferSyntaxUID": s.transfer_syntax,
    }


def level_records(level: str, instances: Iterable[StoredInstance]) -> list[Record]:
    """Aggregate instance records up to `level`, adding the Number Of ... Related and Modalities keys."""
    if level not in LEVELS:
        raise InvalidQuery(f"unknown Query/Retrieve Level {level!r}")
    key = _UNIQUE_KEY[level]
    groups: dict[str, list[Record]] = {}
    for inst in instances:
        rec = instance_record(inst)
        groups.setdefault(rec[key], []).append(rec)
    out: list[Record] = []
    for members in groups.values():
        rec = dict(members[0])
        studies = {m["StudyInstanceUID"] for m in members}
        series = {m["SeriesInstanceUID"] for m in members}
        rec["ModalitiesInStudy"] = "\\".join(sorted({m["Modality"] for m in members if m["Modality"]}))
        rec["NumberOfPatientRelatedStudies"] = str(len(studies))
        rec["NumberOfPatientRelatedSeries"] = str(len(series))
        rec["NumberOfPatientRelatedInstances"] = str(len(members))
        rec["NumberOfStudyRelatedSeries"] = str(len(series))
        rec["NumberOfStudyRelatedInstances"] = str(len(members))
        rec["NumberOfSeriesRelatedInstances"] = str(len(members))
        out.append(rec)
    return out


def criteria_of(identifier: Dataset) -> tuple[str, dict[str, str]]:
    """(level, {keyword: matching value}) from a C-FIND/C-MOVE/C-GET identifier."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").upper()
    if level not in LEVELS:
        raise InvalidQuery(f"unknown Query/Retrieve Level {level!r}")
    criteria: dict[str, str] = {}
    for elem in identifier:
        if not elem.keyword or elem.keyword in _NOT_CRITERIA or elem.VR == "SQ":
            continue
        criteria[elem.keyword] = _as_text(elem.value)
    return level, criteria


def uid_filters(criteria: Mapping[str, str]) -> dict[str, list[str] | None]:
    """UID-list criteria the index can narrow on before matching the rest in memory."""

    def split(keyword: str) -> list[str] | None:
        value = criteria.get(keyword, "")
        return [v for v in value.split("\\") if v] if value and "*" not in value else None

    return {
        "study_uids": split("StudyInstanceUID"),
        "series_uids": split("SeriesInstanceUID"),
        "sop_uids": split("SOPInstanceUID"),
    }


def find(level: str, criteria: Mapping[str, str], instances: Iterable[StoredInstance]) -> list[Record]:
    return [rec for rec in level_records(level, instances) if matches(rec, criteria)]


def matching_instances(
    level: str, criteria: Mapping[str, str], instances: Sequence[StoredInstance]
) -> list[StoredInstance]:
    """Instances below the records matching at `level` (what C-MOVE / C-GET / WADO-RS send)."""
    key = _UNIQUE_KEY[level]
    wanted = {rec[key] for rec in find(level, criteria, instances)}
    return [i for i in instances if instance_record(i)[key] in wanted]


def response_identifier(level: str, requested: Iterable[str], record: Mapping[str, str], aet: str) -> Dataset:
    """The C-FIND response identifier: the requested keys filled from the record, in UTF-8."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = level
    for keyword in requested:
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        value = record.get(keyword, "")
        _set(ds, keyword, value)
    ds.RetrieveAETitle = aet
    return ds


def _set(ds: Dataset, keyword: str, value: str) -> None:
    vr = vr_of(keyword)
    if vr in ("US", "UL", "SS", "SL"):
        setattr(ds, keyword, int(value) if value else None)
    elif "\\" in value:
        setattr(ds, keyword, value.split("\\"))
    else:
        setattr(ds, keyword, value)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


# --- Modality Worklist -------------------------------------------------------------------------------

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


def is_imaging_request(sr: JsonObject) -> bool:
    codings = [c for cc in [*sr.get("category", []), sr.get("code", {})] for c in cc.get("coding", [])]
    return any(c.get("system") == DCM_SYSTEM or c.get("code") == IMAGING_CATEGORY for c in codings)


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
    modality = (modalities or [""])[0]
    when = sr.get("occurrenceDateTime") or sr.get("occurrencePeriod", {}).get("start") or ""
    date, time = _dicom_da_tm(when)
    pid = (patient.get("identifier") or [{}])[0].get("value", "")
    return {
        "PatientName": _patient_pn(patient),
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
                    criteria[f"{MWL_SPS}.{sub.keyword}"] = _as_text(sub.value)
        elif elem.keyword and elem.VR != "SQ" and elem.keyword != "SpecificCharacterSet":
            criteria[elem.keyword] = _as_text(elem.value)
    return criteria


def worklist_response(identifier: Dataset, record: Mapping[str, str]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for elem in identifier:
        if elem.keyword == MWL_SPS:
            item = Dataset()
            requested = [s.keyword for i in (elem.value or []) for s in i] or list(MWL_SPS_KEYS)
            for kw in requested:
                _set(item, kw, record.get(f"{MWL_SPS}.{kw}", ""))
            ds.ScheduledProcedureStepSequence = [item]
        elif elem.keyword and elem.keyword != "SpecificCharacterSet" and elem.VR != "SQ":
            _set(ds, elem.keyword, record.get(elem.keyword, ""))
    return ds


def _patient_pn(patient: JsonObject) -> str:
    groups = {"ABC": "", "IDE": "", "SYL": ""}
    for name in patient.get("name", []):
        reps = [e.get("valueCode") for e in name.get("extension", []) if e.get("valueCode") in groups]
        rep = reps[0] if reps else "ABC"
        if not groups[rep]:
            groups[rep] = "^".join([name.get("family", ""), " ".join(name.get("given", []))]).rstrip("^")
    return "=".join((groups["ABC"], groups["IDE"], groups["SYL"])).rstrip("=")


def _has_code(concept: JsonObject, code: str) -> bool:
    return any(c.get("code") == code for c in concept.get("coding", []))


def _dicom_da_tm(when: str) -> tuple[str, str]:
    if not when:
        return "", ""
    day, _, rest = when.partition("T")
    clock = rest[:8].replace(":", "")
    return day.replace("-", ""), clock
