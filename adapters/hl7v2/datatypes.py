"""HL7 v2 data types → FHIR datatypes (JSON), after the v2-to-FHIR IG datatype maps.

Each function takes one raw repetition (components still joined) and the message `Encoding`, and returns
FHIR JSON or None when nothing usable is there. Pure: the configured time zone is passed in.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo

from adapters.hl7v2.parse import Encoding, component, components
from adapters.hl7v2.tables import lookup

JsonObject = dict[str, Any]

_DTM = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?:\.(?P<f>\d{1,4}))?(?P<tz>[+-]\d{4})?$"
)


class DataTypeError(ValueError):
    """A value does not follow its v2 data type (reported as ERR code 102 on the field)."""


def dtm(value: str, tz: ZoneInfo) -> str | None:
    """DTM/TS → FHIR dateTime, keeping precision; the configured zone applies when none is given.

    FHIR needs seconds once a time is present, so HHMM becomes HH:MM:00 (the IG does the same).
    """
    value = value.strip()
    if not value:
        return None
    m = _DTM.match(value)
    if not m:
        raise DataTypeError(f"'{value}' is not a DTM (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])")
    g = m.groupdict()
    try:
        dt.date(int(g["y"]), int(g["mo"] or 1), int(g["d"] or 1))
    except ValueError as exc:
        raise DataTypeError(f"'{value}' is not a calendar date") from exc
    out = g["y"]
    if g["mo"]:
        out += f"-{g['mo']}"
    if g["d"]:
        out += f"-{g['d']}"
    if not g["h"]:
        return out
    if int(g["h"]) > 23 or int(g["mi"] or 0) > 59 or int(g["s"] or 0) > 60:
        raise DataTypeError(f"'{value}' has an impossible time of day")
    out += f"T{g['h']}:{g['mi'] or '00'}:{g['s'] or '00'}"
    if g["f"]:
        out += f".{g['f']}"
    if g["tz"]:
        off = g["tz"]
        return out + f"{off[0]}{off[1:3]}:{off[3:5]}"
    local = dt.datetime(int(g["y"]), int(g["mo"]), int(g["d"]), int(g["h"]), int(g["mi"] or 0), tzinfo=tz)
    offset = local.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return out + f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def date(value: str) -> str | None:
    """DT/DTM → FHIR date (the date part only)."""
    value = value.strip()
    if not value:
        return None
    m = _DTM.match(value)
    if not m:
        raise DataTypeError(f"'{value}' is not a date")
    g = m.groupdict()
    out = g["y"]
    if g["mo"]:
        out += f"-{g['mo']}"
    if g["d"]:
        out += f"-{g['d']}"
    return out


def _c(parts: list[str], n: int) -> str:
    return parts[n - 1] if n <= len(parts) else ""


def cwe(rep: str, enc: Encoding, system_map: dict[str, str] | None = None) -> JsonObject | None:
    """CWE/CE/CNE → CodeableConcept (primary and alternate coding, text from original text or display)."""
    p = components(rep, enc)
    codings = []
    for code_i, text_i, sys_i in ((1, 2, 3), (4, 5, 6)):
        code = _c(p, code_i)
        if code:
            coding: JsonObject = {"code": code}
            system = coding_system(_c(p, sys_i), system_map)
            if system:
                coding["system"] = system
            if _c(p, text_i):
                coding["display"] = _c(p, text_i)
            codings.append(coding)
    out: JsonObject = {}
    if codings:
        out["coding"] = codings
    text = _c(p, 9) or _c(p, 2) or (_c(p, 5) if not codings else "")
    if text:
        out["text"] = text
    return out or None


_KNOWN_SYSTEMS = {
    "LN": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "UCUM": "http://unitsofmeasure.org",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cn",
    "ICD10CN": "http://hl7.org/fhir/sid/icd-10-cn",
}


def coding_system(name: str, system_map: dict[str, str] | None = None) -> str | None:
    """A v2 coding system name (CWE.3) → FHIR system URI; HL7 tables (HL7nnnn) and local names namespaced."""
    if not name:
        return None
    if system_map and name in system_map:
        return system_map[name]
    if name in _KNOWN_SYSTEMS:
        return _KNOWN_SYSTEMS[name]
    if re.fullmatch(r"HL7\d{4}", name):
        return f"http://terminology.hl7.org/CodeSystem/v2-{name[3:]}"
    return f"urn:yilian:codesystem:{re.sub(r'[^A-Za-z0-9._-]', '-', name)}"


def _ideographic(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text)


def hd(rep: str, enc: Encoding) -> str:
    """HD → its namespace id, else its universal id."""
    p = components(rep, enc)
    return _c(p, 1) or _c(p, 2)


def xpn(rep: str, enc: Encoding) -> JsonObject | None:
    """XPN → HumanName. Chinese: family name in XPN.1, given in XPN.2; `text` keeps the written order
    (family + given, no space, for ideographic names; 'Given Family' is never right for 张三).

    XPN.8 name representation code: I = ideographic (汉字), A = alphabetic (pinyin), P = phonetic.
    FHIR has no element for it; the IG's choice is the iso21090-EN-representation extension.
    """
    p = components(rep, enc)
    family, given, middle = _c(p, 1), _c(p, 2), _c(p, 3)
    if not (family or given):
        return None
    name: JsonObject = {}
    use = lookup("0200", _c(p, 7))
    if use:
        name["use"] = use
    if family:
        name["family"] = family
    givens = [g for g in (given, middle) if g]
    if givens:
        name["given"] = givens
    if _c(p, 5):
        name["suffix"] = [_c(p, 5)]
    if _c(p, 6):
        name["prefix"] = [_c(p, 6)]
    representation = _c(p, 8)
    ideographic = representation == "I" or _ideographic(family + given)
    name["text"] = (family + given) if ideographic else " ".join(x for x in (given, middle, family) if x)
    if representation in ("I", "A", "P"):
        name["extension"] = [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation",
                "valueCode": {"I": "IDE", "A": "ABC", "P": "SYL"}[representation],
            }
        ]
    return name


def cx(rep: str, enc: Encoding) -> tuple[str, str, str]:
    """CX → (id, assigning authority, identifier type code)."""
    p = components(rep, enc)
    return _c(p, 1), _c(p, 4) or component(rep, 4, enc, 2), _c(p, 5)


def ei(rep: str, enc: Encoding) -> tuple[str, str]:
    """EI → (entity identifier, namespace id or universal id)."""
    p = components(rep, enc)
    return _c(p, 1), _c(p, 2) or _c(p, 3)


def xad(rep: str, enc: Encoding) -> JsonObject | None:
    """XAD → Address. Chinese addresses go province → city → district → street; `text` keeps that order."""
    p = components(rep, enc)
    street, other, city, state, postal, country, kind = (_c(p, i) for i in (1, 2, 3, 4, 5, 6, 7))
    district = _c(p, 9) or _c(p, 8)
    if not any((street, other, city, state, postal, country, district)):
        return None
    addr: JsonObject = {}
    lines = [x for x in (street, other) if x]
    if lines:
        addr["line"] = lines
    if city:
        addr["city"] = city
    if district:
        addr["district"] = district
    if state:
        addr["state"] = state
    if postal:
        addr["postalCode"] = postal
    if country:
        addr["country"] = country
    use = lookup("0190-use", kind)
    if use:
        addr["use"] = use
    typ = lookup("0190-type", kind)
    if typ:
        addr["type"] = typ
    addr["text"] = "".join(x for x in (state, city, district, street, other) if x)
    return addr


def xtn(rep: str, enc: Encoding, default_use: str | None = None) -> JsonObject | None:
    """XTN → ContactPoint (XTN.1 or assembled XTN.5-8 for phones, XTN.4 for e-mail)."""
    p = components(rep, enc)
    equipment = _c(p, 3)
    email = _c(p, 4)
    if equipment == "Internet" or (email and not _c(p, 1)):
        if not email:
            return None
        return {"system": "email", "value": email}
    number = _c(p, 12) or _c(p, 1)
    if not number:
        parts = [_c(p, 5) and f"+{_c(p, 5)}", _c(p, 6), _c(p, 7)]
        number = " ".join(x for x in parts if x)
        if _c(p, 8):
            number += f" ext. {_c(p, 8)}"
    if not number:
        return None
    point: JsonObject = {"system": lookup("0202", equipment) or "phone", "value": number}
    use = lookup("0201", _c(p, 2)) or default_use
    if use:
        point["use"] = use
    return point


def xcn(rep: str, enc: Encoding) -> tuple[str, JsonObject | None, str]:
    """XCN → (id number, HumanName, assigning authority)."""
    p = components(rep, enc)
    family, given = _c(p, 2), _c(p, 3)
    name: JsonObject | None = None
    if family or given:
        name = {"text": family + given if _ideographic(family + given) else f"{given} {family}".strip()}
        if family:
            name["family"] = family
        if given:
            name["given"] = [given]
    return _c(p, 1), name, _c(p, 9) or component(rep, 9, enc, 2)


def xon(rep: str, enc: Encoding) -> tuple[str, str]:
    """XON → (organization name, identifier: XON.10 else XON.3)."""
    p = components(rep, enc)
    return _c(p, 1), _c(p, 10) or _c(p, 3)


def number(value: str) -> float | int:
    """NM → a JSON number (int when it has no fraction), keeping the sent precision as far as JSON can."""
    text = value.strip()
    try:
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        return float(text)
    except ValueError as exc:
        raise DataTypeError(f"'{value}' is not a number") from exc
