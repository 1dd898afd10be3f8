"""PID → Patient (v2-to-FHIR IG PID[Patient] map), with the consortium's identifier rules.

Identifiers: each PID-3 repetition becomes an Identifier whose system is the member's namespace for
patient numbers (`adapters.identity.patient_identifier_system` of CX.4, else of the sending facility),
so the DICOM edge and HL7 agree. A 居民身份证 number (CX.5 = NNCHN/RI/ID-card conventions, or CX.4 naming
the resident-ID authority, or PID-19 holding 18 characters) gets the national system and must pass the
GB 11643 check digit: a wrong number is rejected (AE naming the field) rather than linking two people.
The Patient is written by conditional update on the first member-local number (`key`).

Update semantics (v2): a field the message leaves empty changes nothing, a field sent as `""` deletes
the value. `translate` therefore says which Patient elements the PID deleted (`cleared`); the writer
sends a sparse update (`fhir_server/model/sparse_update.py`) that keeps what the PID does not carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from adapters.hl7v2 import datatypes as dtp
from adapters.hl7v2.parse import Segment
from adapters.hl7v2.tables import lookup
from adapters.hl7v2.transaction import TranslationError
from adapters.identity import CN_RESIDENT_ID_SYSTEM, RESIDENT_ID_ISSUERS, patient_identifier_system
from terminology import cn_resident_id

JsonObject = dict[str, Any]

RESIDENT_ID_TYPES = {"NNCHN", "RI", "ID", "SFZ", "CN"}
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@dataclass(frozen=True)
class PatientIdentity:
    """The Patient resource content plus the identifier it is written by."""

    resource: JsonObject
    system: str
    value: str
    cleared: tuple[str, ...] = ()  # Patient elements the PID deleted with `""`

    @property
    def key(self) -> str:
        return f"{self.system}|{self.value}"


def _resident(value: str, location: str) -> JsonObject:
    problem = cn_resident_id.problem(value)
    if problem:
        raise TranslationError(problem, location, "102")
    return {
        "use": "official",
        "type": {"coding": [{"system": _V2_0203, "code": "NNCHN"}], "text": "居民身份证"},
        "system": CN_RESIDENT_ID_SYSTEM,
        "value": cn_resident_id.normalise(value),
    }


def identifiers(pid: Segment, facility: str) -> tuple[list[JsonObject], tuple[str, str] | None]:
    """All identifiers, and the (system, value) the Patient is keyed by (first member-local number)."""
    out: list[JsonObject] = []
    key: tuple[str, str] | None = None
    resident_key: tuple[str, str] | None = None
    for field_no in (3, 2, 4):
        for i, rep in enumerate(pid.reps(field_no)):
            value, authority, id_type = dtp.cx(rep, pid.enc)
            if not value:
                continue
            location = f"PID-{field_no}" + (f"[{i + 1}]" if i else "")
            if id_type.upper() in RESIDENT_ID_TYPES or authority in RESIDENT_ID_ISSUERS:
                ident = _resident(value, location)
                resident_key = resident_key or (CN_RESIDENT_ID_SYSTEM, ident["value"])
            else:
                system = patient_identifier_system(authority or facility)
                ident = {"system": system, "value": value}
                if id_type:
                    ident["type"] = {"coding": [{"system": _V2_0203, "code": id_type}]}
                key = key or (system, value)
            if not any(o["system"] == ident["system"] and o["value"] == ident["value"] for o in out):
                out.append(ident)
    ssn = pid.get(19).strip()
    if ssn and len(ssn) == 18 and not any(o["system"] == CN_RESIDENT_ID_SYSTEM for o in out):
        ident = _resident(ssn, "PID-19")
        out.append(ident)
        resident_key = resident_key or (CN_RESIDENT_ID_SYSTEM, ident["value"])
    return out, key or resident_key


NULL = '""'
"""The v2 null: "delete the value this field had"."""
ELEMENT_FIELDS = (
    ("name", (5, 9)),
    ("birthDate", (7,)),
    ("gender", (8,)),
    ("address", (11,)),
    ("telecom", (13, 14, 40)),
    ("communication", (15,)),
    ("maritalStatus", (16,)),
    ("deceased", (29, 30)),
)
"""Which PID fields make each Patient element (the v2-to-FHIR PID[Patient] map)."""


def cleared_elements(pid: Segment, patient: JsonObject) -> tuple[str, ...]:
    """Elements whose fields the PID sent as `""` and that got no value from another of their fields."""
    return tuple(
        element
        for element, fields in ELEMENT_FIELDS
        if not any(k == element or k.startswith(element) for k in patient)
        and any(pid.raw(n) == NULL for n in fields)
    )


def _value(pid: Segment, n: int) -> str:
    """PID-n's first component, with the v2 null read as nothing (`cleared_elements` notes it)."""
    value = pid.get(n)
    return "" if value == NULL else value


