"""Remote-reading turnaround, pure: first instance received → final DiagnosticReport issued, per study.

The first-received time is the ImagingStudy extension `imaging-first-instance-received` the translator
writes (the hub's own clock at C-STORE/STOW time, not the modality's StudyDate); the end is the earliest
`issued` of a final/amended/corrected DiagnosticReport whose `imagingStudy` references the study. The
target comes from the ordering ServiceRequest (`basedOn`): priority stat/asap = emergency (30 min);
otherwise the encounter class: inpatient IMP/ACUTE/NONAC (120 min), else outpatient (60 min).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.dicom.translate import FIRST_RECEIVED_URL
from adapters.identity import DICOM_UID_SYSTEM

JsonObject = dict[str, Any]

TARGET_MINUTES = {"emergency": 30, "outpatient": 60, "inpatient": 120}
_FINAL = frozenset({"final", "amended", "corrected", "appended"})
_INPATIENT = frozenset({"IMP", "ACUTE", "NONAC"})


@dataclass(frozen=True)
class Turnaround:
    study_uid: str
    category: str
    received: str
    reported: str | None
    minutes: float | None
    target_minutes: int

    @property
    def met(self) -> bool | None:
        return None if self.minutes is None else self.minutes <= self.target_minutes


def category(service_request: JsonObject | None, encounter_class: str | None) -> str:
    if service_request and service_request.get("priority") in ("stat", "asap"):
        return "emergency"
    if encounter_class in _INPATIENT:
        return "inpatient"
    if encounter_class == "EMER":
        return "emergency"
    return "outpatient"


def turnaround(
    studies: Sequence[JsonObject],
    reports: Sequence[JsonObject],
    service_requests: Mapping[str, JsonObject] | None = None,
    encounter_classes: Mapping[str, str] | None = None,
) -> list[Turnaround]:
    """One row per ImagingStudy that records its first-received time (unreported ones have no minutes)."""
    service_requests = service_requests or {}
    encounter_classes = encounter_classes or {}
    issued: dict[str, str] = {}
    for report in reports:
        if report.get("status") not in _FINAL or not report.get("issued"):
            continue
        for ref in report.get("imagingStudy", []):
            key = str(ref.get("reference", "")).removeprefix("ImagingStudy/")
            if key and (key not in issued or _at(report["issued"]) < _at(issued[key])):
                issued[key] = report["issued"]
    rows = []
    for study in studies:
        received = next(
            (
                e.get("valueDateTime")
                for e in study.get("extension", [])
                if e.get("url") == FIRST_RECEIVED_URL
            ),
            None,
        )
        if not received:
            continue
        sr_ref = next((b.get("reference", "") for b in study.get("basedOn", [])), "")
        sr = service_requests.get(sr_ref.removeprefix("ServiceRequest/"))
        enc = (sr or {}).get("encounter", {}).get("reference", "") or study.get("encounter", {}).get(
            "reference", ""
        )
        cat = category(sr, encounter_classes.get(enc.removeprefix("Encounter/")))
        reported = issued.get(str(study.get("id", "")))
        minutes = (_at(reported) - _at(received)).total_seconds() / 60 if reported else None
        uid = next(
            (
                i["value"].removeprefix("urn:oid:")
                for i in study.get("identifier", [])
                if i.get("system") == DICOM_UID_SYSTEM
            ),
            str(study.get("id", "")),
        )
        rows.append(Turnaround(uid, cat, received, reported, minutes, TARGET_MINUTES[cat]))
    return rows


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
