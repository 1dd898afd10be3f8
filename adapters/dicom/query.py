"""C-FIND / C-MOVE / C-GET / QIDO-RS identifiers ↔ indexed instances, and worklist items ↔ ServiceRequests.

Pure: the edge passes in indexed instances or FHIR resources and gets back matching records and response
identifiers. Patient, study, series and image records are derived from the instance index (the same
data each ImagingStudy is translated from), so a study that can be found can also be retrieved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydicom.dataset import Dataset

from adapters.dicom.instances import StoredInstance
from adapters.dicom.matching import matches, vr_of
from adapters.dicom.summary import Name
from adapters.identity import DICOM_UID_SYSTEM
from fhir_server.model.person import NOT_MASTER

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
        criteria[elem.keyword] = as_text(elem.value)
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
        set_value(ds, keyword, value)
    ds.RetrieveAETitle = aet
    return ds


def set_value(ds: Dataset, keyword: str, value: str) -> None:
    vr = vr_of(keyword)
    if vr in ("US", "UL", "SS", "SL"):
        setattr(ds, keyword, int(value) if value else None)
    elif "\\" in value:
        setattr(ds, keyword, value.split("\\"))
    else:
        setattr(ds, keyword, value)


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def patient_pn(patient: JsonObject) -> str:
    groups = {"ABC": "", "IDE": "", "SYL": ""}
    for name in patient.get("name", []):
        reps = [e.get("valueCode") for e in name.get("extension", []) if e.get("valueCode") in groups]
        rep = reps[0] if reps else "ABC"
        if not groups[rep]:
            groups[rep] = "^".join([name.get("family", ""), " ".join(name.get("given", []))]).rstrip("^")
    return "=".join((groups["ABC"], groups["IDE"], groups["SYL"])).rstrip("=")


def dicom_da_tm(when: str) -> tuple[str, str]:
    if not when:
        return "", ""
    day, _, rest = when.partition("T")
    clock = rest[:8].replace(":", "")
    return day.replace("-", ""), clock


# --- PATIENT and STUDY levels from the FHIR store ------------------------------------------------------

DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
PAGE = "1000"


def _literal(value: str) -> bool:
    return bool(value) and not any(ch in value for ch in "*?\\")


def _date_params(param: str, value: str) -> list[tuple[str, str]]:
    def iso(d: str) -> str:
        return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else ""

    if "-" in value:
        low, _, high = value.partition("-")
        return [(param, f"ge{iso(low)}")] * bool(iso(low)) + [(param, f"le{iso(high)}")] * bool(iso(high))
    return [(param, iso(value))] if iso(value) else []


def study_search_params(criteria: Mapping[str, str]) -> list[tuple[str, str]]:
    """FHIR ImagingStudy search narrowing a STUDY-level query; DICOM matching then runs on the result."""
    params = [("_include", "ImagingStudy:subject"), ("_count", PAGE)]
    uids = [u for u in criteria.get("StudyInstanceUID", "").split("\\") if u and "*" not in u]
    if uids:
        params.append(("identifier", ",".join(f"{DICOM_UID_SYSTEM}|urn:oid:{u}" for u in uids)))
    if _literal(criteria.get("AccessionNumber", "")):
        params.append(("identifier", criteria["AccessionNumber"]))
    params += _date_params("started", criteria.get("StudyDate", ""))
    modalities = [
        m for m in criteria.get("ModalitiesInStudy", "").split("\\") if m and "*" not in m and "?" not in m
    ]
    if modalities:
        params.append(("modality", ",".join(f"{DCM_SYSTEM}|{m}" for m in modalities)))
    if _literal(criteria.get("PatientID", "")):
        params.append(("subject:Patient.identifier", criteria["PatientID"]))
    return params


def patient_search_params(criteria: Mapping[str, str]) -> list[tuple[str, str]]:
    """FHIR Patient search narrowing a PATIENT-level query: member records, each the patient a PACS
    knows (the hub's master of a person carries every member's number and is not one of them)."""
    params = [("_count", PAGE), NOT_MASTER]
    if _literal(criteria.get("PatientID", "")):
        params.append(("identifier", criteria["PatientID"]))
    params += _date_params("birthdate", criteria.get("PatientBirthDate", ""))
    name = criteria.get("PatientName", "")
    prefix = name[:-1] if name.endswith("*") else name
    if prefix and not any(ch in prefix for ch in "*?^=\\"):
        params.append(("name", prefix))  # FHIR name search is a case-insensitive prefix match too
    return params


def _resources(bundle: JsonObject, resource_type: str) -> list[JsonObject]:
    resources = [e.get("resource", {}) for e in bundle.get("entry", [])]
    return [r for r in resources if r.get("resourceType") == resource_type]


def patient_record(patient: JsonObject) -> Record:
    identifiers = patient.get("identifier", [])
    return {
        "PatientName": patient_pn(patient),
        "PatientID": str(identifiers[0].get("value", "")) if identifiers else "",
        "IssuerOfPatientID": "",
        "PatientBirthDate": str(patient.get("birthDate", "")).replace("-", ""),
        "PatientSex": {"male": "M", "female": "F", "other": "O"}.get(str(patient.get("gender", "")), ""),
    }


def patient_records(bundle: JsonObject) -> list[Record]:
    return [patient_record(p) for p in _resources(bundle, "Patient")]


def study_records(bundle: JsonObject) -> list[Record]:
    """ImagingStudy (+ included Patient) resources → STUDY-level records."""
    patients = {f"Patient/{p.get('id')}": p for p in _resources(bundle, "Patient")}
    out = []
    for study in _resources(bundle, "ImagingStudy"):
        uid = next(
            (
                i["value"]
                for i in study.get("identifier", [])
                if i.get("system") == DICOM_UID_SYSTEM and i.get("value")
            ),
            "",
        )
        if not uid:
            continue  # not a DICOM study: nothing C-MOVE could send
        accession = next(
            (
                i.get("value", "")
                for i in study.get("identifier", [])
                if any(c.get("code") == "ACSN" for c in i.get("type", {}).get("coding", []))
            ),
            "",
        )
        date, time = dicom_da_tm(str(study.get("started", "")))
        record = patient_record(patients.get(str(study.get("subject", {}).get("reference", "")), {}))
        record.update(
            {
                "StudyInstanceUID": uid.removeprefix("urn:oid:"),
                "StudyDate": date,
                "StudyTime": time,
                "AccessionNumber": accession,
                "StudyID": "",
                "StudyDescription": str(study.get("description", "")),
                "ReferringPhysicianName": str(study.get("referrer", {}).get("display", "")),
                "ModalitiesInStudy": "\\".join(m.get("code", "") for m in study.get("modality", [])),
                "NumberOfStudyRelatedSeries": str(study.get("numberOfSeries", "")),
                "NumberOfStudyRelatedInstances": str(study.get("numberOfInstances", "")),
            }
        )
        out.append(record)
    return out