def _reps(pid: Segment, n: int) -> list[str]:
    return [r for r in pid.reps(n) if r != NULL]


def translate(pid: Segment, facility: str, tz: ZoneInfo) -> PatientIdentity:
    """PID → Patient. Raises TranslationError naming the field for missing ids or malformed values."""
    idents, key = identifiers(pid, facility)
    if key is None:
        raise TranslationError("no patient identifier in PID-3", "PID-3", "101")
    patient: JsonObject = {"resourceType": "Patient", "identifier": idents, "active": True}
    names = [n for n in (dtp.xpn(r, pid.enc) for r in _reps(pid, 5)) if n]
    names += [{**n, "use": n.get("use", "usual")} for n in (dtp.xpn(r, pid.enc) for r in _reps(pid, 9)) if n]
    if names:
        patient["name"] = names
    gender = lookup("0001", _value(pid, 8))
    if gender:
        patient["gender"] = gender
    elif _value(pid, 8):
        raise TranslationError(f"administrative sex '{pid.get(8)}' not in table 0001", "PID-8", "103")
    birth = _value(pid, 7)
    if birth:
        try:
            patient["birthDate"] = dtp.date(birth)
            if len(birth.split("+")[0].split("-")[0]) > 8:
                patient["_birthDate"] = {
                    "extension": [
                        {
                            "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                            "valueDateTime": dtp.dtm(birth, tz),
                        }
                    ]
                }
        except dtp.DataTypeError as exc:
            raise TranslationError(str(exc), "PID-7", "102") from exc
    telecom = [t for t in (dtp.xtn(r, pid.enc, "home") for r in _reps(pid, 13)) if t]
    telecom += [t for t in (dtp.xtn(r, pid.enc, "work") for r in _reps(pid, 14)) if t]
    telecom += [t for t in (dtp.xtn(r, pid.enc) for r in _reps(pid, 40)) if t]
    if telecom:
        patient["telecom"] = telecom
    addresses = [a for a in (dtp.xad(r, pid.enc) for r in _reps(pid, 11)) if a]
    if addresses:
        patient["address"] = addresses
    marital = dtp.cwe(pid.raw(16).split(pid.enc.repetition)[0], pid.enc) if _reps(pid, 16) else None
    if marital:
        patient["maritalStatus"] = marital
    language = dtp.cwe(pid.raw(15), pid.enc) if _reps(pid, 15) else None
    if language:
        patient["communication"] = [{"language": language}]
    if _value(pid, 29):
        try:
            patient["deceasedDateTime"] = dtp.dtm(pid.get(29), tz)
        except dtp.DataTypeError as exc:
            raise TranslationError(str(exc), "PID-29", "102") from exc
    elif pid.get(30) in ("Y", "N"):
        patient["deceasedBoolean"] = pid.get(30) == "Y"
    return PatientIdentity(patient, key[0], key[1], cleared_elements(pid, patient))
